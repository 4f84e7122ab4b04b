"""Results on disk: one JSON record per run, written atomically.

Layout of an output directory::

    <output>/runs/<run_id>.json        one record per run (ok, failed or diverged)
    <output>/artifacts/<run_id>/       files a run chose to keep (embeddings, plots…)
    <output>/stages/<key>.pt           cached outputs of multi-phase methods' stages
    <output>/leaderboard.csv           written by `fgvcbench leaderboard` / `run`
    <output>/replaced/<time>/          what `fgvcbench run --rerun` moved aside, in the same
                                       layout: runs/, artifacts/, stages/ (tables pass it over)

A record is written to a temporary file in the same directory, flushed and fsync'ed,
then renamed over its final name, so a reader (or a crash) never sees half a record.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

SCHEMA = 1
STATUSES = ("ok", "failed", "diverged")   # what a run's record says of it
FINISHED = ("ok", "diverged")   # a failed run is retried on the next `fgvcbench run`


def default_cache_dir() -> Path:
    """``$FGVCBENCH_CACHE`` (an empty value counts as unset), else ``~/.cache/fgvcbench``."""
    value = os.environ.get("FGVCBENCH_CACHE", "").strip()
    return Path(value or "~/.cache/fgvcbench").expanduser()


def env_data_root() -> str | None:
    """``$FGVCBENCH_DATA``, or None where it is unset or empty."""
    return os.environ.get("FGVCBENCH_DATA", "").strip() or None


def default_data_root() -> str:
    """``$FGVCBENCH_DATA`` (an empty value counts as unset), else ``./data``."""
    return env_data_root() or "./data"


# after how long a claim from another host is stale (a job killed by the scheduler cannot
# release it); FGVCBENCH_CLAIM_STALE_SECONDS overrides
CLAIM_STALE_SECONDS = 600


def claim_stale_seconds(default: float = CLAIM_STALE_SECONDS) -> float:
    """``$FGVCBENCH_CLAIM_STALE_SECONDS`` (after how long another host's claim is taken
    over), checked: a number > 0. The suite loader calls it, so a bad value stops the
    command before any run, not when a foreign claim first turns up."""
    from fgvcbench.errors import UserError
    raw = os.environ.get("FGVCBENCH_CLAIM_STALE_SECONDS")
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or not math.isfinite(value):   # 0 or less would take runs from live processes
        raise UserError(f"FGVCBENCH_CLAIM_STALE_SECONDS={raw!r} — use a number of seconds > 0 "
                        f"(default {default:.0f}), or unset it")
    return value


def atomic_write_text(path: Path, text: str, fault_point: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's host and pid are in the name, so a sweep can tell a dead writer's leftover
    # from another live process's file in progress
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_writer_tag()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if fault_point:
            from fgvcbench.faults import checkpoint
            checkpoint(fault_point)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _host_tag() -> str:
    import re
    import socket
    tag = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname()).strip("-") or "host"
    return f"h{tag}" if tag.isdigit() else tag   # all digits would read as a pid in a temporary name


def _writer_tag() -> str:
    return f"{_host_tag()}.{os.getpid()}"


def temp_suffix() -> str:
    """``.<host>.<pid>.tmp``: the writer of a temporary file, in its name. A sweep removes
    only what a dead process of *this* host left (:func:`sweep_dead_temporaries`): on a
    shared filesystem another node's pid says nothing here."""
    return f".{_writer_tag()}.tmp"


def _dead_writer(name: str, stale_seconds: float, mtime: float) -> bool:
    """Whether the temporary file ``name`` was left by a writer that is gone: its host is
    this one and its pid is not alive; another host's only once it is ``stale_seconds``
    old (no write takes that long) — so also a name from before hosts were written, whose
    last word before the pid reads as a host."""
    import re
    import time
    found = re.search(r"(?:\.(?P<host>[A-Za-z0-9_-]*[A-Za-z_-][A-Za-z0-9_-]*))?\.(?P<pid>\d+)\.(?:[A-Za-z0-9_]+\.)?tmp$",
                      name)
    if found is None:
        return False
    host = found.group("host")
    if host is not None and host != _host_tag():
        return time.time() - mtime > stale_seconds
    return not pid_alive(int(found.group("pid")))


