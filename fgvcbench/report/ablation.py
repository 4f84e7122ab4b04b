"""Recipe-ablation tables: the article's shape (step, accuracy, incremental and absolute
gain, p-value of the incremental step, cost) and one-step paired comparisons.

Rows pair runs by seed: an incremental gain compares a row with the row before it on the
same seeds, so the paired t-test (and Wilcoxon) see only the step's effect, not the
seed-to-seed spread. The rows of one table are runs of one setup (:func:`ablation_config`:
everything but the seed and the step list), and every row reads the seeds that all its
cumulative rows finished, so each row's mean and the gains beside it are over the same seeds.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Iterable

import pandas as pd

from fgvcbench.report.stats import fixed, mean_std_ci, p_text, paired_difference, signed, spread
from fgvcbench.spec import config_key


def ablation_config(spec: dict) -> str:
    """What the rows of one ablation table share: a short hash of the run's spec without
    its seed, step list (and the variant naming it), suite and data root — dataset options,
    weights, scale, recipe and the method's other params all enter it."""
    params = {k: v for k, v in (spec.get("params") or {}).items() if k != "steps"}
    return config_key({**{k: v for k, v in spec.items() if k != "variant"}, "params": params})


def _matching(records: list[dict], method: str, dataset: str, backbone: str, steps: list[str], *,
              scale: str | None = None, seeds: Iterable[int] | None = None,
              config: str | None = None) -> list[dict]:
    wanted = None if seeds is None else set(seeds)
    out = []
    for r in records:
        s = r["spec"]
        if (s["method"] == method and s["dataset"]["name"] == dataset and s["backbone"]["name"] == backbone
                and (s.get("params") or {}).get("steps") == steps and (scale is None or s.get("scale") == scale)
                and (wanted is None or s["seed"] in wanted) and (config is None or ablation_config(s) == config)):
            out.append(r)
    return out


def _ok_by_seed(matched: list[dict], what: str) -> dict[int, dict]:
    """The finished (ok) runs among one row's ``matched`` records, by seed; they must be of
    one setup: a ValueError says so otherwise, never a silent mix."""
    runs = [r for r in matched if r.get("status") == "ok"]
    setups = {ablation_config(r["spec"]) for r in runs}
    if len(setups) > 1:
        raise ValueError(f"the runs of {what} come from {len(setups)} setups "
                         "(scale, weights, recipe or dataset options differ): give the one to tabulate")
    return {r["spec"]["seed"]: r for r in runs}


def _by_seed(records: list[dict], method: str, dataset: str, backbone: str, steps: list[str], *,
             scale: str | None = None, seeds: Iterable[int] | None = None,
             config: str | None = None) -> dict[int, dict]:
    """The finished runs of one row by seed; with ``scale`` / ``seeds`` / ``config``
    (:func:`ablation_config`) only those (a results folder may also hold runs of another
    scale or setup, or seeds another command added). Without ``config`` the matching runs
    must be of one setup (:func:`_ok_by_seed`)."""
    return _ok_by_seed(_matching(records, method, dataset, backbone, steps, scale=scale, seeds=seeds, config=config),
                       f"{method} {steps} on {dataset} · {backbone}")


def run_seconds(record: dict) -> float:
    """What a run cost its devices: ``device_seconds`` (wall × devices: GPU-seconds on
    CUDA), or the wall seconds of records written before that field existed."""
    cost = record.get("cost") or {}
    value = cost.get("device_seconds") or cost.get("wall_seconds")
    return float(value) if value else math.nan


def shared_by(records: Iterable[dict]) -> int:
    """The most runs that shared one device at once among ``records`` (``fgvcbench run
    --workers N``); 1 when each was timed alone."""
    return max((int((r.get("cost") or {}).get("device_shared_by") or 1) for r in records), default=1)


def mark_shared(text: str, shared: int) -> str:
    """A time or rate cell's text; runs timed while ``shared`` > 1 shared the device say so."""
    return f"{text} (shared by {shared})" if shared > 1 and text != "–" else text


def timed(value: float, fmt: str, shared: int) -> str:
    return mark_shared(_f(value, fmt), shared)


def seconds_label(devices) -> str:
    """The cost column's name: GPU-seconds when every run ran on CUDA."""
    devices = [d for d in devices if d]
    if devices and all(d.startswith("cuda") for d in devices):
        return "GPU s / run"
    return "CPU s / run" if devices and all(d == "cpu" for d in devices) else "device s / run"


