"""Running a suite's pending runs on this machine, with progress and resume.

Finished runs (a record with status ok or diverged) are skipped. Each run's record is
written the moment the run ends, so Ctrl-C (or a crash) loses at most the run in
flight. A failed run is recorded with its error and the suite goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fgvcbench.plugins import Registry
from fgvcbench.run import execute_run, resolve_device
from fgvcbench.store import Store
from fgvcbench.suite import Suite


@dataclass
class SuiteOutcome:
    ran: list[dict] = field(default_factory=list)
    skipped: int = 0
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.ran if r["status"] != "ok"]


def pending_runs(suite: Suite, store: Store):
    return [spec for spec in suite.runs if not store.is_finished(spec.run_id)]


def run_suite(suite: Suite, registry: Registry, console: Console | None = None,
              show_progress: bool = True) -> SuiteOutcome:
    console = console or Console()
    store = Store(suite.output)
    device = resolve_device(suite.device)
    todo = pending_runs(suite, store)
    outcome = SuiteOutcome(skipped=len(suite.runs) - len(todo))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show_progress, transient=False) as progress:
        suite_task = progress.add_task(f"suite {suite.name}", total=len(suite.runs), completed=outcome.skipped)
        epoch_task = progress.add_task("epochs", total=None, visible=False)
        batch_task = progress.add_task("batches", total=None, visible=False)
        for spec in todo:
            progress.update(epoch_task, description=spec.label, completed=0, total=None, visible=True)

            def on_epoch(row, _spec=spec):
                total = None if "phase" in row else _spec.recipe["epochs"]
                progress.update(epoch_task, advance=1, total=total)

            def on_batch(done, total):
                progress.update(batch_task, completed=done, total=total, visible=True)

            try:
                record = execute_run(spec, registry, store, device=device, cache_dir=suite.cache_dir,
                                     on_epoch=on_epoch, on_batch=on_batch)
            except KeyboardInterrupt:
                outcome.interrupted = True
                break
            try:
                store.write(record)
            except OSError as exc:  # disk full, permissions…: say so, keep going, exit non-zero
                record = dict(record, status="failed",
                              error=f"could not write the record to {store.record_path(spec.run_id)}: {exc}")
                console.print(f"[red]✗ not saved[/] {spec.label}  [dim]{spec.run_id}[/]: {exc} — free space "
                              f"or fix permissions, then run again (this run will be redone)", highlight=False)
                outcome.ran.append(record)
                progress.update(suite_task, advance=1)
                continue
            outcome.ran.append(record)
            outcome.warnings.extend(registry.notify_run_finished(record))
            status = record["status"]
            if status == "ok":
                m = record["metrics"]
                console.print(f"[green]✓[/] {spec.label}  top1 {m['top1']:.2f}%  "
                              f"({record['cost']['wall_seconds']:.0f}s)  [dim]{spec.run_id}[/]", highlight=False)
            else:
                first = (record["error"] or "").splitlines()[0] if record["error"] else ""
                console.print(f"[red]✗ {status}[/] {spec.label}  [dim]{spec.run_id}[/]: {first}", highlight=False)
            progress.update(suite_task, advance=1)
        progress.update(epoch_task, visible=False)
        progress.update(batch_task, visible=False)
    return outcome


def grid_status(suite: Suite) -> list[tuple[object, str]]:
    """(spec, status) for each run of the grid: ok / diverged / failed / pending."""
    store = Store(suite.output)
    out = []
    for spec in suite.runs:
        record = store.get(spec.run_id)
        out.append((spec, record["status"] if record else "pending"))
    return out