def sweep_dead_temporaries(folder: Path, pattern: str = "*.tmp", stale_seconds: float | None = None) -> int:
    """Remove the temporary files under ``folder`` (``pattern``, recursive) that dead
    writers left (:func:`_dead_writer`): half-written records, stage results, image caches.
    Returns how many went."""
    if not folder.is_dir():
        return 0
    stale = claim_stale_seconds() if stale_seconds is None else stale_seconds
    removed = 0
    for tmp in folder.rglob(pattern):
        try:
            if tmp.is_file() and _dead_writer(tmp.name, stale, tmp.stat().st_mtime):
                tmp.unlink()
                removed += 1
        except OSError:   # gone meanwhile, or not ours to remove
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def locked_append(path: Path, text: str) -> None:
    """Append ``text`` to a file several processes share (claims log, submission ledger)
    under an exclusive ``flock``, so lines never interleave, also where O_APPEND alone is
    not atomic (network filesystems)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        try:
            import fcntl
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock here: O_APPEND of one short line still holds locally
            pass
        fh.write(text)
        fh.flush()


def check_writable(folder: Path, what: str = "results", option: str = "--output DIR") -> None:
    """``folder`` exists (or is created) and takes files — checked before any work starts,
    so nothing measured or trained is lost for want of a place to write it."""
    from fgvcbench.errors import UserError
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _probe_write(folder)
    except OSError as exc:
        raise UserError(f"cannot write {what} to {folder}: {exc.strerror or exc} — pass {option} with a "
                        f"writable folder") from None


def _probe_write(folder: Path) -> None:
    """Write and remove an empty file in ``folder``; OSError when it takes none."""
    probe = folder / f".write-test-{os.getpid()}"
    probe.write_text("")
    probe.unlink()


def check_results(output: Path, cache_dir: Path) -> None:
    """Where a suite writes, checked before anything trains (``run`` and ``ablate``): the
    results folder and each of its sub-folders that exists take files and can be read,
    none of them is a file, and the cache takes files."""
    from fgvcbench.errors import UserError
    check_writable(output)
    for sub in ("runs", "claims", "stages", "artifacts"):   # a run would train, then fail to save
        folder = output / sub
        _not_a_file(folder)
        if folder.is_dir():
            if not os.access(folder, os.R_OK | os.X_OK):   # its records would read as missing: all redone
                raise UserError(f"cannot read {folder} — fix its permissions (chmod u+rwx), then run again")
            try:
                _probe_write(folder)
            except OSError as exc:
                raise UserError(f"cannot write to {folder}: {exc.strerror or exc} — fix its permissions "
                                f"(chmod u+rwx), or pass --output DIR with another folder") from None
    check_writable(cache_dir, "the cache", "cache_dir: DIR in the suite, or FGVCBENCH_CACHE=DIR,")


def check_results_readable(output: Path) -> None:
    """What a dry run reads of a suite's results folder (it writes nothing): a folder, and
    its records' folder a folder, where they exist."""
    from fgvcbench.errors import UserError
    if output.exists() and not output.is_dir():
        raise UserError(f"cannot read results from {output}: it is a file — pass --output DIR with a folder (or "
                        f"fix the suite's output:)")
    _not_a_file(output / "runs")


def _not_a_file(folder: Path) -> None:
    """A UserError where a file stands at ``folder``, a sub-folder fgvcbench keeps."""
    from fgvcbench.errors import UserError
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file where fgvcbench keeps a folder — move it away, then run again")