def compare_sides(without: dict[int, dict], with_: dict[int, dict]) -> dict[str, Any]:
    """Paired Δ top-1 (with − without) over the seeds both sides finished."""
    seeds = sorted(set(without) & set(with_))
    a = [without[s]["metrics"]["top1"] for s in seeds]
    b = [with_[s]["metrics"]["top1"] for s in seeds]
    paired = paired_difference(a, b) if seeds else None
    cost = lambda side: mean_std_ci([run_seconds(side[s]) for s in seeds]).mean  # noqa: E731
    devices = [(side[s].get("provenance") or {}).get("device", "") for side in (without, with_) for s in seeds]
    return {"seeds": seeds, "without": mean_std_ci(a), "with": mean_std_ci(b), "paired": paired,
            "cost_without": cost(without) if seeds else math.nan, "cost_with": cost(with_) if seeds else math.nan,
            "cost_label": seconds_label(devices)}


def ablation_table(records: list[dict], plan, dataset: str, backbone: str, *, scale: str | None = None,
                   seeds: Iterable[int] | None = None, config: str | None = None) -> pd.DataFrame:
    """One row per cumulative prefix of ``plan.order``, then one per extra step on top;
    ``scale`` / ``seeds`` / ``config``: only runs of that scale, those seeds and that setup
    (:func:`_by_seed`). Every row reads only the seeds that each cumulative row with any
    finished run has finished, so a row's mean and its paired gains share their seeds;
    ``df.attrs["seeds"]`` lists them, ``df.attrs["left_out"]`` the finished seeds that
    are not among them and ``df.attrs["not_yet"]`` the rows with no finished run. ``failed`` counts a row's failed or diverged runs."""
    by_row = []   # (label, its ok runs by seed, its failed or diverged runs)
    for label, steps in plan.rows():
        matched = _matching(records, plan.method, dataset, backbone, steps, scale=scale, seeds=seeds, config=config)
        by_row.append((label, _ok_by_seed(matched, f"{plan.method} {steps} on {dataset} · {backbone}"),
                       [r for r in matched if r.get("status") != "ok"]))
    setups = {ablation_config(r["spec"]) for _, runs, _ in by_row for r in runs.values()}
    if len(setups) > 1:   # each row is of one setup (_ok_by_seed); the rows must share it too
        raise ValueError(f"the rows of the {plan.method} ablation on {dataset} · {backbone} come from {len(setups)} "
                         "setups (scale, weights, recipe or dataset options differ): give the one to tabulate")
    finished = [set(runs) for label, runs, _ in by_row if not label.startswith("+") and runs]
    common = set.intersection(*finished) if finished else set()
    everything = set().union(*(set(runs) for _, runs, _ in by_row))
    rows, first, previous, full = [], None, None, None
    short = []   # extra rows with only some of the shared seeds: their mean and gains are over those
    for label, runs, failed in by_row:
        runs = {s: r for s, r in runs.items() if s in common}
        if runs and len(runs) < len(common):
            short.append((label, sorted(runs)))
        acc = mean_std_ci([r["metrics"]["top1"] for r in runs.values()])
        reference = full if label.startswith("+") else previous
        inc = compare_sides(reference, runs) if reference is not None else None
        absolute = compare_sides(first, runs) if first is not None else None
        seconds = [(r.get("cost") or {}).get("train_seconds") for r in runs.values()
                   if (r.get("cost") or {}).get("train_seconds")]
        device_seconds = [v for v in (run_seconds(r) for r in runs.values()) if not math.isnan(v)]
        devices = {(r.get("provenance") or {}).get("device", "") for r in runs.values()}
        rows.append({
            "step": label, "n": acc.n, "failed": len(failed), "top1_mean": acc.mean, "top1_std": acc.std,
            "incremental": inc["paired"].mean_delta if inc and inc["paired"] else math.nan,
            "incremental_ci95": (inc["paired"].ci_high - inc["paired"].mean_delta) if inc and inc["paired"] else math.nan,
            "incremental_p": inc["paired"].p_value if inc and inc["paired"] else math.nan,
            "absolute": absolute["paired"].mean_delta if absolute and absolute["paired"] else math.nan,
            "train_seconds": sum(seconds) / len(seconds) if seconds else math.nan,
            "device_seconds": sum(device_seconds) / len(device_seconds) if device_seconds else math.nan,
            "device": ",".join(sorted(d for d in devices if d)), "shared_by": shared_by(runs.values()),
            "steps": " → ".join(steps),
            # what the row is over: its seeds, and its configuration (the leaderboard's config column)
            "seeds": ",".join(map(str, sorted(runs, key=str))),
            "config": config_key(next(iter(runs.values()))["spec"]) if runs else "",
        })
        if first is None:
            first = runs
        if not label.startswith("+"):
            previous = full = runs
    df = pd.DataFrame(rows)
    df.attrs["seeds"], df.attrs["left_out"] = sorted(common), sorted(everything - common)
    # rows with no finished run yet (an interrupted or partial --only pass): the seeds line
    # must not claim they share the others' seeds
    df.attrs["not_yet"] = [label for label, runs, _ in by_row if not set(runs) & common] if common else []
    df.attrs["short"] = short
    return df


