"""The ``fgvcbench`` command line. Thin: parse, call the library, print with rich.

Exit codes: 0 success · 1 some runs failed or diverged · 2 bad input (one line, no
traceback) · 130 interrupted (finished runs are kept; run again to resume).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from fgvcbench import __version__
from fgvcbench._cli_output import (checked_options, console, err_console, guard_stdout, inert_step, nonempty_path,
                                  print_ablation_tables, print_baseline_table, print_description, print_leaderboard,
                                  quiet_rank, suite_records, warmup_fills_run, warn_plugins)
from fgvcbench.errors import UserError
from fgvcbench.spec import canonical_json, dataset_label
from fgvcbench.store import (ONLY_HELP, RERUN_HELP, default_cache_dir, default_data_root, env_data_root,
                             json_text)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="fgvcbench — benchmark suite for fine-grained visual classification.")


def friendly(fn: Callable) -> Callable:
    """Turn a UserError into one red line on stderr and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            if not quiet_rank():   # under torchrun: once per node, not once per process
                err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper


def _version(value: bool) -> None:
    if value:
        console.print(f"fgvcbench {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")) -> None:
    """fgvcbench — benchmark suite for fine-grained visual classification."""


def _parse_seeds(value: Optional[str]) -> Optional[list[int]]:
    if value is None:
        return None
    from fgvcbench.suite import MAX_SEED, MAX_SEED_COUNT, first_repeat
    try:
        if "," in value:
            pieces = value.split(",")
            if pieces[-1].strip() == "":   # "4," is one seed, as the README says
                pieces = pieces[:-1]
            if any(not p.strip() for p in pieces):   # 0,,1: a seed left out by mistake?
                raise UserError(f"--seeds {value!r} has an empty item between commas — list the seeds, e.g. 0,1,2")
            seeds = [int(s) for s in pieces]
        else:
            count = int(value)
            if count > MAX_SEED_COUNT:
                raise UserError(f"--seeds {value}: at most {MAX_SEED_COUNT:,} seeds — give a count (3) or a list "
                                f"(0,1,2)")
            seeds = list(range(count))
    except ValueError:
        raise UserError(f"--seeds {value!r} is not a count (3) or a list (0,1,2)") from None
    if not seeds or min(seeds) < 0 or max(seeds) > MAX_SEED:
        raise UserError(f"--seeds {value!r} gives no valid seed — use a count >= 1 or seeds from 0 to {MAX_SEED}")
    repeat = first_repeat(seeds)   # 0,1,1 is more likely a typo for 0,1,2 than a wish to run seed 1 once
    if repeat is not None:
        raise UserError(f"--seeds {value!r}: seed {seeds[repeat]} is listed twice — list each seed once")
    return seeds


def _gpu_indices(gpus: str) -> Optional[list[int]]:
    """``--gpus``: None for ``all``, else the indices; a UserError unless one of those."""
    if gpus.strip() == "all":
        return None
    try:
        indices = [int(x) for x in gpus.split(",")]   # an empty item ("0,,1") is an error too
    except ValueError:
        indices = []
    if not indices or any(i < 0 for i in indices):
        raise UserError(f"--gpus {gpus!r}: use all or GPU indices such as 0,1")
    from fgvcbench.suite import first_repeat
    repeat = first_repeat(indices)
    if repeat is not None:   # one worker per GPU: a repeat is a typo, not a second worker
        raise UserError(f"--gpus {gpus!r}: GPU {indices[repeat]} is listed twice — list each GPU once")
    return indices


MAX_WORKERS = 256   # processes on one machine; each holds a model and a copy of its data


def _worker_devices(gpus: Optional[str], workers: Optional[int], suite_device: str) -> list[str]:
    """The device of each worker process for --gpus / --workers (their count and their
    combination are checked by ``run`` before anything starts), or [] for one process."""
    if workers is not None:
        return [suite_device] * workers if workers > 1 else []
    if gpus is None:
        return []
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UserError("--gpus: no CUDA GPU is visible here — drop --gpus, or use --workers N for CPU processes")
    indices = _gpu_indices(gpus)
    if indices is None:
        indices = list(range(count))
    else:
        bad = [i for i in indices if not 0 <= i < count]
        if not indices or bad:
            raise UserError(f"--gpus {gpus!r}: this machine has GPUs 0…{count - 1}")
    return [f"cuda:{i}" for i in indices]


