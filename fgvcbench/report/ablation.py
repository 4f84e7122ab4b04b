"""Recipe-ablation tables: the article's shape (step, accuracy, incremental and absolute
gain, p-value of the incremental step, cost) and one-step paired comparisons.

Rows pair runs by seed: an incremental gain compares a row with the row before it on the
same seeds, so the paired t-test (and Wilcoxon) see only the step's effect, not the
seed-to-seed spread.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd

from fgvcbench.report.stats import mean_std_ci, paired_difference


def _by_seed(records: list[dict], method: str, dataset: str, backbone: str, steps: list[str], *,
             scale: str | None = None, seeds: Iterable[int] | None = None) -> dict[int, dict]:
    """The finished runs of one row by seed; with ``scale`` / ``seeds`` only those (a results
    folder may also hold runs of another scale, or seeds another command added)."""
    wanted = None if seeds is None else set(seeds)
    out = {}
    for r in records:
        s = r["spec"]
        if (r.get("status") == "ok" and s["method"] == method and s["dataset"]["name"] == dataset
                and s["backbone"]["name"] == backbone and s["params"].get("steps") == steps
                and (scale is None or s.get("scale") == scale) and (wanted is None or s["seed"] in wanted)):
            out[s["seed"]] = r
    return out


def run_seconds(record: dict) -> float:
    """What a run cost its devices: ``device_seconds`` (wall × devices: GPU-seconds on
    CUDA), or the wall seconds of records written before that field existed."""
    cost = record.get("cost", {})
    value = cost.get("device_seconds") or cost.get("wall_seconds")
    return float(value) if value else math.nan


def shared_by(records: Iterable[dict]) -> int:
    """The most runs that shared one device at once among ``records`` (``fgvcbench run
    --workers N``); 1 when each was timed alone."""
    return max((int(r.get("cost", {}).get("device_shared_by") or 1) for r in records), default=1)


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
    devices = [side[s].get("provenance", {}).get("device", "") for side in (without, with_) for s in seeds]
    return {"seeds": seeds, "without": mean_std_ci(a), "with": mean_std_ci(b), "paired": paired,
            "cost_without": cost(without) if seeds else math.nan, "cost_with": cost(with_) if seeds else math.nan,
            "cost_label": seconds_label(devices)}


def ablation_table(records: list[dict], plan, dataset: str, backbone: str, *, scale: str | None = None,
                   seeds: Iterable[int] | None = None) -> pd.DataFrame:
    """One row per cumulative prefix of ``plan.order``, then one per extra step on top;
    ``scale`` / ``seeds``: only runs of that scale and those seeds (a suite's table)."""
    rows, first, previous, full = [], None, None, None
    for label, steps in plan.rows():
        runs = _by_seed(records, plan.method, dataset, backbone, steps, scale=scale, seeds=seeds)
        acc = mean_std_ci([r["metrics"]["top1"] for r in runs.values()])
        reference = full if label.startswith("+") else previous
        inc = compare_sides(reference, runs) if reference is not None else None
        absolute = compare_sides(first, runs) if first is not None else None
        seconds = [r["cost"].get("train_seconds") for r in runs.values() if r["cost"].get("train_seconds")]
        device_seconds = [v for v in (run_seconds(r) for r in runs.values()) if not math.isnan(v)]
        devices = {r["provenance"].get("device", "") for r in runs.values()}
        rows.append({
            "step": label, "n": acc.n, "top1_mean": acc.mean, "top1_std": acc.std,
            "incremental": inc["paired"].mean_delta if inc and inc["paired"] else math.nan,
            "incremental_ci95": (inc["paired"].ci_high - inc["paired"].mean_delta) if inc and inc["paired"] else math.nan,
            "incremental_p": inc["paired"].p_value if inc and inc["paired"] else math.nan,
            "absolute": absolute["paired"].mean_delta if absolute and absolute["paired"] else math.nan,
            "train_seconds": sum(seconds) / len(seconds) if seconds else math.nan,
            "device_seconds": sum(device_seconds) / len(device_seconds) if device_seconds else math.nan,
            "device": ",".join(sorted(d for d in devices if d)), "shared_by": shared_by(runs.values()),
            "steps": " → ".join(steps),
        })
        if first is None:
            first = runs
        if not label.startswith("+"):
            previous = full = runs
    return pd.DataFrame(rows)


def _f(value: float, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def render_ablation(df: pd.DataFrame, tablefmt: str = "github") -> str:
    from tabulate import tabulate
    rows = [[r.step, f"{_f(r.top1_mean, '.2f')} ± {_f(r.top1_std, '.2f')} ({r.n})",
             _f(r.incremental, "+.2f") + (f" ±{r.incremental_ci95:.2f}" if not math.isnan(r.incremental_ci95) else ""),
             _f(r.absolute, "+.2f"), _f(r.incremental_p, ".3f"), timed(r.device_seconds, ".0f", r.shared_by)]
            for r in df.itertuples(index=False)]
    devices = [d for value in df["device"] for d in str(value).split(",")] if "device" in df else []
    headers = ["step", "top-1 % mean ± std (n)", "incremental (95% CI)", "absolute", "p (paired t)",
               seconds_label(devices)]
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)


def write_ablation_chart(df: pd.DataFrame, path, title: str) -> bool:
    """The article's closing figure: cumulative top-1 per step. False if matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cumulative = df[~df["step"].str.startswith("+")]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(cumulative)), 3.6))
    ax.bar(range(len(cumulative)), cumulative["top1_mean"], yerr=cumulative["top1_std"].fillna(0), capsize=3,
           color="#4c72b0")
    for i, (mean, std, inc) in enumerate(zip(cumulative["top1_mean"], cumulative["top1_std"].fillna(0),
                                             cumulative["incremental"])):
        if not math.isnan(inc):  # the incremental gain, above the error bar
            ax.annotate(f"{inc:+.2f}", (i, mean + std), ha="center", va="bottom", fontsize=8, xytext=(0, 3),
                        textcoords="offset points")
    ax.set_xticks(range(len(cumulative)), cumulative["step"], rotation=30, ha="right")
    low = cumulative["top1_mean"].min()
    high = (cumulative["top1_mean"] + cumulative["top1_std"].fillna(0)).max()
    ax.set_ylim(max(0, low - 10), min(100, high + 4))
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
