"""What the CLI prints: the consoles, and the tables `run`, `leaderboard` and `plugins`
show (leaderboard, method-vs-baseline, recipe ablations, a plugin's description)."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fgvcbench.errors import UserError

# Long paths stay on one line; logs (not a terminal) get tables wide enough to read.
# (a stream closed by the shell, `>&-`, is None: no terminal)
console = Console(soft_wrap=True, width=None if sys.stdout is not None and sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr is not None and sys.stderr.isatty() else 200)


class GuardedStdout:
    """``sys.stdout`` (and ``sys.stderr``) for the CLI. A failed write to stdout is marked
    (``fgvcbench_stdout``), so ``main`` words only the failure of the output itself — a
    full disk behind ``> file`` — as one. A reader that went away (``fgvcbench run … |
    head``, or ``2>&1 | head``: a broken pipe) is not a failure: the rest of the output
    goes nowhere and the command carries on — a suite finishes its runs — and exits as it
    would have."""

    def __init__(self, stream, mark: bool = True):
        self._stream, self._mark = stream, mark
        self.reader_gone = False

    def _guarded(self, call, *args):
        if self.reader_gone:
            return len(args[0]) if args else None
        try:
            return call(*args)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE:
                self._drop()
                return len(args[0]) if args else None
            if self._mark:
                exc.fgvcbench_stdout = True
            raise

    def _drop(self) -> None:
        """Point the stream's file descriptor at /dev/null, so what is still buffered (and
        Python's flush at exit) goes there instead of raising again."""
        self.reader_gone = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):   # no descriptor (a test's stream): nothing buffered there
            pass

    def write(self, text):
        return self._guarded(self._stream.write, text)

    def flush(self):
        return self._guarded(self._stream.flush)

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_stream", "_mark"):   # not set yet (a copy, an unpickle)
            raise AttributeError(name)
        return getattr(self._stream, name)


def guard_stdout() -> None:
    """Put :class:`GuardedStdout` around ``sys.stdout`` and ``sys.stderr`` (once): ``main``
    and every worker process of ``run --workers`` / ``--gpus`` call it."""
    if sys.stdout is not None and not isinstance(sys.stdout, GuardedStdout):
        sys.stdout = GuardedStdout(sys.stdout)
    if sys.stderr is not None and not isinstance(sys.stderr, GuardedStdout):
        sys.stderr = GuardedStdout(sys.stderr, mark=False)


def print_leaderboard(dirs: list[Path], fmt: str, write_csv: bool, pivot: bool = False,
                       metrics: tuple[str, ...] = (), baseline: Optional[str] = None,
                       skip_hint: str = "; pass --no-write to skip the CSV",
                       grid_ids: Optional[set[str]] = None) -> None:
    """The leaderboard of ``dirs``' records. With ``grid_ids`` (``run``: its suite's run ids)
    a note counts the records in the folder that the suite's grid does not hold."""
    from fgvcbench.report.compare import add_baseline, baseline_note
    from fgvcbench.report.leaderboard import (build_leaderboard, check_extra_metrics, config_notes, load_records,
                                              render, render_pivot, render_rich_table, write_leaderboard_csv)
    from fgvcbench.report.stats import csv_text
    from fgvcbench.store import atomic_write_text
    records, warnings = load_records(*dirs)
    for w in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False)
    if not records and warnings:   # the records are there: running a suite is not the fix
        raise UserError(f"none of the {len(warnings)} record file{'s' if len(warnings) != 1 else ''} under "
                        f"{', '.join(map(str, dirs))} could be read (see the warnings above) — fix or move them")
    if not records:
        raise UserError(f"no run records under {', '.join(map(str, dirs))} — run a suite first "
                        f"(fgvcbench run suites/quickstart.yaml)")
    check_extra_metrics(records, metrics)
    df = build_leaderboard(records, metrics)
    plain = df
    if baseline is not None:
        df = add_baseline(df, records, baseline)
    if write_csv:
        first = Path(dirs[0])
        folder = first.parent if first.name == "runs" else first   # beside runs/
        try:
            path = write_leaderboard_csv(plain, folder)   # leaderboard.csv is always the plain table
            err_console.print(f"[dim]wrote {escape(str(path))}[/]")
            if baseline is not None:   # the comparison beside it (a suite's own baseline: table is baseline.csv)
                path = folder / "leaderboard-baseline.csv"
                atomic_write_text(path, csv_text(df))
                err_console.print(f"[dim]wrote {escape(str(path))}[/]")
        except OSError as exc:   # a read-only copy of results: the table is still worth printing
            err_console.print("[yellow]warning:[/] could not write the table's CSV into "
                              + escape(f"{folder}: {exc.strerror or exc} — the table follows{skip_hint}"),
                              highlight=False)
    if pivot and metrics:
        err_console.print(f"[yellow]note:[/] --pivot cells hold top-1 only; --metrics {','.join(metrics)} shows "
                          f"in the flat table (drop --pivot)", highlight=False)
    if pivot:
        sys.stdout.write(render_pivot(df, "github" if fmt == "table" else fmt) + "\n")
    elif fmt == "table":
        console.print(render_rich_table(df))
    else:
        try:
            text = render(df, fmt)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    notes = config_notes(plain) if fmt != "csv" else []   # rows named alike, told apart by their config hash
    if fmt == "table":
        for line in notes:
            console.print(line, highlight=False, markup=False)
    elif notes:
        sys.stdout.write("\n" + "".join(("% " if fmt == "latex" else "") + line + "\n" for line in notes))
    outside = sum(r["run_id"] not in grid_ids for r in records) if grid_ids is not None else 0
    if outside:   # e.g. a configuration the suite had before its params were changed
        err_console.print(f"[yellow]note:[/] {outside} record{'s' if outside != 1 else ''} in this folder "
                          f"{'are' if outside != 1 else 'is'} from runs outside this suite's grid (other settings, "
                          f"seeds or commands): the leaderboard shows them, the suite's ablation and baseline "
                          f"tables do not", highlight=False)
    if baseline is not None and fmt != "csv":
        note = baseline_note(df)
        if fmt == "latex":   # a comment under the table: the whole output pastes into a paper
            note = "% " + note
        console.print(("" if fmt == "table" and not pivot else "\n") + note, highlight=False)