@app.command()
@friendly
def run(suite_file: str = typer.Argument(..., help="Suite YAML, e.g. suites/quickstart.yaml.", metavar="SUITE_FILE",
                                         callback=nonempty_path),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the expanded grid and what is done; run nothing."),
        scale: Optional[str] = typer.Option(None, help="Override the suite's scale: smoke, short or paper."),
        seeds: Optional[str] = typer.Option(None, help="Seeds: a count (3 → 0,1,2) or a list (0,4)."),
        device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N or mps."),
        output: Optional[str] = typer.Option(None, help="Output directory (default: the suite's output).",
                                             metavar="DIR", callback=nonempty_path),
        data_root: Optional[str] = typer.Option(None, "--data-root", metavar="DIR", callback=nonempty_path,
                                                help="Folder holding the datasets (overrides the suite's data_root)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
        gpus: Optional[str] = typer.Option(None, "--gpus", help="One worker process per GPU: all, or indices 0,1,…"),
        workers: Optional[int] = typer.Option(None, "--workers",
                                              help="N worker processes on the suite's device (e.g. CPU)."),
        executor: Optional[str] = typer.Option(None, "--executor", help="local (default) or submitit (job array)."),
        cluster: Optional[List[str]] = typer.Option(None, "--cluster", metavar="KEY=VALUE",
                                                    help="submitit setting KEY=VALUE (partition, time_min, gpus, "
                                                         "cpus, mem_gb, backend …); repeatable."),
        wait: bool = typer.Option(False, "--wait", help="With submitit: wait for the jobs, then print the table."),
        rerun: Optional[List[str]] = typer.Option(
            None, "--rerun", metavar="WHICH", help="Run these again from scratch, finished or not: " + RERUN_HELP + ". Their "
                                  "records, artifacts and cached stages move to OUTPUT/replaced/, nothing is "
                                  "deleted."),
        only: Optional[List[str]] = typer.Option(
            None, "--only", metavar="WHICH", help="Run only part of the grid: " + ONLY_HELP + ". The tables still cover every "
                                 "finished run of the suite.")) -> None:
    """Run every pending run of a suite (finished runs are resumed from the store)."""
    from fgvcbench.executors import (check_data_versions, grid_status, pending_runs, run_suite, run_suite_workers,
                                     select_reruns)
    from fgvcbench.run import resolve_device
    from fgvcbench.plugins import get_registry
    from fgvcbench.store import Store, check_results, check_results_readable
    from fgvcbench.suite import EXECUTORS, load_suite

    from fgvcbench import distributed
    registry = get_registry()
    warn_plugins(registry)
    suite = load_suite(suite_file, registry, scale=scale, seeds=_parse_seeds(seeds), output=output, device=device,
                       data_root=data_root, check_data=not dry_run and only is None)   # --only: its runs' data
    chosen = suite.executor if executor is None else executor   # --executor '' is a mistake, not the default
    if chosen not in EXECUTORS:
        raise UserError(f"--executor {chosen!r}: use {' or '.join(EXECUTORS)}")
    if workers is not None and not 1 <= workers <= MAX_WORKERS:   # what a real run would refuse, a dry run too
        raise UserError(f"--workers {workers}: use a count from 1 to {MAX_WORKERS} (more than the pending runs "
                        f"start no more processes)")
    if gpus is not None and workers is not None:
        raise UserError("--gpus and --workers exclude each other — --gpus starts one worker per GPU")
    if chosen == "submitit" and (gpus is not None or workers is not None):
        raise UserError("--gpus/--workers run here; with submitit set the GPUs per job: --cluster gpus=N")
    if cluster:   # checked by a dry run too, and before --rerun moves anything
        if chosen != "submitit":
            raise UserError("--cluster sets the resources of submitit jobs — add --executor submitit (or "
                            "executor: submitit in the suite), or drop --cluster")
        from fgvcbench.cluster import parse_cli_settings
        parse_cli_settings(cluster)
    if gpus is not None:
        _gpu_indices(gpus)
    if not dry_run:   # the results and the cache take files, before any run starts
        check_results(Path(suite.output), Path(suite.cache_dir))
    else:
        check_results_readable(Path(suite.output))
    if not dry_run and distributed.init_from_env(suite.device):  # launched by torchrun
        if gpus is not None or workers is not None or chosen != "local":
            raise UserError("under torchrun every rank runs the suite together — drop --gpus/--workers/--executor")
        # world size × batch size is the global batch: these are other runs than one process's
        suite.runs = [dataclasses.replace(spec, world_size=distributed.world_size()) for spec in suite.runs]
        _apply_only(suite, only, check_data=True)
        reruns = select_reruns(suite, rerun) if rerun is not None else []   # every rank checks: all exit 2 together
        if distributed.is_main():
            _print_notes(suite)
        check_data_versions(suite, registry, {spec.run_id for spec in reruns})
        if rerun is not None:
            failure = None
            if distributed.is_main():
                try:
                    _rerun(suite, {spec.run_id for spec in reruns})
                except UserError as exc:
                    failure = str(exc)
            failure = distributed.broadcast(failure)   # a failed move stops every rank, none waits for it
            if failure:
                raise UserError(failure)
        outcome = run_suite(suite, registry, console=console, show_progress=False)
        if distributed.is_main():
            console.print(f"{len(outcome.ran)} ran on {distributed.world_size()} processes, {outcome.skipped} "
                          f"resumed, {len(outcome.failed)} failed or diverged — records in {suite.output}/runs",
                          highlight=False, markup=False)
            _suite_tables(suite)
        distributed.barrier()
        if outcome.failed:
            raise typer.Exit(1)
        return
    _apply_only(suite, only, check_data=not dry_run)
    reruns = {spec.run_id for spec in select_reruns(suite, rerun)} if rerun is not None else set()
    _print_notes(suite)
    if dry_run:
        rows = [(spec, "rerun" if spec.run_id in reruns and status not in ("pending", "running") else status)
                for spec, status in grid_status(suite)]
        table = Table(title=escape(f"suite {suite.name} · scale {suite.scale} · {len(rows)} runs → {suite.output}"))
        for col in ("run id", "dataset", "backbone", "method", "variant", "seed", "epochs", "px", "status"):
            table.add_column(col)
        for spec, status in rows:
            style = {"ok": "green", "failed": "red", "diverged": "red", "pending": "yellow", "rerun": "magenta",
                     "running": "cyan"}[status]
            table.add_row(spec.run_id, escape(dataset_label(spec.dataset)), escape(spec.backbone["name"]
                          + (" (pretrained)" if spec.backbone["pretrained"] else "")), spec.method, escape(spec.variant),
                          str(spec.seed), str(spec.recipe["epochs"]), str(spec.recipe["image_size"]),
                          f"[{style}]{status}[/]")
        console.print(table)
        done = sum(s in ("ok", "diverged") for _, s in rows)
        again = sum(s == "rerun" for _, s in rows)
        running = sum(s == "running" for _, s in rows)
        console.print(f"{len(rows)} run{'s' if len(rows) != 1 else ''}: {done} already done, {len(rows) - done} to run"
                      + (f" ({again} again: --rerun)" if again else "")
                      + (f", of which {running} running in another process now (a run here leaves "
                         f"{'it' if running == 1 else 'them'} to it)" if running else "") + ".", highlight=False)
        if reruns:   # what the rerun would leave behind: unchosen runs that share a stage with it
            from fgvcbench.executors import sharing_note
            chosen_specs = [spec for spec in suite.runs if spec.run_id in reruns]
            sharing = Store(suite.output).rerun_plan({spec.run_id: spec.method for spec in chosen_specs})[2]
            if sharing:
                err_console.print(f"[yellow]note:[/] {escape(sharing_note(suite, chosen_specs, sharing))}", highlight=False)
        if chosen != "submitit":
            try:   # a preview may be made away from the GPU machine too: say, do not fail
                resolve_device(suite.device)
                _worker_devices(gpus, workers, suite.device)   # --gpus: the GPUs it names are here
            except UserError as exc:
                err_console.print(f"[yellow]note:[/] a real run here would stop: {escape(str(exc))}", highlight=False)
        try:   # finished runs made on data the folder no longer holds: a real run refuses to resume them
            check_data_versions(suite, registry, reruns, preview=True)
        except UserError as exc:
            err_console.print(f"[yellow]note:[/] a real run here would stop: {escape(str(exc))}", highlight=False)
        used = {canonical_json(spec.dataset) for spec in suite.runs}   # what --only keeps
        for dataset, root in suite.datasets:  # a preview may be made away from the data: say, do not fail
            error = suite.root_errors.get(canonical_json(dataset))
            if canonical_json(dataset) in used and error is not None:
                err_console.print(f"[yellow]note:[/] a real run here would stop: {escape(str(error))}", highlight=False)
        return
    # how a worker process or a cluster job loads the same suite (a Suite does not pickle)
    load_args = {"path": str(Path(suite_file).resolve()), "scale": scale, "seeds": suite.seeds,
                 "output": str(Path(suite.output).resolve()), "data_root": data_root and str(Path(data_root).resolve()),
                 # with --only, the data of the kept runs was checked here; others may be absent
                 "check_data": only is None}
    # every option is checked before --rerun moves anything: a refused command leaves the store as it was
    check_data_versions(suite, registry, reruns)
    again = " without --rerun" if rerun is not None else ""   # repeating --rerun would redo what just finished
    if chosen == "submitit":
        from fgvcbench.cluster import parse_cli_settings, require_submitit, submit_suite
        settings = parse_cli_settings(cluster or [])
        require_submitit()
        replaced = _rerun(suite, reruns) if rerun is not None else None
        submitted = submit_suite(suite, load_args, settings, wait=wait, console=console)
        if not submitted:
            console.print("nothing to submit: every run is finished, running or queued", highlight=False)
        if wait and any(Store(suite.output).records()):
            _suite_tables(suite)
        elif submitted:
            console.print(f"{len(submitted)} runs submitted; `fgvcbench leaderboard {suite.output}` shows what has "
                          f"finished, and the same command{again} submits only what is still missing",
                          highlight=False, markup=False)
        return
    devices = _worker_devices(gpus, workers, suite.device)
    if gpus is None:
        resolve_device(suite.device)   # a device this machine lacks is refused now, not after --rerun moved runs
    replaced = _rerun(suite, reruns) if rerun is not None else None
    # a first line at once, for an output that is not a terminal (no progress bar there)
    total = len(suite.runs)
    done = total - len(pending_runs(suite, Store(suite.output)))
    console.print(f"suite {suite.name} · scale {suite.scale} · {total} run{'s' if total != 1 else ''}: {done} finished, "
                  f"{total - done} to run → {suite.output}", highlight=False, markup=False)
    if devices:
        outcome = run_suite_workers(suite, devices, load_args, console=console)
    else:
        outcome = run_suite(suite, registry, console=console, show_progress=progress)
    for w in outcome.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False)
    if any(Store(suite.output).records()):
        _suite_tables(suite)
    if outcome.interrupted:
        n = len(outcome.ran)
        interrupted(f"{n} run{'s' if n != 1 else ''} finished in this session {'are' if n != 1 else 'is'} saved in "
                    f"{suite.output}; run the same command{again} to resume.")
    n_failed = len(outcome.failed)
    elsewhere = f", {outcome.elsewhere} running in another process" if outcome.elsewhere else ""
    console.print(f"{len(outcome.ran)} ran, {outcome.skipped} resumed{elsewhere}, {n_failed} failed or diverged "
                  f"— records in {suite.output}/runs", highlight=False, markup=False)
    if n_failed:
        # one line per reason: a dataset every run fails on (a bad view option) is said once, with its runs
        groups: dict[tuple, list[str]] = {}
        for record in outcome.failed:
            first = (record.get("error") or "").splitlines()[0] if record.get("error") else ""
            groups.setdefault((record["status"], first), []).append(record["run_id"])
        for (status, first), ids in groups.items():
            which = ids[0] if len(ids) == 1 else \
                f"{len(ids)} runs ({', '.join(ids[:3])}{', …' if len(ids) > 3 else ''})"
            err_console.print(f"[red]{status}[/] {which}: {escape(first)}", highlight=False)
            for run_id in ids:
                if replaced is not None and run_id in replaced.records:
                    err_console.print(f"  {run_id}'s previous record: {replaced.folder / 'runs' / (run_id + '.json')} "
                                      f"(move it back to runs/ to restore it)", highlight=False, markup=False)
        raise typer.Exit(1)


