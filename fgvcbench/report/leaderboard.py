"""Leaderboards: run records → one row per configuration, aggregated over seeds.

A row is one dataset × backbone × method × variant *configuration*: runs that differ
only in their seed. Runs that share the four names but differ in anything else (dataset
options, weights, recipe, params, scale) are different rows, told apart by the ``config``
column (a short hash of the spec without the seed, suite and data root — the same fields
the run id hashes, so it is stable across machines) — never silently averaged together;
their ``config_differs`` column, and a note under a printed table, say what tells them
apart (e.g. ``params.steps=[base, cosine]``).
Whether the backbone started from pretrained weights is its own ``pretrained`` column
(yes / no / the weights file's name) rather than folded into the backbone name, so the
backbone column stays a timm name that can be filtered and grouped on. The ``data`` column
is the fingerprint of the data the row's runs read (its files' paths, labels, boxes and
sizes); runs of one dataset folder that read two versions of it are two rows, their
dataset labelled ``[data <fingerprint>]``, and a warning says so.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import pandas as pd

from fgvcbench.errors import UserError
from fgvcbench.plugins import suggest
from fgvcbench.report.ablation import mark_shared, shared_by, timed
from fgvcbench.report.stats import csv_text, delta_text, fixed, format_mean_std, mean_std_ci, p_text, spread
from fgvcbench.spec import canonical_json, config_key, dataset_label, portable, pretrained_label
from fgvcbench.store import data_counts, record_data, record_problem

FORMATS = {"csv": None, "md": "pipe", "github": "github", "latex": "latex_booktabs"}
COLUMNS = ["dataset", "backbone", "pretrained", "method", "variant", "scale", "config", "config_differs", "data",
           "test_selected", "n", "seeds",
           "top1_mean", "top1_std", "top1_ci95", "top1_by_seed", "top1_last_mean", "mean_class_acc_mean",
           "train_seconds_mean", "train_seconds_total_mean", "device_seconds_total_mean", "images_per_second_mean",
           "device_shared_by", "failed", "metrics_partial"]


def load_records(*results_dirs: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """All records under ``<dir>/**/runs/*.json``, de-duplicated by run — its portable spec,
    what the run id hashes, so no seed counts twice even under two ids: the same run on two
    machines is one run, and its result (ok or diverged) wins over a failure — a retry that
    crashed does not erase a finished run —, then the most recently finished wins.

    A results folder is shared and merged by hand, so a bad file must not take the whole
    leaderboard down: unparseable JSON and records without the fields a row needs become
    warnings, and ``*.tmp`` files (half-written records) never match the pattern.
    """
    by_run: dict[str, dict] = {}
    warnings: list[str] = []
    for d in results_dirs:
        folder = Path(d)
        # the records folder itself (what `run` prints) is as good as the results folder above it
        # what `run --rerun` moved aside (<output>/replaced/<stamp>/runs/) is not a result of this folder
        paths = folder.glob("*.json") if folder.name == "runs" else \
            (p for runs in _runs_folders(folder) for p in runs.glob("*.json")
             if p.relative_to(folder).parts[-4:-3] != ("replaced",))
        for path in sorted(paths):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:   # RecursionError: JSON nested past Python's stack
                why = getattr(exc, "strerror", None) or exc.__class__.__name__   # Permission denied, JSONDecodeError
                warnings.append(f"skipped unreadable record {path}: {why}")
                continue
            problem = record_problem(record)
            if problem:
                warnings.append(f"skipped malformed record {path}: {problem}")
                continue
            # one run is its portable spec, in full (what its id hashes): so also a run recorded
            # under an older id scheme (e.g. a checkpoint's path in the id) never counts twice —
            # on one version of its data (the id names a folder, not what it holds)
            key = (canonical_json(portable(record["spec"])), _version(record))
            old = by_run.get(key)
            if old is None or _precedence(record) >= _precedence(old):
                by_run[key] = record
    records, apart = _data_versions(by_run)
    return records, warnings + apart


def _version(record: dict) -> str | None:
    data = record_data(record)
    return data["fingerprint"] if data else None


def _data_versions(by_run: dict[tuple[str, str | None], dict]) -> tuple[list[dict], list[str]]:
    """The records, with a dataset whose runs read two versions of its data (the same name,
    options and folder name; other files) told apart: each of its records' ``spec.dataset``
    gains ``data`` (the fingerprint's first 8 characters, or ``unknown`` for a record made
    before records kept it), which its label, config and setup then carry — so no row
    averages, and no Δ pairs, seeds of two versions. A run recorded once without its data and
    once with it is one run; records without it, of a dataset all of whose other records
    read one version, are taken as that version. One warning per dataset told apart."""
    runs: dict[str, dict[str | None, dict]] = {}
    for (key, version), record in by_run.items():
        runs.setdefault(key, {})[version] = record
    records = []
    for versions in runs.values():
        known = [v for v in versions if v is not None]
        if None in versions and len(known) == 1:   # one run, recorded before and after records kept their data
            older = versions.pop(None)
            if _precedence(older) > _precedence(versions[known[0]]):
                versions[known[0]] = older
        records += versions.values()
    by_dataset: dict[str, list[dict]] = {}
    for record in records:
        by_dataset.setdefault(canonical_json(portable(record["spec"])["dataset"]), []).append(record)
    out, warnings = [], []
    for group in by_dataset.values():
        versions = {}
        for record in group:
            if _version(record) is not None:
                versions.setdefault(_version(record), []).append(record)
        if len(versions) < 2:
            out += group
            continue
        for record in group:
            tag = (_version(record) or "unknown")[:8]
            out.append({**record, "spec": {**record["spec"], "dataset": {**record["spec"]["dataset"], "data": tag}}})
        label = dataset_label(group[0]["spec"]["dataset"])
        unknown = sum(_version(r) is None for r in group)
        warnings.append(f"{label}: its runs read {len(versions)} versions of its data, shown apart as "
                        + ", ".join(f"data {v[:8]} ({len(rs)} run{'s' if len(rs) != 1 else ''}; "
                                    f"{data_counts(record_data(rs[0]))})" for v, rs in versions.items())
                        + (f" and data unknown ({unknown} older record{'s' if unknown != 1 else ''})" if unknown else "")
                        + " — compare runs of one version; rerun the others on the data you keep")
    return out, warnings


MAX_DEPTH = 6          # results/<machine>/<suite>/runs is 3; `replaced/<time>/runs` under it 5
MAX_FOLDERS = 20_000   # a results tree is far smaller: more is a wrong argument (`leaderboard /`)


def _runs_folders(folder: Path) -> list[Path]:
    """The ``runs/`` folders at most ``MAX_DEPTH`` levels under ``folder`` (hidden folders
    and symlinked ones skipped); a tree of more than ``MAX_FOLDERS`` folders is refused, so
    a mistyped argument such as ``/`` or ``~`` is one line, not a walk of the whole disk."""
    from fgvcbench.errors import UserError
    found, seen = [], 0
    for top, dirs, _ in os.walk(folder):
        seen += len(dirs)
        if seen > MAX_FOLDERS:
            raise UserError(f"{folder} holds more than {MAX_FOLDERS:,} folders — pass a results folder (a suite's "
                            f"output, or the folder that holds several)")
        depth = len(Path(top).relative_to(folder).parts)
        if Path(top).name == "runs" and top != str(folder):
            found.append(Path(top))
            dirs[:] = []   # records are files; nothing below runs/ is one
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
    return found


_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def _finished(record: dict) -> datetime:
    """``provenance.finished`` as an aware datetime, so machines writing different UTC
    offsets compare by instant, not by string; naive stamps are taken as UTC, missing or
    unparseable ones lose to any real one."""
    stamp = (record.get("provenance") or {}).get("finished")
    try:
        when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return _EPOCH
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _precedence(record: dict) -> tuple[bool, datetime]:
    return record.get("status") in ("ok", "diverged"), _finished(record)


def _seed_key(record: dict) -> tuple:
    seed = record["spec"].get("seed")
    return (0, seed, "") if isinstance(seed, int) else (1, 0, str(seed))


def _metric(records: list[dict], key: str, section: str = "metrics") -> list[float]:
    out = []
    for r in records:
        v = _number((r.get(section) or {}).get(key))
        if v is not None:
            out.append(v)
    return out


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) else None


def _train_seconds_total(records: list[dict], per_device: bool = False) -> list[float]:
    """Each run's training seconds, cached phases included (records older than that field
    have only ``train_seconds``); ``per_device`` multiplies by the devices it trained on
    (torchrun's world size): GPU-seconds on CUDA."""
    out = []
    for r in records:
        cost = r.get("cost") or {}
        seconds = _number(cost.get("train_seconds_total", cost.get("train_seconds")))
        if seconds is None:
            continue
        world = r["spec"].get("world_size", 1)
        out.append(seconds * (world if per_device and isinstance(world, int) and world > 0 else 1))
    return out


def metric_names(records: Iterable[dict]) -> list[str]:
    """The numeric metrics that some finished run recorded: what ``--metrics`` can ask for."""
    names = set()
    for r in records:
        if r.get("status") == "ok":
            names |= {k for k, v in (r.get("metrics") or {}).items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(names)


# metrics every table shows as columns of their own
BUILT_IN_METRICS = ("top1", "top1_last", "mean_class_acc")


def _names_text(names: list[str], most: int = 12) -> str:
    """Metric names for a one-line message: at most ``most``, each short and on one line."""
    shown = [n if n.isprintable() and len(n) <= 40 else repr(n[:40]) + ("…" if len(n) > 40 else "")
             for n in names[:most]]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return (", ".join(shown) or "none") + more


def check_extra_metrics(records: list[dict], extra: Iterable[str]) -> None:
    """Refuse a ``--metrics`` name no finished run recorded (it would be an empty column)."""
    known = metric_names(records)
    for name in extra:
        if name in BUILT_IN_METRICS:
            others = [m for m in known if m not in BUILT_IN_METRICS]
            raise UserError(f"--metrics {name}: the table has that column already ({name}_mean) — --metrics adds "
                            f"other recorded metrics: {_names_text(others) if others else 'none recorded'}")
        if name not in known:
            kinds = {type(r["metrics"][name]).__name__ for r in records
                     if r.get("status") == "ok" and isinstance(r.get("metrics"), dict) and name in r["metrics"]}
            if kinds:   # recorded, but not as one number: no column can hold it
                raise UserError(f"--metrics {name}: the runs recorded it as {' / '.join(sorted(kinds))}, not a number, "
                                f"and only numbers become columns — numeric metrics: {_names_text(known)}")
            close = suggest(name, known)
            raise UserError(f"no finished run recorded the metric {name!r} — "
                            + (f"did you mean {close!r}? " if close else "")
                            + f"recorded: {_names_text(known)}")


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def build_leaderboard(records: Iterable[dict], extra_metrics: Iterable[str] = ()) -> pd.DataFrame:
    """One row per configuration (see the module docstring), sorted by dataset, then
    top-1 mean descending. Only ``status == "ok"`` runs feed the metrics; failed and
    diverged runs are counted in ``failed`` so a group with only failures still shows
    up (n = 0, NaN metrics) instead of vanishing."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(config_key(r["spec"]), []).append(r)
    rows = []
    for config, recs in groups.items():
        spec = recs[0]["spec"]
        ok = sorted((r for r in recs if r.get("status") == "ok"), key=_seed_key)
        top1 = mean_std_ci(_metric(ok, "top1"))
        recorded = {name: _metric(ok, name) for name in ("top1_last", "mean_class_acc", *extra_metrics)}
        rows.append({
            "dataset": dataset_label(spec["dataset"]), "backbone": spec["backbone"]["name"],
            "pretrained": pretrained_label(spec["backbone"].get("pretrained")),
            "method": spec["method"], "variant": spec.get("variant", "default"), "scale": spec.get("scale", ""),
            "config": config,
            # the fingerprint of the data its runs read (one version per row: load_records); blank for
            # records made before records kept it
            "data": next((v for v in map(_version, recs) if v is not None), ""),
            # the seed codes' protocol (FineRNet, SimTrans `selection: test`): picked on the test split
            "test_selected": (spec.get("params") or {}).get("selection") == "test",
            "n": len(ok), "seeds": ",".join(str(r["spec"].get("seed")) for r in ok),
            "top1_mean": top1.mean, "top1_std": top1.std, "top1_ci95": top1.half_width,
            # each seed's top-1, so a reader can pair, test or plot them from the CSV alone
            "top1_by_seed": ";".join(f"{r['spec'].get('seed')}:{float(r['metrics']['top1']):.4f}" for r in ok
                                     if _number((r.get("metrics") or {}).get("top1")) is not None),
            "top1_last_mean": _mean(recorded["top1_last"]),
            "mean_class_acc_mean": _mean(recorded["mean_class_acc"]),
            "train_seconds_mean": _mean(_metric(ok, "train_seconds", "cost")),
            "train_seconds_total_mean": _mean(_train_seconds_total(ok)),
            # what the result cost its devices: GPU-seconds on CUDA
            "device_seconds_total_mean": _mean(_train_seconds_total(ok, per_device=True)),
            "images_per_second_mean": _mean(_metric(ok, "images_per_second", "cost")),
            # times of runs that shared their device (--workers N) are not those of a run alone
            "device_shared_by": shared_by(ok),
            "failed": len(recs) - len(ok),
        })
        for name in extra_metrics:  # method-specific metrics, mean and std over the ok seeds
            summary = mean_std_ci(recorded[name])
            rows[-1][f"{name}_mean"], rows[-1][f"{name}_std"] = summary.mean, summary.std
        # a metric some ok seeds did not record (an older record, a method that records it
        # on some runs only) is a mean over fewer seeds than n: `metric:k/n`, `;`-separated
        rows[-1]["metrics_partial"] = ";".join(f"{name}:{len(values)}/{len(ok)}" for name, values in recorded.items()
                                               if 0 < len(values) < len(ok))
    differs = _config_differences({config: recs[0]["spec"] for config, recs in groups.items()},
                                  {row["config"]: tuple(row[k] for k in NAMES) for row in rows})
    for row in rows:
        row["config_differs"] = differs.get(row["config"], "")
    extra_columns = [f"{n}_{s}" for n in extra_metrics for s in ("mean", "std")]
    df = pd.DataFrame(rows, columns=COLUMNS + extra_columns)
    if len(df):
        df = df.sort_values(["dataset", "top1_mean", "method", "variant"], ascending=[True, False, True, True],
                            na_position="last", kind="mergesort").reset_index(drop=True)
    return df


NAMES = ("dataset", "backbone", "pretrained", "method", "variant", "scale")   # what a table row is named by


def _flat(value, prefix: str = "") -> dict[str, tuple[str, str]]:
    """A spec as dotted keys → (the value as people write it, e.g. ``params.steps``:
    ``[base, cosine]``, its canonical JSON); a list stays one value, an empty mapping none."""
    if isinstance(value, dict):
        out: dict[str, tuple[str, str]] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: (_shown(value), canonical_json(value))}


def _shown(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ", ".join(map(_shown, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, default=str)


def _config_differences(specs: dict[str, dict], names: dict[str, tuple]) -> dict[str, str]:
    """config → what sets it apart from the other configurations a table would name alike
    (``names``: config → its row's names): each spec field whose value differs among them,
    ``key=value`` joined by ``; `` (``–`` where a configuration lacks the field; as JSON,
    strings quoted, where two values would read alike, ``1`` and ``"1"``)."""
    by_names: dict[tuple, list[str]] = {}
    for config, named in names.items():
        by_names.setdefault(named, []).append(config)
    out: dict[str, str] = {}
    for configs in by_names.values():
        if len(configs) < 2:
            continue
        flat = {c: _flat({k: v for k, v in portable(specs[c]).items() if k != "seed"}) for c in configs}
        keys = sorted({k for f in flat.values() for k in f})
        absent = ("–", None)
        shown: dict[str, int] = {}   # a varying key → 0: as people write it, 1: as JSON (reads alike otherwise)
        for k in keys:
            values = {flat[c].get(k, absent) for c in configs}
            if len({v[1] for v in values}) > 1:
                shown[k] = 0 if len({v[0] for v in values}) == len(values) else 1
        for c in configs:
            out[c] = "; ".join(f"{k}={flat[c][k][i] if k in flat[c] else '–'}" for k, i in shown.items())
    return out


def config_notes(df: pd.DataFrame) -> list[str]:
    """One line per configuration a printed table tells apart by its config hash alone:
    what differs from the rows named alike (the ``config_differs`` column)."""
    return [f"config {r.config} ({r.method}:{r.variant} on {r.dataset} · {r.backbone}): {r.config_differs}"
            for r in df.itertuples(index=False) if r.config_differs]


def write_leaderboard_csv(df: pd.DataFrame, results_dir: str | os.PathLike) -> Path:
    """``<results_dir>/leaderboard.csv``, written to a temp file in the same folder and
    moved into place, so a reader (or a crash mid-write) never sees half a table."""
    path = Path(results_dir) / "leaderboard.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".leaderboard.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(csv_text(df))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _num(value: float, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fixed(value, digits)


def _over(row, metric: str) -> str:
    """`` (k/n seeds)`` where only k of the row's n ok seeds recorded ``metric``."""
    for part in str(getattr(row, "metrics_partial", "") or "").split(";"):
        name, _, count = part.rpartition(":")
        if name == metric:
            return f" ({count} seeds)"
    return ""


def _is_time(metric: str) -> bool:
    return metric.endswith(("seconds", "per_second", "_ms"))


def variant_label(row) -> str:
    """A row's variant as people read it: test-selected rows say so."""
    return f"{row.variant} (test-selected)" if getattr(row, "test_selected", False) else row.variant


def human_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and string rows for people: top-1 as mean ± std, its 95 % CI, cost. The
    scale is shown when rows of several scales share the table, the config hash when rows
    share all their names."""
    show_scale = df["scale"].nunique() > 1
    show_config = df.duplicated(list(NAMES), keep=False).any()
    headers = ["dataset", "backbone", "pretrained", "method", "variant"] + (["scale"] if show_scale else []) + \
              (["config"] if show_config else []) + \
              ["n", "top-1 %", "95% CI", "last top-1", "per-class", "train s", "img/s", "failed"]
    rows = []
    for r in df.itertuples(index=False):
        rows.append([r.dataset, r.backbone, r.pretrained, r.method, variant_label(r)] +
                    ([r.scale] if show_scale else []) + ([r.config] if show_config else []) +
                    [str(r.n), format_mean_std(r.top1_mean, r.top1_std),
                     "–" if math.isnan(r.top1_ci95) else f"±{spread(r.top1_ci95)}",
                     _num(r.top1_last_mean, 2) + _over(r, "top1_last"),
                     _num(r.mean_class_acc_mean, 2) + _over(r, "mean_class_acc"),
                     timed(r.train_seconds_mean, ".1f", r.device_shared_by),
                     timed(r.images_per_second_mean, ".0f", r.device_shared_by), str(r.failed)])
    if "delta_mean" in df.columns:
        headers += [f"Δ vs {df.attrs.get('baseline', 'baseline')} (95% CI)", "p (paired t)", "pairs"]
        other = "delta_protocol" in df.columns and (df["delta_protocol"] != "").any()
        headers += ["protocol vs baseline"] if other else []
        for row, r in zip(rows, df.itertuples(index=False)):
            row += ["baseline", "", ""] if r.is_baseline else \
                [delta_text(r.delta_mean, r.delta_ci95, r.delta_n), p_text(r.delta_p), str(r.delta_n) if r.baseline else ""]
            row += [r.delta_protocol or ("same" if r.baseline and not r.is_baseline else "")] if other else []
    extras = [c[:-5] for c in df.columns if c.endswith("_mean") and c[:-5] + "_std" in df.columns
              and c not in ("top1_mean",) and not c.startswith(("top1_last", "mean_class_acc", "train_seconds",
                                                                 "images_per_second", "delta_"))]
    if extras:
        headers += extras
        for row, (_, r) in zip(rows, df.iterrows()):
            # a method's own timings (e.g. FineRNet's mining_seconds) are marked as the cost columns are
            row += [mark_shared(format_mean_std(r[f"{m}_mean"], r[f"{m}_std"]),
                                r.device_shared_by if _is_time(m) else 1) + _over(r, m) for m in extras]
    return headers, rows


def render(df: pd.DataFrame, fmt: str) -> str:
    """``csv`` is the raw frame (for tools); ``md``/``github``/``latex`` are the human
    table of ``human_table`` through tabulate's pipe/github/latex_booktabs."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return csv_text(df)
    from tabulate import tabulate
    headers, rows = human_table(df)
    if fmt != "latex":
        return tabulate(rows, headers=headers, tablefmt=FORMATS[fmt], disable_numparse=True)
    # numbers right-aligned, as a paper sets them
    align = ["left" if h in TEXT_COLUMNS else "right" for h in headers]
    return latex_symbols(tabulate(rows, headers=headers, tablefmt=FORMATS[fmt], disable_numparse=True,
                                  colalign=align))


TEXT_COLUMNS = ("dataset", "backbone", "pretrained", "method", "variant", "scale", "config", "pipeline",
                "protocol vs baseline")


# what the tables print that LaTeX's default UTF-8 input does not typeset (Δ) or sets as text
LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "·": r"$\cdot$", "–": "--", "→": r"$\rightarrow$",
                 "ρ": r"$\rho$", "α": r"$\alpha$", "β": r"$\beta$", "μ": r"$\mu$", "×": r"$\times$"}


def latex_symbols(text: str) -> str:
    """A LaTeX table (tabulate has escaped ``_``, ``%``…) with the symbols the cells use as
    math, and a negative number's sign as a minus (not a hyphen: ``707-320`` stays), so it
    compiles and reads as pasted into a paper (with ``\\usepackage{booktabs}``)."""
    import re
    for symbol, macro in LATEX_SYMBOLS.items():
        text = text.replace(symbol, macro)
    return re.sub(r"(?<![\w.$])-(?=\d)", r"$-$", text)


def render_rich_table(df: pd.DataFrame, title: str = "leaderboard"):
    """The ``md`` table as a ``rich.table.Table`` for the terminal (same headers, cells)."""
    from rich.markup import escape
    from rich.table import Table
    headers, rows = human_table(df)
    table = Table(title=escape(title))   # names and titles are text: "[old]" in a path is not markup
    for h in headers:
        table.add_column(h, justify="left" if h in TEXT_COLUMNS else "right")
    for row in rows:
        table.add_row(*(escape(str(cell)) for cell in row))
    return table


def pivot_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The papers' shape: per backbone, one row per method[variant] (pipeline) and one
    column per dataset, each cell ``mean ± std (n)`` (and its failed or diverged runs).
    Rows that would share a cell never overwrite each other: the label names what tells
    them apart — the weights and the scale where they vary, else the config hash."""
    out = {}
    for backbone, part in df.groupby("backbone", sort=False):
        vary = [c for c in ("pretrained", "scale") if part[c].nunique() > 1]
        labels = []
        for r in part.itertuples(index=False):
            label = r.method if variant_label(r) == "default" else f"{r.method} [{variant_label(r)}]"
            labels.append(label + "".join(f" · {c} {getattr(r, c)}" for c in vary))
        part = part.assign(pivot_label=labels)
        clash = part.duplicated(["pivot_label", "dataset"], keep=False)
        part.loc[clash, "pivot_label"] = part.loc[clash, "pivot_label"] + " · config " + part.loc[clash, "config"]
        cells: dict[str, dict[str, str]] = {}
        for r in part.itertuples(index=False):
            failed = f"; {r.failed} failed" if r.failed else ""
            delta = " · baseline" if getattr(r, "is_baseline", False) else ""
            if "delta_mean" in part.columns and r.baseline and r.delta_n:
                delta = f" · Δ {delta_text(r.delta_mean, r.delta_ci95, r.delta_n)}" + \
                    ("" if math.isnan(r.delta_p) else f" (p {p_text(r.delta_p)})") + \
                    (f" over {r.delta_n} pair{'s' if r.delta_n != 1 else ''}" if r.delta_n != r.n else "") + \
                    (f" · {r.delta_protocol}" if getattr(r, "delta_protocol", "") else "")
            cells.setdefault(r.pivot_label, {})[r.dataset] = \
                f"{format_mean_std(r.top1_mean, r.top1_std)} ({r.n}{failed}){delta}"
        datasets = list(dict.fromkeys(part["dataset"]))
        out[backbone] = pd.DataFrame([[label] + [row.get(d, "–") for d in datasets] for label, row in cells.items()],
                                     columns=["pipeline"] + datasets)
    return out


def render_pivot(df: pd.DataFrame, fmt: str, markdown: bool = False) -> str:
    """The pivot tables, one per backbone under its name (``markdown``: a bold line and a
    blank line, so the table renders in a Markdown report)."""
    from tabulate import tabulate
    tables = pivot_tables(df)
    if fmt == "csv":   # one plain CSV (no comment lines): the backbone is a column
        frames = [table.assign(backbone=backbone) for backbone, table in tables.items()]
        if not frames:
            return ""
        whole = pd.concat(frames, ignore_index=True).fillna("–")
        columns = ["backbone", "pipeline"] + [c for c in whole.columns if c not in ("backbone", "pipeline")]
        return whole[columns].to_csv(index=False).rstrip("\n")
    parts = []
    for backbone, table in tables.items():
        if fmt == "latex":   # the backbone as a comment: the block pastes into a paper as it is
            align = ["left"] + ["right"] * (len(table.columns) - 1)
            parts.append(f"% {backbone}\n" + latex_symbols(tabulate(table.values.tolist(), headers=list(table.columns),
                                                                    tablefmt=FORMATS[fmt], disable_numparse=True,
                                                                    colalign=align)))
        else:
            parts.append((f"**{backbone}**\n\n" if markdown else f"{backbone}\n")
                         + tabulate(table.values.tolist(), headers=list(table.columns),
                                    tablefmt=FORMATS.get(fmt) or "github", disable_numparse=True))
    return "\n\n".join(parts)