def suite_records(suite) -> list[dict]:
    """Exactly the suite's runs' records: its output folder may also hold other seeds,
    scales, roots or weights (another command's runs), which its tables leave out."""
    from fgvcbench.store import Store
    ids = {spec.run_id for spec in suite.runs}
    return [r for r in Store(suite.output).records() if r["run_id"] in ids]


def print_baseline_table(suite, records: list[dict]) -> None:
    """The suite's ``baseline:`` table over its own runs' ``records`` (:func:`suite_records`;
    pipelines × datasets, Δ paired by seed), and ``baseline.csv`` beside the leaderboard."""
    from fgvcbench.report.compare import add_baseline, baseline_note
    from fgvcbench.report.leaderboard import build_leaderboard, render_pivot
    from fgvcbench.report.stats import csv_text
    from fgvcbench.store import atomic_write_text
    try:
        df = add_baseline(build_leaderboard(records), records, suite.baseline, source="the suite's baseline:")
    except UserError as exc:   # e.g. no baseline run has finished yet: the results stand, the table waits
        err_console.print(f"[yellow]note:[/] no table against {escape(f'{suite.baseline}: {exc}')}", highlight=False)
        return
    console.print(f"\n[bold]against {escape(suite.baseline)}[/] (this suite's runs)")
    sys.stdout.write(render_pivot(df, "github") + "\n")
    console.print(baseline_note(df), highlight=False)
    path = Path(suite.output) / "baseline.csv"
    atomic_write_text(path, csv_text(df))
    err_console.print(f"[dim]wrote {escape(str(path))}[/]")


def print_ablation_tables(suite, records: list[dict]) -> None:
    """The article-shaped table per dataset × backbone of the suite's runs' ``records``
    (:func:`suite_records`), plus ablation.csv and a PNG chart."""
    import pandas as pd

    from fgvcbench.report.ablation import ablation_table, render_ablation, write_ablation_chart
    from fgvcbench.spec import canonical_json, dataset_titles, pretrained_label, slug
    from fgvcbench.report.stats import csv_text
    from fgvcbench.store import atomic_write_text
    frames = []
    # the same dataset twice (other options, another root): each named by what tells it apart
    titles = dataset_titles(dataset for dataset, _ in suite.datasets)
    names = [backbone["name"] for backbone in suite.backbones]
    for dataset, _ in suite.datasets:
        label = titles[canonical_json(dataset)]
        for backbone in suite.backbones:
            weights = pretrained_label(backbone.get("pretrained"))
            model = backbone["name"] + (f" · pretrained {weights}" if names.count(backbone["name"]) > 1 else "")
            runs = _ablation_runs(suite, dataset, backbone)
            ids = {spec.run_id for spec in runs}
            df = ablation_table([r for r in records if r["run_id"] in ids], suite.ablation, dataset["name"],
                                backbone["name"])
            title = f"recipe ablation · {label} · {model} · scale {suite.scale}"
            if not df.attrs.get("seeds"):   # nothing to show yet (an interrupted first pass)
                err_console.print(f"[yellow]note:[/] {escape(title)}: no seed finished by every cumulative row yet",
                                  highlight=False)
                continue
            console.print(f"\n[bold]{escape(title)}[/]")
            sys.stdout.write(render_ablation(df) + "\n")
            _note_inert_rows(suite, runs)
            chart = Path(suite.output) / f"ablation-{slug(label)}-{slug(model)}.png"
            if write_ablation_chart(df, chart, title):
                err_console.print(f"[dim]wrote {escape(str(chart))}[/]")
            frames.append(df.assign(dataset=label, backbone=backbone["name"], pretrained=weights, scale=suite.scale))
    if not frames:
        return
    path = Path(suite.output) / "ablation.csv"
    atomic_write_text(path, csv_text(pd.concat(frames)))
    err_console.print(f"[dim]wrote {escape(str(path))}[/]")