def _apply_only(suite, only: Optional[List[str]], check_data: bool) -> None:
    """``--only``: narrow ``suite.runs`` to what it keeps (``suite.grid`` keeps the whole
    grid, which the tables cover), then, with ``check_data``, check the data roots of the
    kept runs only (the suite was loaded without checking them)."""
    from fgvcbench.executors import select_only
    if only is None:
        return
    suite.runs, suite.grid = select_only(suite, only), suite.runs
    if check_data:
        suite.check_roots()


def _print_notes(suite) -> None:
    """The suite's notes about the runs this command runs (``--only`` keeps its own)."""
    kept = {spec.run_id for spec in suite.runs}
    for note, ids in suite.notes:
        if ids & kept:
            err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def _suite_tables(suite) -> None:
    """What ``run`` prints at the end: the leaderboard of its output folder, and the suite's
    own ablation and baseline tables — over the whole grid, whatever ``--only`` ran."""
    if suite.grid is not None:
        suite = dataclasses.replace(suite, runs=suite.grid)
    print_leaderboard([suite.output], fmt="table", write_csv=True, skip_hint="",
                      grid_ids={spec.run_id for spec in suite.runs})
    records = suite_records(suite) if suite.ablation is not None or suite.baseline is not None else []
    if suite.ablation is not None:
        print_ablation_tables(suite, records)
    if suite.baseline is not None:
        print_baseline_table(suite, records)