def record_problem(record: Any) -> str | None:
    """Why ``record`` is not a usable run record, or None: the fields a leaderboard row
    indexes, and for a finished ``ok`` run its finite numeric ``metrics.top1``. A record with a
    problem is not finished (the run is redone) and no table reads it."""
    if not isinstance(record, dict):
        return f"not an object ({type(record).__name__})"
    if not isinstance(record.get("run_id"), str) or not record["run_id"]:
        return "no run_id"
    if not isinstance(record.get("status"), str):
        return "no status"
    if record["status"] not in STATUSES:
        return f"unknown status {record['status']!r} (a record's is one of {', '.join(STATUSES)})"
    schema = record.get("schema", SCHEMA)
    if not isinstance(schema, int) or isinstance(schema, bool):
        return f"schema {schema!r} is not an integer (this fgvcbench writes {SCHEMA})"
    if schema > SCHEMA:
        return f"schema {schema!r} is newer than this fgvcbench reads ({SCHEMA}): upgrade fgvcbench"
    spec = record.get("spec")
    if not isinstance(spec, dict):
        return "no spec"
    for part in ("dataset", "backbone"):
        if not isinstance(spec.get(part), dict) or not isinstance(spec[part].get("name"), str):
            return f"no spec.{part}.name"
    if not isinstance(spec.get("method"), str):
        return "no spec.method"
    for part in ("variant", "scale"):   # tables show and group by them
        if part in spec and not isinstance(spec[part], str):
            return f"spec.{part} is not a string"
    seed = spec.get("seed")   # tables pair runs by it
    if isinstance(seed, bool) or not isinstance(seed, int):
        return "spec.seed is not an integer"
    for section in ("metrics", "cost", "provenance"):
        if record.get(section) is not None and not isinstance(record[section], dict):
            return f"{section} is not an object"
    if record["status"] == "ok":
        top1 = (record.get("metrics") or {}).get("top1")
        try:   # an integer too large for a float (10**400) is no accuracy either
            finite = isinstance(top1, (int, float)) and not isinstance(top1, bool) and math.isfinite(top1)
        except OverflowError:
            finite = False
        if not finite:
            return "status ok without a finite numeric metrics.top1"
        if not 0 <= top1 <= 100:
            return f"metrics.top1 {top1!r} is not a percentage (0 to 100)"
    return None


def record_is_newer(record: Any) -> bool:
    """Whether ``record`` was written by a newer fgvcbench (its schema above ours): it may be
    a finished run this version cannot read, which a run must neither redo nor move aside."""
    schema = record.get("schema") if isinstance(record, dict) else None
    return isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA


def record_data(record: dict) -> dict | None:
    """A record's ``data`` (what it trained on: fingerprint, classes, images per split), or
    None for a record made before records kept it, or a malformed one."""
    data = record.get("data") if isinstance(record, dict) else None
    return data if isinstance(data, dict) and isinstance(data.get("fingerprint"), str) else None


def data_counts(data: dict) -> str:
    """``50 classes, 1,499 train / 1,390 test images``: a record's ``data`` as people read it."""
    images = data.get("images") if isinstance(data.get("images"), dict) else {}
    parts = [f"{images[k]:,} {k}" for k in ("train", "val", "test") if isinstance(images.get(k), int)]
    classes = data.get("classes")
    return (f"{classes} classes, " if isinstance(classes, int) else "") + " / ".join(parts) + " images"


# what `fgvcbench run --rerun` takes (its help, its errors)
RERUN_HELP = "all, diverged, failed, a method, method:variant or a run id (repeatable, or comma-separated)"
# what `fgvcbench run --only` takes
ONLY_HELP = ("a method, method:variant, a run id, dataset=NAME, backbone=NAME or seed=N (repeatable, or "
             "comma-separated; one kind any of, several kinds all of)")


@dataclass
class Replaced:
    """What ``Store.replace`` moved, and where."""
    folder: Path
    records: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    stages_by_method: list[str] = field(default_factory=list)   # methods whose stages all moved
    sharing: list[str] = field(default_factory=list)   # unchosen finished runs that used a moved stage