def _resolved_sides(registry, recipe: dict, sides) -> list | None:
    """Each side's recipe after its steps, or None where a step fails (its runs then fail
    with the error; a note before them stays silent)."""
    from fgvcbench.engine.recipe import Recipe
    from fgvcbench.run import apply_steps
    try:
        return [apply_steps(registry, Recipe(**recipe), steps) for steps in sides]
    except Exception:  # noqa: BLE001
        return None


def inert_step(registry, recipe: dict, without: list[str], with_: list[str]) -> str | None:
    """Why the two sides of an ablation train alike in effect (or None): their recipes after
    the steps, compared by :func:`~fgvcbench.engine.train.inert_change`."""
    from fgvcbench.engine.train import inert_change
    resolved = _resolved_sides(registry, recipe, (without, with_))
    return inert_change(*resolved) if resolved else None


def warmup_fills_run(registry, recipe: dict, sides: tuple[list[str], ...]) -> str | None:
    """Where a side's warmup spans all its epochs (the lr never reaches the value the step
    sets, as the embedded default's 5 epochs under the article's 5 warmup epochs): which."""
    short = [(name, r) for name, r in zip(("without", "with"), _resolved_sides(registry, recipe, sides) or [])
             if r.warmup_epochs and r.warmup_epochs >= r.epochs]
    if not short:
        return None
    spans = {(r.warmup_epochs, r.epochs) for _, r in short}
    if len(short) == 2 and len(spans) == 1:
        who = "both sides warm up for {} epochs of {}".format(*spans.pop())
    else:
        who = "; ".join(f"the {name} side warms up for {r.warmup_epochs} epochs of {r.epochs}" for name, r in short)
    return (f"{who}: the lr never reaches the value the steps set, so the comparison says little about them — "
            f"train longer (train: {{epochs: N}}) for a reading of the steps themselves")


def _ablation_runs(suite, dataset: dict, backbone: dict) -> list:
    """The runs the suite's ``ablation:`` section adds for one dataset × backbone (their
    variants are ``steps:…`` labels). A ``methods:`` entry of the same method is not among
    them: under its own ``train:`` its runs of the same steps are another setup."""
    return [spec for spec in suite.runs if spec.method == suite.ablation.method and spec.dataset == dataset
            and spec.backbone == backbone and spec.variant.startswith("steps:")]


def _note_inert_rows(suite, runs: list) -> None:
    """A note under an ablation table for each row whose step trains alike in effect at
    this suite's budget (its Δ measures seed noise, not the step). ``runs``: the
    ablation's (:func:`_ablation_runs`), which share one recipe before their steps."""
    from fgvcbench.plugins import get_registry
    if not runs:
        return
    registry = get_registry()
    recipe = runs[0].recipe
    order = suite.ablation.order
    for label, steps in suite.ablation.rows():
        before = order[:len(steps) - 1] if not label.startswith("+") else list(order)
        if not before and not label.startswith("+"):
            continue   # the first row has nothing to compare with
        why = inert_step(registry, recipe, before, steps)
        if why:
            err_console.print(f"[yellow]note:[/] {escape(f'row {label}: {why}')}", highlight=False)


