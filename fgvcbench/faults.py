"""Fault injection for the fault-tolerance tests: ``FGVCBENCH_FAULT=POINT:N`` makes the
process SIGKILL itself the N-th time it reaches POINT — ``record_write`` (a record's
temporary file is written and synced, not yet renamed), ``stage`` (a multi-phase
method's stage result is saved, the next phase not started), ``step`` (an optimizer
step inside an epoch is done) or ``epoch`` (an epoch ended). Unset (always, outside tests) it costs one dictionary lookup."""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def checkpoint(point: str) -> None:
    spec = os.environ.get("FGVCBENCH_FAULT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
