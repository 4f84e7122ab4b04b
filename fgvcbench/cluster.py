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
    suite = load_suite(registry=registry, **load_args, check_weights=False)   # checked where it was submitted
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


# a job in one of these states will still run (or is running): its run is not submitted again
ALIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"}
YOUNG_SECONDS = 600   # sacct may not know a job for a while after sbatch: an UNKNOWN one that young counts as queued


SACCT_TIMEOUT = 60   # a sacct that hangs (slurmdbd down) must not hang the submission


def slurm_states(job_ids: list[str], warn=None) -> dict[str, str]:
    """job id → SLURM state (``PENDING``, ``RUNNING``, ``COMPLETED``…; ``UNKNOWN`` where
    sacct does not say), from one sacct call (at most ``SACCT_TIMEOUT`` seconds), read by
    submitit's parser. Where sacct is missing, fails or hangs, every state is UNKNOWN and
    ``warn`` gets one line that says so."""
    import subprocess
    if not job_ids:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher
    command = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
    for main_id in sorted({j.split("_")[0] for j in job_ids}):   # an array's main id brings all its tasks
        command += ["-j", main_id]
    try:
        out = subprocess.run(command, capture_output=True, timeout=SACCT_TIMEOUT, check=True).stdout
        info = SlurmInfoWatcher().read_info(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        if warn is not None:
            if isinstance(exc, FileNotFoundError):
                why = "sacct is not installed here"
            elif isinstance(exc, subprocess.TimeoutExpired):
                why = f"sacct gave no answer in {SACCT_TIMEOUT} s"
            elif isinstance(exc, subprocess.CalledProcessError):
                said = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
                why = f"sacct failed (exit {exc.returncode}){': ' + said[0][:160] if said else ''}"
            else:
                why = f"sacct: {first_line(exc, 160)}"
            warn(f"{why} — a job submitted in the last {YOUNG_SECONDS // 60} minutes counts as still queued, "
                 "an older one as gone (its run is submitted again)")
        info = {}
    return {job_id: str(info.get(job_id, {}).get("State") or "UNKNOWN").split()[0].upper()  # "CANCELLED by 42"
            for job_id in job_ids}


def local_alive(row: dict) -> bool:
    """A local job (its job id is its process's pid) whose process is alive and has left
    no result yet."""
    import os
    submitit = require_submitit()
    job_id = str(row.get("job_id", ""))
    if not job_id.isdigit():
        return False
    job = submitit.local.local.LocalJob(folder=Path(row.get("folder") or "."), job_id=job_id)
    if job.paths.result_pickle.exists():
        return False
    try:
        os.kill(int(job_id), 0)
    except (ProcessLookupError, PermissionError):   # gone, or the pid is another user's process now
        return False
    started = _process_start(int(job_id))
    submitted = row.get("submitted")
    if started is not None and isinstance(submitted, (int, float)) and started > submitted + 60:
        return False   # the pid was given to a process that started after the job (a reboot, a reuse)
    return True


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None elsewhere."""
    import os
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def queued_runs(folder: Path, warn=None) -> dict[str, str]:
    """run id → job id of every run whose latest submission (``folder/submitted.jsonl``)
    is a job still queued or running: SLURM's state through sacct (one still unknown to it
    counts for ``YOUNG_SECONDS`` after its submission), a local job's process. Such a job
    has not claimed its run yet, and submitting the run again would train it twice."""
    latest: dict[str, dict] = {}
    try:
        lines = (folder / "submitted.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):   # a line cut by a kill: the rows around it still count
            continue
        if isinstance(row, dict) and isinstance(row.get("run_id"), str):
            latest[row["run_id"]] = {"folder": str(folder), **row}
    slurm = [str(r.get("job_id")) for r in latest.values() if r.get("backend") == "slurm"]
    states = slurm_states(slurm, warn) if slurm else {}
    now = time.time()

    def alive(row: dict) -> bool:
        if row.get("backend") == "local":
            return local_alive(row)
        if row.get("backend") == "slurm":
            state = states.get(str(row.get("job_id")), "UNKNOWN")
            young = isinstance(row.get("submitted"), (int, float)) and now - row["submitted"] < YOUNG_SECONDS
            return state in ALIVE_STATES or (state == "UNKNOWN" and young)
        return False
    return {run_id: str(row.get("job_id")) for run_id, row in latest.items() if alive(row)}


def submit_suite(suite, load_args: dict, cli_settings: dict | None = None, wait: bool = False,
                 console=None) -> list[dict]:
    """Submit every pending run that no process has claimed and no earlier submission of
    which is still queued or running (:func:`queued_runs`); group runs by their settings
    (the suite's, their methods entry's ``cluster:``, then ``--cluster``; one array each).
    Returns one dict per submitted run: run id, job id, settings. With ``wait`` it blocks
    until the jobs end."""
    from fgvcbench.executors import Claims, pending_runs
    from fgvcbench.store import Store
    store, claims = Store(suite.output), Claims(suite.output)
    folder = Path(suite.output) / "submitit"
    todo = [s for s in pending_runs(suite, store) if not claims.held(s.run_id)]
    warn = None if console is None else (
        lambda line: console.print(f"warning: {line}", highlight=False, markup=False))
    queued = queued_runs(folder, warn) if todo else {}
    if queued and console is not None and any(s.run_id in queued for s in todo):
        waiting = [s for s in todo if s.run_id in queued]
        console.print(f"{len(waiting)} pending run{'s are' if len(waiting) != 1 else ' is'} still queued or running "
                      f"as job{'s' if len(waiting) != 1 else ''} {', '.join(sorted({queued[s.run_id] for s in waiting}))}: "
                      "not submitted again (cancel a job, e.g. scancel, to have its run submitted anew)",
                      highlight=False, markup=False)
    todo = [s for s in todo if s.run_id not in queued]
    groups: dict[str, tuple[dict, list]] = {}
    for spec in todo:
        settings = {**DEFAULTS, **suite.cluster, **suite.run_cluster.get(spec.run_id, {}), **(cli_settings or {})}
        key = json.dumps(settings, sort_keys=True)
        groups.setdefault(key, (settings, []))[1].append(spec)
    submitted, jobs = [], []
    for settings, specs in groups.values():
        logs = Path(settings.get("folder") or folder)
        executor = _executor(settings, logs)
        array = executor.map_array(run_one, [load_args] * len(specs), [s.run_id for s in specs])
        for spec, job in zip(specs, array):
            submitted.append({"run_id": spec.run_id, "job_id": str(job.job_id), "label": spec.label,
                              "backend": executor.cluster, "submitted": time.time(), "folder": str(logs)})
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