def _rerun(suite, reruns: set):
    """Move the ``--rerun`` runs aside; print what moved where; the ``Replaced`` or None."""
    from fgvcbench.executors import move_reruns
    lines, replaced = move_reruns(suite, [spec for spec in suite.runs if spec.run_id in reruns])
    for line in lines:
        console.print(line, highlight=False)
    return replaced


def _is(p_value: str) -> str:
    """``= 0.0496`` or ``< 0.001``: a p-value's text (stats.p_text) after "p"."""
    return f"< {p_value[1:]}" if p_value.startswith("<") else f"= {p_value}"


def _not_a_folder(path: Path, what: str) -> str:
    """``what`` at ``path``: not found, or a file where a folder belongs."""
    return f"{what} {path} is a file, not a folder" if path.exists() else f"{what} not found: {path}"


def _metrics_option(value: Optional[str]) -> tuple[str, ...]:
    """``--metrics a,b`` as names (blank pieces and repeats ignored)."""
    return tuple(dict.fromkeys(m.strip() for m in (value or "").split(",") if m.strip()))


def _results_folders(values: list[str]) -> list[Path]:
    """The results directories ``leaderboard`` and ``report`` read, each an existing folder."""
    folders = [Path(v) for v in values]
    for d in folders:
        if not d.is_dir():
            hint = ("pass a suite's output directory (a suite's output:, results/<name> by default), or run the "
                    "suite first: `fgvcbench run suites/quickstart.yaml` writes results/quickstart")
            raise UserError(f"{_not_a_folder(d, 'results directory')} — {hint}")
    return folders


@app.command()
@friendly
def leaderboard(results_dirs: List[str] = typer.Argument(..., help="One or more results directories.",
                                                         metavar="RESULTS_DIR", callback=nonempty_path),
                format: str = typer.Option("table", "--format", "-f", help="table, csv, md, github or latex."),
                write: bool = typer.Option(True, "--write/--no-write",
                                           help="Write leaderboard.csv into the first directory."),
                pivot: bool = typer.Option(False, "--pivot", help="The papers' shape: per backbone, pipelines × "
                                                                  "datasets, cells mean ± std (n)."),
                metrics: Optional[str] = typer.Option(None, "--metrics",
                                                      help="Extra metric columns, e.g. precision_at_1,map_at_r "
                                                           "(mean ± std over seeds)."),
                baseline: Optional[List[str]] = typer.Option(
                    None, "--baseline", metavar="METHOD[:VARIANT]", help="Compare every row with this method (or method:variant, "
                                             "method:variant@CONFIG) on the same "
                                             "dataset, backbone, weights and scale: Δ top-1 paired by seed, its 95% "
                                             "CI and p.")) -> None:
    """Aggregate run records: one row per dataset × backbone × method × variant, over seeds."""
    allowed = ("table", "csv", "md", "github", "latex")
    if format not in allowed:
        raise UserError(f"unknown format {format!r} — use one of {', '.join(allowed)}")
    results_dirs = _results_folders(results_dirs)
    extra = _metrics_option(metrics)
    if baseline and len(baseline) > 1:
        raise UserError(f"--baseline given {len(baseline)} times: a leaderboard compares with one "
                        f"(`fgvcbench report --baseline A --baseline B` makes a table for each)")
    print_leaderboard(list(results_dirs), fmt=format, write_csv=write, pivot=pivot, metrics=extra,
                      baseline=baseline[0] if baseline else None)


@app.command()
@friendly
def report(results_dirs: List[str] = typer.Argument(..., help="One or more results directories.",
                                                    metavar="RESULTS_DIR", callback=nonempty_path),
           out: str = typer.Option(..., "--out", "-o", help="Folder for report.md and its PNG figures.",
                                   metavar="DIR", callback=nonempty_path),
           title: str = typer.Option("fgvcbench report", "--title", help="The report's heading."),
           metrics: Optional[str] = typer.Option(None, "--metrics", help="Extra leaderboard columns, e.g. nmi,ari "
                                                                         "(mean ± std over seeds)."),
           baseline: Optional[List[str]] = typer.Option(
               None, "--baseline", metavar="METHOD[:VARIANT]", help="A method-vs-baseline table (pipelines × datasets, Δ paired by seed) against "
                                        "this method or method:variant; repeatable."),
           data_root: Optional[List[str]] = typer.Option(
               None, "--data-root", metavar="DIR", callback=nonempty_path,
               help="Where to find example images recorded on another machine (their path's tail under DIR, e.g. "
                    "CUB_200_2011/images/…); repeatable.")) -> None:
    """A Markdown report with figures: leaderboard, ablation charts, accuracy vs training
    time, per-seed spread and the most-confused class pairs with example images."""
    from fgvcbench.report.leaderboard import check_extra_metrics, load_records
    from fgvcbench.report.report import write_report
    from fgvcbench.suite import first_repeat
    repeat = first_repeat(list(baseline or ()))
    if repeat is not None:   # the same table twice
        raise UserError(f"--baseline {baseline[repeat]!r} is given twice — give each baseline once")
    if "\n" in title or "\r" in title:
        raise UserError("--title: one line, please (a line break would split the report's heading)")
    results_dirs, out = _results_folders(results_dirs), Path(out)
    records, warnings = load_records(*results_dirs)
    for w in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False)
    if not records:
        raise UserError(f"no run records under {', '.join(map(str, results_dirs))} — run a suite first")
    extra = _metrics_option(metrics)
    check_extra_metrics(records, extra)
    roots = tuple(data_root or ())
    missing = next((r for r in roots if not Path(r).is_dir()), None)
    if missing is not None:
        raise UserError(f"--data-root {missing}: no such folder — give the folder that holds the datasets")
    try:
        path = write_report(records, results_dirs, out, title, extra, tuple(baseline or ()), roots)
    except OSError as exc:
        raise UserError(f"cannot write the report into {out}: {exc.strerror or exc} — choose another --out") from None
    console.print(f"wrote {path} ({len(list(path.parent.glob('*.png')))} figures)", markup=False)