class Store:
    """The run records of one output directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"

    def record_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def artifact_dir(self, run_id: str) -> Path:
        return self.root / "artifacts" / run_id

    def stage_dir(self) -> Path:
        return self.root / "stages"

    def stage_uses(self, run_id: str) -> Path:
        """The stage files a run has used so far, one name a line, written as it goes: what
        ``replace`` reads for a run that never finished (no record to list them)."""
        return self.stage_dir() / "uses" / f"{run_id}.txt"

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The run's record, or None when there is none or it is not a JSON object. One that
        is there but cannot be read (permissions, an I/O error) is a UserError: redoing the
        run would move a finished record aside for a problem of the disk."""
        path = self.record_path(run_id)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError, RecursionError):   # none, or not JSON (or nested past the stack): redone
            return None
        except OSError as exc:
            from fgvcbench.errors import UserError
            raise UserError(f"cannot read the record {path} ({exc.strerror or exc}) — fix its permissions, "
                            f"or move it away to run {run_id} again") from None
        return record if isinstance(record, dict) else None

    @staticmethod
    def _keep_unusable(path: Path) -> None:
        """A record file that does not parse, or is not a usable record (a hand edit, a
        copy cut short), is moved aside to ``<id>.json.corrupt-<UTC time>`` before the run's
        new record takes its name: it may hold what someone wants back, and tables never
        read it (they read ``*.json``). Only the process holding the run's claim writes here."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            text = None
        try:
            record = json.loads(text) if text is not None else None
            usable = record_problem(record) is None and record.get("run_id") == path.stem
        except (ValueError, RecursionError):
            usable = False
        if not usable:
            from datetime import datetime, timezone
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            try:
                path.rename(path.with_name(f"{path.name}.corrupt-{stamp}"))
            except OSError:
                pass   # the new record replaces it; nothing else to do

    def finished(self, run_id: str) -> dict[str, Any] | None:
        """The run's record where it is usable (``record_problem``) and finished (ok or
        diverged); None for anything else — a hand-edited or truncated file —, which is run again."""
        record = self.get(run_id)
        if (record is not None and record_problem(record) is None and record.get("run_id") == run_id
                and record.get("status") in FINISHED):
            return record
        return None

    def is_finished(self, run_id: str) -> bool:
        return self.finished(run_id) is not None

    def write(self, record: dict[str, Any]) -> Path:
        path = self.record_path(record["run_id"])
        self._keep_unusable(path)
        atomic_write_text(path, json_text(record, indent=2, sort_keys=True), fault_point="record_write")
        if isinstance(record.get("stages"), list):   # the record lists them now
            self.stage_uses(record["run_id"]).unlink(missing_ok=True)
        return path

    def sweep_temporary(self) -> int:
        """Remove what processes that died mid-write left in the results folder: half-written
        records in ``runs/`` and stage results in ``stages/`` (:func:`sweep_dead_temporaries`:
        this host's dead pids; another host's after the claim-stale time). Returns how many."""
        return sweep_dead_temporaries(self.runs_dir, ".*.tmp") + sweep_dead_temporaries(self.stage_dir())

    def rerun_plan(self, runs: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
        """What ``replace`` would move for the chosen runs (``{run_id: method}``), moving
        nothing: (the cached stage files, the methods whose every stage moves because a chosen
        record predates stage lists, the unchosen finished runs that used one of those stages)."""
        records = {run_id: self.get(run_id) for run_id in runs}
        used: dict[str, list] = {}
        for run_id, record in records.items():
            if isinstance((record or {}).get("stages"), list):
                used[run_id] = record["stages"]
            elif self.stage_uses(run_id).is_file():   # a run that never finished
                used[run_id] = self.stage_uses(run_id).read_text(encoding="utf-8").split()
        by_method = sorted({runs[i] for i in runs if i not in used and records[i] is not None})
        names = {name for listed in used.values() for name in listed
                 # a file name this store wrote, never a path a hand-edited record points elsewhere
                 if isinstance(name, str) and Path(name).name == name}
        if by_method and self.stage_dir().is_dir():
            names |= {p.name for p in self.stage_dir().glob("*.pt")
                      if any(p.name.startswith((f"{m}_", f"{m}-")) for m in by_method)}
        stages = sorted(name for name in names if (self.stage_dir() / name).is_file())
        sharing = sorted(r["run_id"] for r in self.records() if r["run_id"] not in runs
                         and isinstance(r.get("stages"), list) and set(stages) & set(r["stages"]))
        return stages, by_method, sharing

    def replace(self, runs: dict[str, str], stamp: str) -> "Replaced":
        """Move the chosen runs (``{run_id: method}``) aside to ``replaced/<stamp>/``, so they
        are pending again and run from scratch, while nothing is deleted (move a file back to
        restore it). First the cached stages they used (``rerun_plan``: a record's list, or
        ``stage_uses`` for a run that never finished; a record older than stage lists names
        none, so every stage of its method moves — the built-in methods' stage names begin
        with the method's name), then per run its artifacts and its record — last, so a move
        cut short (Ctrl-C, a permission error) leaves the record in place and the same
        ``--rerun`` completes it. The folder mirrors the live layout (``runs/``,
        ``artifacts/``, ``stages/``), so restoring is moving files back; tables and reports
        of the results folder pass over ``replaced/`` (``fgvcbench leaderboard
        OUTPUT/replaced/<stamp>`` shows the old results). ``stamp`` must be a new folder."""
        folder = self.root / "replaced" / stamp
        folder.mkdir(parents=True, exist_ok=False)   # two reruns never share a folder
        stages, by_method, sharing = self.rerun_plan(runs)
        out = Replaced(folder, stages_by_method=by_method, sharing=sharing)
        for name in stages:
            (folder / "stages").mkdir(exist_ok=True)
            os.replace(self.stage_dir() / name, folder / "stages" / name)
            out.stages.append(name)
        for run_id in runs:
            if self.stage_uses(run_id).is_file():
                (folder / "stages").mkdir(exist_ok=True)
                os.replace(self.stage_uses(run_id), folder / "stages" / f"{run_id}.uses.txt")
            if not self.record_path(run_id).is_file():
                continue
            artifacts = self.artifact_dir(run_id)
            if artifacts.is_dir():
                (folder / "artifacts").mkdir(exist_ok=True)
                os.replace(artifacts, folder / "artifacts" / run_id)
            (folder / "runs").mkdir(exist_ok=True)
            os.replace(self.record_path(run_id), folder / "runs" / f"{run_id}.json")
            out.records.append(run_id)
        return out

    def records(self) -> Iterator[dict[str, Any]]:
        """The usable records (``record_problem``); unreadable or hand-broken files are
        passed over, as ``is_finished`` passes over them."""
        if not self.runs_dir.is_dir():
            return
        for path in sorted(self.runs_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                continue
            if record_problem(record) is None:
                yield record


def json_text(obj: Any, **kwargs: Any) -> str:
    """``obj`` as strict JSON (:func:`plain`: no NaN or Infinity tokens), for files and ``--json``."""
    return json.dumps(plain(obj), allow_nan=False, **kwargs)


def plain(obj: Any, depth: int = 0) -> Any:
    """``obj`` as JSON can hold it, whatever a plugin put in its notes or metrics: mappings
    with string keys, lists for tuples, sets, tensors and arrays of any size, numbers for
    their scalars, text for anything else (a path, an object, a structure nested too deep).
    A float that is not finite (a diverged loss: NaN, ±Infinity) is None, JSON's null: what
    Python writes for it otherwise is no JSON, and jq or a browser would refuse the file."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if depth > 50:
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain(v, depth + 1) for v in obj]
    if hasattr(obj, "tolist"):                      # numpy arrays and scalars, torch tensors
        try:
            return plain(obj.tolist(), depth + 1)
        except (TypeError, ValueError, RuntimeError):
            return str(obj)
    return str(obj)