def print_description(d: dict) -> None:
    via = f" (served by {d['served_by']!r})" if d.get("served_by") else ""
    console.print(f"[bold]{d['name']}[/] — {d['kind']} from plugin {d['plugin']}{via}", highlight=False)
    if d["description"]:
        console.print(escape(d["description"]), highlight=False)
    if d["kind"] == "method":
        table = Table(title="params (suite: methods: [{name: %s, params: {...}}])" % d["name"])
        for col in ("param", "default", "accepts"):
            table.add_column(col)
        for row in d["params"]:
            table.add_row(row["param"], escape(json.dumps(row["default"])), row["accepts"])
        console.print(table)
        table = Table(title="variants (suite: variants: [...] or all)")
        table.add_column("variant")
        table.add_column("changes")
        for variant, changes in d["variants"].items():
            table.add_row(variant, escape(", ".join(f"{k}={json.dumps(v)}" for k, v in changes.items()) or "-"))
        console.print(table)
        if d["recipe"]:
            console.print("recipe defaults: " + escape(", ".join(f"{k}={v}" for k, v in d["recipe"].items())),
                          highlight=False)
        for scale, changes in d["scales"].items():
            console.print(f"scale {scale}: " + escape(", ".join(f"{k}={v}" for k, v in changes.items())),
                          highlight=False)
    elif d["kind"] == "recipe step":
        sets = d.get("sets")
        if sets:
            console.print("on the default recipe it sets: " + escape(", ".join(
                f"{k}={json.dumps(v)}" for k, v in sets.items())), highlight=False)
        elif sets is not None:
            console.print("on the default recipe it changes nothing (what it does depends on the steps before it)",
                          highlight=False)
    elif d["kind"] == "dataset":
        if d["options"]:
            choices = d.get("choices") or {}
            console.print("options: " + escape(", ".join(
                f"{k}={json.dumps(v)}" + (f" (one of {' | '.join(map(str, choices[k]))})" if k in choices else "")
                for k, v in d["options"].items())), highlight=False)
        if d["needs_root"]:
            console.print(f"root: <data root>/{d['default_root'] or d['name']} unless the suite sets root:",
                          highlight=False)
            console.print("layout: " + escape(d["layout"] or "-"), highlight=False)


def quiet_rank() -> bool:
    """A torchrun process other than its node's first (LOCAL_RANK above 0): it reads the same
    suite, files and options as local rank 0, so its errors and warnings are the same lines,
    which local rank 0 prints once for the node. (Read from the environment: no torch import.)"""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("LOCAL_RANK", "0")) > 0
    except ValueError:
        return False


def warn_plugins(registry) -> None:
    """What went wrong loading plugins, on stderr: every command that uses the registry says it
    (under torchrun, each node's first process)."""
    if quiet_rank():
        return
    for info in registry.failed():
        if info.provides:   # one hook (or item) failed; the rest of what it provides is loaded
            err_console.print(f"[yellow]warning:[/] plugin {escape(repr(info.name))}: {escape(str(info.error))} (the rest of what it "
                              f"provides loaded)", highlight=False)
        else:
            err_console.print(f"[yellow]warning:[/] plugin {escape(repr(info.name))} skipped: {escape(str(info.error))}", highlight=False)
    for w in registry.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False)


def nonempty_path(ctx, param, value):
    """Callback of every path option and argument (typed as text, so that an empty one is
    still seen: a ``Path``-typed option has turned ``''`` into ``.`` before its callback
    runs): an empty or blank path — a typo, or an unset shell variable in ``--out "$OUT"`` —
    is refused instead of read as the current folder. The value comes back unchanged."""
    import typer
    values = value if isinstance(value, (list, tuple)) else [value]
    if any(v is not None and not str(v).strip() for v in values):
        raise typer.BadParameter("an empty path — give a folder or file name (an unset shell variable?)")
    return value


def parse_options(pairs: list[str]) -> dict:
    import yaml
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--option {pair!r} is not KEY=VALUE — e.g. --option crop=bbox")
        if key in options:   # the last would win silently
            raise UserError(f"--option {key} is given twice — give each option once")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise UserError(f"--option {pair!r}: the value is not plain YAML ({problem}) — quote it as a whole, "
                            f"e.g. -o '{key}=\"text\"', or write a number, true/false or a name") from None
    return options


def checked_options(spec, pairs: list[str]) -> dict:
    """``--option KEY=VALUE`` pairs for dataset ``spec``: parsed as YAML values, each a key
    the dataset has, of the type its default has, and the whole checked by the dataset
    (a DataError names the fix)."""
    from fgvcbench.suite import dataset_option_problem
    options = parse_options(pairs)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise UserError(f"dataset {spec.name!r} has no option {unknown[0]!r} — options: "
                        f"{', '.join(spec.options) or 'none'}")
    for key, value in options.items():
        problem = dataset_option_problem(spec, key, value)
        if problem:
            raise UserError(f"--option {key}={value}: {problem} — fix the value's type")
    spec.check_options({**spec.options, **options})
    return options