@app.command("new-plugin")
@friendly
def new_plugin(name: str = typer.Argument(..., help="The plugin's name, e.g. my-method."),
               where: str = typer.Option(".", "--dir", help="Where to create fgvcbench-NAME/.", metavar="DIR",
                                         callback=nonempty_path),
               force: bool = typer.Option(False, "--force", help="Write into an existing folder.")) -> None:
    """Scaffold a third-party plugin distribution: pyproject with the entry point, one
    method using the public API, and a test — it installs and passes out of the box."""
    from fgvcbench.plugins import get_registry
    from fgvcbench.scaffold import scaffold
    registry = get_registry()
    warn_plugins(registry)
    taken = {m: registry.origin.get(("methods", m), "?") for m in registry.methods}
    try:
        root = scaffold(name, Path(where), force, taken)
    except OSError as exc:
        raise UserError(f"cannot write the plugin into {where}: {exc.strerror or exc} — choose another --dir") from None
    console.print(f"created {root}\n  cd {root}\n  pip install -e \".[test]\"\n  fgvcbench plugins\n  pytest",
                  highlight=False, markup=False)


@app.command()
@friendly
def plugins(name: Optional[str] = typer.Argument(None, help="A method, dataset, backbone or recipe step: "
                                                            "its params, types, variants or options."),
            as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List every plugin: where it came from, its hooks, and what it provides; with NAME,
    what a suite can set for that method, dataset, backbone or recipe step."""
    from fgvcbench.plugins import get_registry
    registry = get_registry()
    if name is not None:
        described = registry.describe(name)
        if as_json:
            sys.stdout.write(json_text(described, indent=2) + "\n")
        else:
            print_description(described)
        for w in registry.warnings:   # e.g. another plugin's item of the same name, not the one shown
            if repr(name) in w:
                err_console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False)
        return
    infos = list(registry.plugins.values())
    if as_json:
        sys.stdout.write(json_text({"plugins": [i.as_dict() for i in infos], "warnings": registry.warnings},
                                   indent=2) + "\n")
        return
    table = Table(title="fgvcbench plugins")
    for col in ("plugin", "distribution", "version", "hooks", "provides"):
        table.add_column(col)
    for info in infos:
        hooks = ", ".join(h.removeprefix("fgvcbench_") for h in info.hooks)
        provides = escape("; ".join(f"{k}: {', '.join(v)}" for k, v in info.provides.items()))
        if info.error:   # the error in red: the markup is ours, its text is escaped
            provides = f"[red]{escape(str(info.error))}[/]" + (f"; {provides}" if provides else "")
        table.add_row(*(escape(str(cell)) for cell in (info.name, info.distribution or "-", info.version or "-",
                                                       hooks or "-")), provides or "-")
    console.print(table)
    for w in registry.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False)


@app.command()
@friendly
def ablate(step: str = typer.Option(..., "--step", help="The recipe step to measure, e.g. label_smoothing."),
           suite_file: Optional[str] = typer.Option(None, "--suite", metavar="FILE", callback=nonempty_path,
                                                     help="Suite with an ablation: section (default: the embedded "
                                                          "synthetic ablation, CPU-sized)."),
           dataset: Optional[str] = typer.Option(None, help="Dataset of the suite (default: its first)."),
           backbone: Optional[str] = typer.Option(None, help="Backbone of the suite (default: its first)."),
           seeds: Optional[str] = typer.Option(None, help="Seeds: a count (3 → 0,1,2) or a list (0,4)."),
           mode: str = typer.Option("cumulative", help="cumulative (up to the step before vs including it) or "
                                                       "leave-one-out (full recipe minus the step vs full)."),
           device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N or mps."),
           output: Optional[str] = typer.Option(None, help="Results directory (default: the suite's output).",
                                                metavar="DIR", callback=nonempty_path),
           progress: bool = typer.Option(True, "--progress/--no-progress")) -> None:
    """One recipe step, with vs without, paired over the same seeds. Finished runs are reused."""
    from importlib import resources

    from fgvcbench.executors import check_data_versions, run_suite
    from fgvcbench.plugins import get_registry, suggest
    from fgvcbench.report.ablation import _by_seed, compare_sides
    from fgvcbench.store import Store, check_results
    from fgvcbench.engine.recipe import Recipe
    from fgvcbench.suite import (AblationPlan, _computation, _steps_problem, load_suite, steps_overwrite,
                                 steps_overwrite_note)

    if mode not in ("cumulative", "leave-one-out"):
        raise UserError(f"--mode {mode!r} — use cumulative or leave-one-out")
    registry = get_registry()
    warn_plugins(registry)
    if step not in registry.recipe_steps:
        close = suggest(step, registry.recipe_steps)
        raise UserError(f"unknown recipe step {step!r}" + (f" — did you mean {close!r}?" if close else
                        " — `fgvcbench plugins` lists the steps"))
    with resources.as_file(resources.files("fgvcbench") / "default_ablation.yaml") as default:
        suite = load_suite(suite_file or default, registry, seeds=_parse_seeds(seeds), output=output, device=device)
    plan = suite.ablation
    if plan is None:
        method = registry.methods.get("recipe")
        if method is None:
            raise UserError("the suite has no ablation: section and no 'recipe' method is installed")
        # the order of the suite's own recipe entry (its `steps:` param), else the method's default
        recipe_runs = sorted((spec for spec in suite.runs if spec.method == "recipe"),
                             key=lambda spec: (spec.variant != "default", -len(spec.params["steps"])))
        own_steps = list(recipe_runs[0].params["steps"]) if recipe_runs else None
        plan = AblationPlan(method="recipe", order=own_steps or list(method.params["steps"]), extra=[])
    # a dataset by its table label (imagefolder@mybirds, coarse(cub)) or, where that picks one, its adapter's name
    labels = [dataset_label(d) for d, _ in suite.datasets]
    if dataset is None:
        ds = suite.datasets[0]
    elif dataset in labels:
        ds = suite.datasets[labels.index(dataset)]
    else:
        named = [d for d in suite.datasets if d[0]["name"] == dataset]
        if len(named) > 1:
            raise UserError(f"--dataset {dataset!r} names {len(named)} datasets of the suite — give one of "
                            f"{', '.join(labels)}")
        ds = named[0] if named else None
    if ds is None:
        raise UserError(f"dataset {dataset!r} is not in the suite — it has {', '.join(labels)}")
    bb = next((b for b in suite.backbones if b["name"] == backbone), None) if backbone is not None else suite.backbones[0]
    if bb is None:
        raise UserError(f"backbone {backbone!r} is not in the suite — it has {', '.join(b['name'] for b in suite.backbones)}")
    without, with_ = plan.compare(step, mode)
    method = registry.methods[plan.method]
    # seed by seed, the two sides in turn: a machine's load that drifts over time falls on both
    specs = [suite.make_spec(ds[0], ds[1], bb, method, plan.label(steps), {"steps": steps}, seed)
             for seed in suite.seeds for steps in (without, with_)]
    # a side the suite's own grid already computes (e.g. `methods: [recipe]`, the full recipe,
    # under its variant's name) is that run: finished, it is reused rather than trained again
    own = {_computation(spec): spec for spec in suite.runs}
    specs = [own.get(_computation(spec), spec) for spec in specs]
    suite.runs = specs
    check_results(Path(suite.output), Path(suite.cache_dir))   # as `run`: nothing trains that cannot be saved
    check_data_versions(suite, registry, rerun=False)   # reused runs must have read the data there is now
    for steps in (without, with_):   # a step that cannot apply fails both sides' every run: say so now
        problem = _steps_problem(registry, Recipe(**specs[0].recipe), steps)
        if problem:
            raise UserError(problem)
    inert = inert_step(registry, specs[0].recipe, without, with_)
    if inert:   # before training: a comparison of two alike trainings measures noise, say so
        err_console.print(f"[yellow]note:[/] {escape(f'{step!r} at this budget: {inert}')}", highlight=False)
    overwritten = steps_overwrite(registry, Recipe(**specs[0].recipe), [with_], suite.train_given)
    if overwritten:   # the suite's train: values the steps being compared overwrite
        err_console.print(f"[yellow]note:[/] {escape(steps_overwrite_note('ablate', overwritten, suite.train_given))}",
                          highlight=False)
    short = warmup_fills_run(registry, specs[0].recipe, (without, with_))
    if short:
        err_console.print(f"[yellow]note:[/] {escape(short)}", highlight=False)
    outcome = run_suite(suite, registry, console=console, show_progress=progress)
    ids = {spec.run_id for spec in specs}   # exactly these runs, whatever else the folder holds
    records = [r for r in Store(suite.output).records() if r["run_id"] in ids]
    a, b = (_by_seed(records, plan.method, ds[0]["name"], bb["name"], steps) for steps in (without, with_))
    result = compare_sides(a, b)
    p = result["paired"]
    table = Table(title=escape(f"ablate {step} ({mode}) · {dataset_label(ds[0])} · {bb['name']} · seeds {result['seeds']}"))
    for col in ("side", "steps", "top-1 % mean ± std", "n", result["cost_label"]):
        table.add_column(col)
    from fgvcbench.report.stats import format_mean_std, p_text, signed
    for side, steps, summary, cost in (("without", without, result["without"], result["cost_without"]),
                                       ("with", with_, result["with"], result["cost_with"])):
        table.add_row(side, " → ".join(steps) or "(none)", format_mean_std(summary.mean, summary.std),
                      str(summary.n), "–" if math.isnan(cost) else f"{cost:.1f}")
    console.print(table)
    unpaired = [(seed, [side for side, runs in (("without", a), ("with", b)) if seed not in runs])
                for seed in suite.seeds if seed not in result["seeds"]]
    if unpaired:   # both sides and the Δ read only the seeds both sides finished: say which are not
        console.print("Left out: " + "; ".join(f"seed {seed} (no successful run {' or '.join(sides)} the step)"
                                               for seed, sides in unpaired), highlight=False)
    if p is not None and p.n:
        ci = "–" if p.ci_low != p.ci_low else f"[{signed(p.ci_low)}, {signed(p.ci_high)}]"
        pv, wp = p_text(p.p_value), p_text(p.wilcoxon_p)
        if p.wilcoxon_p == p.wilcoxon_p and p.wilcoxon_n < p.n:
            wp += f" over the {p.wilcoxon_n} seed{'s' if p.wilcoxon_n != 1 else ''} that moved"
        console.print(f"Δ top-1 ({step}) = {signed(p.mean_delta)} points, 95% CI {ci}, paired t-test p {_is(pv)}, "
                      f"Wilcoxon p {_is(wp)} (n = {p.n} paired seed{'s' if p.n != 1 else ''})", highlight=False)
    console.print(f"records in {suite.output}/runs", highlight=False, markup=False)
    if outcome.interrupted:
        interrupted(f"the finished runs are saved in {suite.output}; run the same command to resume.")
    if outcome.failed:
        raise typer.Exit(1)


data_app = typer.Typer(no_args_is_help=True, help="Datasets on disk: check them before a long run.")
app.add_typer(data_app, name="data")


def _bench_app() -> typer.Typer:
    from fgvcbench.bench import bench_app
    for command in bench_app.registered_commands:  # bad input → one line, exit 2, as everywhere
        if not getattr(command.callback, "_friendly", False):
            command.callback = friendly(command.callback)
            command.callback._friendly = True
    return bench_app


app.add_typer(_bench_app(), name="bench")


@data_app.command("verify")
@friendly
def data_verify(name: str = typer.Argument(..., help="Dataset name, e.g. cub (see `fgvcbench plugins`)."),
                root: Optional[str] = typer.Option(None, metavar="DIR", callback=nonempty_path,
                                                   help="Dataset folder (default: the suite's entry, else "
                                                        "<data root>/<name's folder>)."),
                option: List[str] = typer.Option([], "--option", "-o", help="Dataset option KEY=VALUE (repeatable)."),
                suite: Optional[str] = typer.Option(None, "--suite", metavar="FILE", callback=nonempty_path,
                                                    help="Take the root and options from the "
                                                         "suite's first `datasets:` entry named NAME."),
                data_root: Optional[str] = typer.Option(None, "--data-root", metavar="DIR", callback=nonempty_path,
                                                        help="Folder that relative dataset "
                                                        "roots are under (default: the suite's data_root, "
                                                        "$FGVCBENCH_DATA, ./data)."),
                per_class: bool = typer.Option(False, "--per-class", help="Also list images per class and split."),
                as_json: bool = typer.Option(False, "--json", help="Machine-readable report.")) -> None:
    """Images per split and class, missing and corrupt files, duplicates across splits.
    Exit 0: clean (notes such as same-class duplicates inside one split do not fail) ·
    1: problems (each with a one-line fix) · 2: the layout or its metadata is wrong."""
    from fgvcbench.data.verify import verify_dataset
    from fgvcbench.plugins import get_registry, unknown_dataset

    registry = get_registry()
    warn_plugins(registry)
    spec = registry.datasets.get(name)
    if spec is None:
        raise UserError(unknown_dataset(name, registry.datasets))
    options = checked_options(spec, option)
    root = Path(root) if root is not None else None
    root_from, root_error = ("option" if root is not None else None), None
    if suite is not None:
        from fgvcbench.suite import load_suite
        # the suite's own resolution: --data-root > suite data_root > $FGVCBENCH_DATA > ./data
        loaded = load_suite(suite, registry, data_root=data_root, check_data=False)
        entry = next(((d, r) for d, r, *_ in loaded.datasets if d["name"] == name), None)
        if entry is None:
            listed = sorted({d["name"] for d, *_ in loaded.datasets})
            raise UserError(f"{suite}: no `datasets:` entry named {name!r} — it has: {', '.join(listed) or 'none'}")
        options = {**entry[0]["options"], **options}
        if root is None and entry[1] is not None:
            root = Path(entry[1])
            root_error = loaded.root_errors.get(canonical_json(entry[0]))   # its file, line and fix
    merged = {**spec.options, **options}
    if spec.is_view and not (isinstance(merged.get("of"), str) and merged["of"] in registry.datasets):
        raise UserError(unknown_dataset(merged.get("of"), registry.datasets))   # the view's base
    # the folder's adapter: the dataset's own, a view's base, or none (generated data)
    reader = spec.folder_reader(merged, registry.datasets)
    if reader is None and root is not None:   # generated data: the folder would go unused
        raise UserError(f"dataset {name!r} is generated: it reads no folder — drop --root (options set what "
                        f"is generated: {', '.join(spec.options) or 'none'})")
    if reader is not None and root is None:
        base = data_root or default_data_root()
        root = Path(base).expanduser() / reader.folder_name
        root_from = "data_root" if data_root else "env" if env_data_root() else "default"
    if reader is not None and not root.is_dir():   # where the folder came from, and how to point elsewhere
        if root_error is not None:
            raise root_error
        fix = {"option": "check --root",
               "data_root": "check --data-root (the folder above the dataset's), or pass --root DIR",
               "env": "check FGVCBENCH_DATA (the folder above the dataset's), or pass --root DIR or --data-root DIR",
               }.get(root_from, "pass --root DIR (the dataset's folder), --data-root DIR (the folder above it) or "
                                "set FGVCBENCH_DATA")
        what = f"{root} is a file, not the dataset's folder" if root.exists() else f"dataset root not found: {root}"
        raise UserError(f"{what} — {fix}; expected layout: {reader.layout or 'see `fgvcbench plugins ' + name + '`'}")
    cache = default_cache_dir()
    if reader is None:   # generated data or a view: loading writes into the cache, as a run's does
        from fgvcbench.store import check_writable
        check_writable(cache / "datasets", "the dataset cache", "FGVCBENCH_CACHE=DIR")
    report = verify_dataset(spec, root, options, cache / "datasets",
                            split_lists=reader.split_lists if reader is not None else None)
    if as_json:
        sys.stdout.write(json_text(report.as_dict(), indent=2) + "\n")
    else:
        table = Table(title=escape(f"{name} · {report.root or 'generated'}"))
        for col in ("split", "images", "classes", "min / class", "max / class"):
            table.add_column(col, justify="left" if col == "split" else "right")
        for split, counts in report.splits.items():
            values = list(counts.values())
            present = [v for v in values if v > 0]   # a weak-shot test split holds the novel classes only
            classes = str(len(present)) if len(present) == len(values) else f"{len(present)} of {len(values)}"
            table.add_row(split, str(sum(values)), classes, str(min(present, default=0)), str(max(values, default=0)))
        console.print(table)
        if per_class:
            classes = Table(title="images per class")
            classes.add_column("class")
            for split in report.splits:
                classes.add_column(split, justify="right")
            # every class of any split: one with test images only is a row too (0 under train)
            for cls in dict.fromkeys(c for counts in report.splits.values() for c in counts):
                classes.add_row(escape(str(cls)), *(str(report.splits[s].get(cls, 0)) for s in report.splits))
            console.print(classes)
        for problem in report.problems:
            console.print(f"[red]{problem.kind}[/]: {escape(f'{problem.path} — {problem.detail}; ')}[bold]fix:[/] {escape(problem.fix)}",
                          highlight=False)
        for note in report.notes:
            console.print(f"[yellow]note[/]: {escape(f'{note.kind}: {note.path} — {note.detail}; {note.fix}')}",
                          highlight=False)
        console.print(f"data fingerprint {report.fingerprint} (run records keep it as data.fingerprint: the same "
                      f"images, labels and boxes give the same one at any path)", highlight=False, markup=False)
        notes = f" ({len(report.notes)} note{'' if len(report.notes) == 1 else 's'})" if report.notes else ""
        n = len(report.problems)
        console.print(("[green]no problems found[/]" if report.ok else f"{n} problem{'' if n == 1 else 's'} found")
                      + notes)
    if not report.ok:
        raise typer.Exit(1)


def _click_errors() -> tuple[tuple, tuple, tuple, tuple]:
    """(NoArgsIsHelpError, UsageError, ClickException, Abort) classes of click and of the click
    that typer >= 0.2x carries inside itself (``typer._click``), whichever are installed."""
    found: list[list] = [[], [], [], []]
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            mod = __import__(module, fromlist=["UsageError"])
        except ImportError:
            continue
        for slot, name in enumerate(("NoArgsIsHelpError", "UsageError", "ClickException", "Abort")):
            if hasattr(mod, name):
                found[slot].append(getattr(mod, name))
    return tuple(tuple(f) for f in found)  # type: ignore[return-value]


def _usage_line(exc: Exception) -> str:
    """A usage error as one line that says what to do: the problem, then where help is."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "fgvcbench"
    return f"{message.rstrip('.')} — see '{command} --help'"


def _flowing_short_helps(typer_app: typer.Typer) -> None:
    """A command's line in its group's listing is the first paragraph of its docstring as one
    flowing sentence: rich would otherwise keep the docstring's own line breaks there."""
    import inspect
    for command in typer_app.registered_commands:
        doc = inspect.getdoc(command.callback) if command.callback else None
        if command.short_help is None and command.help is None and doc:
            command.short_help = " ".join(doc.split("\n\n")[0].split())
    for group in typer_app.registered_groups:
        _flowing_short_helps(group.typer_instance)


_flowing_short_helps(app)


def _no_type_on_flags() -> None:
    """typer 0.2x's help writes each option's Python type after it, flags too
    (``--dry-run <bool>``, ``--help <bool>``), so a flag reads as if it took a value: a
    flag shows no type, as click's own help has it. Other typer versions are left alone."""
    try:
        from typer.core import TyperOption
    except ImportError:
        return
    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_fgvcbench", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)
    display_type_rich._fgvcbench = True
    TyperOption.display_type_rich = display_type_rich


_no_type_on_flags()


INTERRUPTED = "nothing finished is lost; run the same command to resume."
_interrupt_told = False


def _tell_interrupted(message: str = INTERRUPTED) -> None:
    """Say what a Ctrl-C left behind, once per process."""
    global _interrupt_told
    err_console.print(f"[yellow]interrupted[/] — {escape(message)}", highlight=False)
    _interrupt_told = True


def interrupted(message: str = INTERRUPTED) -> None:
    """Say what a Ctrl-C left behind, then exit 130."""
    _tell_interrupted(message)
    raise typer.Exit(130)


def main() -> None:
    no_args, usage, click_error, abort = _click_errors()
    guard_stdout()
    try:
        code = app(standalone_mode=False, prog_name="fgvcbench")
    except no_args as exc:  # `fgvcbench` (or `fgvcbench data`) alone: its help, exit 2 as click does
        text = exc.format_message()   # the help the error was made with; rich's help printed itself then
        if text:
            sys.stdout.write(text + "\n")
        sys.exit(2)
    except usage as exc:  # missing argument, unknown option or command, bad value: one line, exit 2
        err_console.print(f"[bold red]error:[/] {escape(_usage_line(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click_error as exc:
        err_console.print(f"[bold red]error:[/] {escape(' '.join(exc.format_message().split()))}", highlight=False)
        sys.exit(exc.exit_code)
    except abort:
        sys.exit(1)
    except KeyboardInterrupt:
        code = 130
    except OSError as exc:
        if not getattr(exc, "fgvcbench_stdout", False):   # not the output's own failure: not ours to word
            raise
        try:   # the output itself failed: a full disk behind `> file`
            err_console.print(f"[bold red]error:[/] cannot write the output: {escape(exc.strerror or str(exc))} — "
                              "free space where it goes, or send it elsewhere; nothing finished is lost",
                              highlight=False)
        finally:
            sys.exit(1)
    if code == 130 and not _interrupt_told:   # typer turns a Ctrl-C into exit 130 without a word
        _tell_interrupted()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
