"""``executor: submitit`` — a suite's pending runs as one job array per set of cluster
settings, through submitit (SLURM, or submitit's local executor for tests and single
machines). Every job loads the suite itself, claims its run like any worker process
(see ``executors.Claims``) and writes its record into the shared results directory, so a
later ``fgvcbench run`` of the same suite submits only what is still missing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from fgvcbench.errors import UserError, first_line

DEFAULTS = {"backend": "auto", "time_min": 240, "gpus": 1, "cpus": 8, "mem_gb": 32, "array_parallelism": 64}


def run_one(load_args: dict, run_id: str) -> str:
    """The job body: run ``run_id`` of the suite through the local executor's claim loop
    (skipped when finished or claimed elsewhere); returns what happened to it."""
    import dataclasses

    from fgvcbench.executors import run_suite
    from fgvcbench.plugins import get_registry
    from fgvcbench.suite import load_suite
    registry = get_registry()
    suite = load_suite(registry=registry, **load_args)
    spec = next((s for s in suite.runs if s.run_id == run_id), None)
    if spec is None:
        return "not in the suite any more"
    outcome = run_suite(dataclasses.replace(suite, runs=[spec]), registry, show_progress=False)
    if outcome.ran:
        return outcome.ran[0]["status"]
    return "claimed by another process" if outcome.elsewhere else "already finished"


def require_submitit():
    """The submitit module, or a one-line UserError saying what to install."""
    try:
        import submitit
    except ImportError:
        raise UserError("executor: submitit needs the submitit package — pip install submitit") from None
    return submitit


BACKENDS = ("slurm", "local", "auto")
MAX_SETTING = 10**9   # minutes, GPUs, CPUs, GB: a larger value is a typo no scheduler takes


def _executor(settings: dict, folder: Path):
    submitit = require_submitit()
    backend = settings.get("backend", "auto")
    cluster = None if backend == "auto" else ("local" if backend == "local" else "slurm")
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except RuntimeError as exc:   # e.g. backend slurm where there is no srun: submitit says so
        raise UserError(f"submitit cannot use backend {backend!r} here: {first_line(exc)} — use backend=local "
                        f"to run on this machine, or submit from a SLURM login node") from None
    params: dict[str, Any] = {"timeout_min": settings["time_min"], "gpus_per_node": settings["gpus"],
                              "cpus_per_task": settings["cpus"], "mem_gb": settings["mem_gb"],
                              "name": "fgvcbench"}
    if executor.cluster == "slurm":
        params["slurm_array_parallelism"] = settings["array_parallelism"]
        for key in ("partition", "account", "qos", "constraint"):
            if settings.get(key):
                params[f"slurm_{key}"] = settings[key]
    executor.update_parameters(**params)
    return executor


def submit_suite(suite, load_args: dict, cli_settings: dict | None = None, wait: bool = False,
                 console=None) -> list[dict]:
    """Submit every pending, unclaimed run; group runs by their settings (the suite's,
    their methods entry's ``cluster:``, then ``--cluster``; one array each). Returns one dict per submitted run: run id, job id, settings. With
    ``wait`` it blocks until the jobs end."""
    from fgvcbench.executors import Claims, pending_runs
    from fgvcbench.store import Store
    store, claims = Store(suite.output), Claims(suite.output)
    todo = [s for s in pending_runs(suite, store) if not claims.held(s.run_id)]
    groups: dict[str, tuple[dict, list]] = {}
    for spec in todo:
        settings = {**DEFAULTS, **suite.cluster, **suite.run_cluster.get(spec.run_id, {}), **(cli_settings or {})}
        key = json.dumps(settings, sort_keys=True)
        groups.setdefault(key, (settings, []))[1].append(spec)
    folder = Path(suite.output) / "submitit"
    submitted, jobs = [], []
    for settings, specs in groups.values():
        executor = _executor(settings, Path(settings.get("folder") or folder))
        array = executor.map_array(run_one, [load_args] * len(specs), [s.run_id for s in specs])
        for spec, job in zip(specs, array):
            submitted.append({"run_id": spec.run_id, "job_id": str(job.job_id), "label": spec.label,
                              "backend": executor.cluster, "submitted": time.time()})
            jobs.append(job)
        if console is not None:
            console.print(f"submitted {len(specs)} runs as a {executor.cluster} job array "
                          f"({array[0].job_id.split('_')[0] if array else '-'}): "
                          f"{', '.join(f'{k}={v}' for k, v in sorted(settings.items()))}", highlight=False, markup=False)
    if submitted:
        from fgvcbench.store import locked_append
        locked_append(folder / "submitted.jsonl", "".join(json.dumps(row) + "\n" for row in submitted))
    if wait:
        for job in jobs:
            try:
                job.result()
            except Exception as exc:  # noqa: BLE001 — a job that died is reported, its run stays pending
                if console is not None:
                    console.print(f"[red]job {job.job_id} ended abnormally:[/] {escape(first_line(exc, 200))}",
                                  highlight=False)
    return submitted


def parse_cli_settings(items: list[str]) -> dict:
    """``--cluster KEY=VALUE`` options, typed as the suite's ``cluster:`` keys."""
    from fgvcbench.suite import CLUSTER_KEYS
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in CLUSTER_KEYS:
            raise UserError(f"--cluster {item!r}: use KEY=VALUE with KEY one of {', '.join(sorted(CLUSTER_KEYS))}")
        if CLUSTER_KEYS[key] is int:
            try:
                out[key] = int(value)
            except ValueError:
                raise UserError(f"--cluster {item!r}: {key} must be an integer") from None
            if not 0 <= out[key] <= MAX_SETTING:   # as a suite's cluster: refuses them
                raise UserError(f"--cluster {item!r}: {key} must be an integer from 0 to {MAX_SETTING:,}")
        elif key == "backend" and value not in BACKENDS:
            raise UserError(f"--cluster {item!r}: unknown backend — use {', '.join(BACKENDS)}")
        else:
            out[key] = value
    return out