def _f(value: float, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def render_ablation(df: pd.DataFrame, tablefmt: str = "github") -> str:
    """The table, then a line naming its seeds (and the finished seeds it left out)."""
    from tabulate import tabulate
    rows = [[r.step, f"{'–' if math.isnan(r.top1_mean) else fixed(r.top1_mean)} ± {spread(r.top1_std)} ({r.n})"
             + (f", {r.failed} failed" if getattr(r, "failed", 0) else ""),
             signed(r.incremental) + (f" ±{spread(r.incremental_ci95)}" if not math.isnan(r.incremental_ci95) else ""),
             signed(r.absolute), p_text(r.incremental_p), timed(r.device_seconds, ".0f", r.shared_by)]
            for r in df.itertuples(index=False)]
    devices = [d for value in df["device"] for d in str(value).split(",")] if "device" in df else []
    headers = ["step", "top-1 % mean ± std (n)", "incremental (95% CI)", "absolute", "p (paired t)",
               seconds_label(devices)]
    table = tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)
    return table + "\n" + seeds_line(df)


def seeds_line(df: pd.DataFrame) -> str:
    seeds, left_out, not_yet, short = (df.attrs.get(k, []) for k in ("seeds", "left_out", "not_yet", "short"))
    line = f"Seeds: {', '.join(map(str, seeds)) or '–'} " + \
        ("(every row, paired by seed)." if not not_yet and not short else
         "(every row with a successful run, paired by seed)." if not short else
         "(paired by seed; " + "; ".join(f"{label} over seed{'s' if len(its) > 1 else ''} "
                                         f"{', '.join(map(str, its))} only, its gains too" for label, its in short)
         + ").")
    if not_yet:
        line += f" No successful run yet: {', '.join(not_yet)}."
    if left_out:
        line += (f" Left out: seed {', '.join(map(str, left_out))}, not finished by every cumulative row"
                 " (failed, diverged or not run yet).")
    return line


def write_ablation_chart(df: pd.DataFrame, path, title: str) -> bool:
    """The article's closing figure: cumulative top-1 per step. False if matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cumulative = df[~df["step"].str.startswith("+")]
    width = max(5, 1.1 * len(cumulative))   # inches; about 11 title characters to the inch at 10 pt
    fig, ax = plt.subplots(figsize=(width, 3.6))
    bars = ax.bar(range(len(cumulative)), cumulative["top1_mean"], yerr=cumulative["top1_std"].fillna(0), capsize=3,
                  color="#4c72b0")
    for bar, n in zip(bars, cumulative["n"]):
        if n < 2:   # no spread measured: hatched and named so, never a bar that looks like a zero std
            bar.set_hatch("//")
            bar.set_facecolor("#a6bddb")
    for i, (mean, std, inc) in enumerate(zip(cumulative["top1_mean"], cumulative["top1_std"].fillna(0),
                                             cumulative["incremental"])):
        if not math.isnan(inc):  # the incremental gain, above the error bar
            ax.annotate(signed(inc), (i, mean + std), ha="center", va="bottom", fontsize=8, xytext=(0, 3),
                        textcoords="offset points")
    ax.set_xticks(range(len(cumulative)), [step + (" (1 seed)" if n < 2 else "")
                                           for step, n in zip(cumulative["step"], cumulative["n"])],
                  rotation=30, ha="right")
    low = cumulative["top1_mean"].min()
    high = (cumulative["top1_mean"] + cumulative["top1_std"].fillna(0)).max()
    ax.set_ylim(max(0, low - 10), min(100, high + 4))
    ax.set_ylabel("top-1 % (mean ± std over seeds)")
    ax.set_title("\n".join(textwrap.wrap(title, int(width * 11))), fontsize=10)   # wrapped, not cut
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
