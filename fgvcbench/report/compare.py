"""Method-vs-baseline tables: every leaderboard row against one baseline on the same setup.

Papers print "single-step 87.90 → FineRNet 88.44"; the honest version pairs the two by
seed (the seed-to-seed spread both share cancels) and says how sure the difference is.
"""

from __future__ import annotations

import math

import pandas as pd

from fgvcbench.errors import UserError
from fgvcbench.plugins import suggest
from fgvcbench.report.stats import paired_difference
from fgvcbench.spec import config_key, dataset_label, setup_key

BASELINE_COLUMNS = ["baseline", "is_baseline", "delta_n", "delta_mean", "delta_ci95", "delta_p", "delta_wilcoxon_p"]


def _parse_baseline(baseline: str) -> tuple[str, str | None, str | None]:
    """``method[:variant][@config]`` → (method, variant or None, config hash prefix or None)."""
    name, at, config = baseline.strip().partition("@")
    method, _, variant = name.partition(":")
    if not method or (at and not config):
        raise UserError(f"--baseline {baseline!r}: name a method, method:variant or method:variant@CONFIG "
                        f"(e.g. finetune:default; CONFIG is a row's config hash)")
    return method, variant or None, config or None


def add_baseline(df: pd.DataFrame, records: list[dict], baseline: str) -> pd.DataFrame:
    """``df`` with a paired comparison of every row against ``baseline`` (``method`` or
    ``method:variant``) on the same setup (:func:`setup_key`): Δ top-1 = row − baseline
    over the seeds both finished (``delta_n`` pairs), its mean, 95 % CI half-width, paired
    t-test p and Wilcoxon p (:func:`~fgvcbench.report.stats.paired_difference`). Rows
    whose setup has no baseline run, and the baseline's own row, get none. A baseline name
    that matches two configurations of one setup (two variants, or other params) is
    refused: which one the deltas are against must not be a guess."""
    method, variant, config_prefix = _parse_baseline(baseline)
    by_config: dict[str, list[dict]] = {}
    for r in records:
        by_config.setdefault(config_key(r["spec"]), []).append(r)

    def matches(config: str, spec: dict) -> bool:
        return spec["method"] == method and (variant is None or spec.get("variant", "default") == variant) \
            and (config_prefix is None or config.startswith(config_prefix))
    base_of: dict[str, list[str]] = {}   # setup -> the baseline's configs there
    for config, recs in by_config.items():
        if matches(config, recs[0]["spec"]):
            base_of.setdefault(setup_key(recs[0]["spec"]), []).append(config)
    if not base_of:
        known = sorted({f"{r['spec']['method']}:{r['spec'].get('variant', 'default')}" for r in records})
        close = suggest(baseline, known) or suggest(method, sorted({k.split(":")[0] for k in known}))
        raise UserError(f"--baseline {baseline!r} matches no run in these records — "
                        + (f"did you mean {close!r}? " if close else "") + f"they have: {', '.join(known)}")
    for setup, configs in base_of.items():
        if len(configs) > 1:
            spec = by_config[configs[0]][0]["spec"]
            names = ", ".join(sorted(f"{by_config[c][0]['spec'].get('variant', 'default')} (config {c})"
                                     for c in configs))
            raise UserError(f"--baseline {baseline!r} matches {len(configs)} configurations on "
                            f"{dataset_label(spec['dataset'])} · {spec['backbone']['name']}: {names} — "
                            f"name one as method:variant, or method:variant@CONFIG with the config hash")

    def ok_by_seed(config: str) -> dict:
        return {r["spec"].get("seed"): float(r["metrics"]["top1"]) for r in by_config.get(config, [])
                if r.get("status") == "ok"}
    label = (f"{method}:{variant}" if variant else method) + (f"@{config_prefix}" if config_prefix else "")
    columns = {c: [] for c in BASELINE_COLUMNS}
    nothing = [0, math.nan, math.nan, math.nan, math.nan]
    for config in df["config"]:
        recs = by_config.get(config) or []
        base = (base_of.get(setup_key(recs[0]["spec"])) or [None])[0] if recs else None
        if base is None:
            values = ["", False] + nothing
        elif base == config:
            values = [label, True] + nothing
        else:
            mine, theirs = ok_by_seed(config), ok_by_seed(base)
            seeds = sorted(set(mine) & set(theirs), key=str)   # the pairs, in any fixed order
            if seeds:
                pr = paired_difference([theirs[s] for s in seeds], [mine[s] for s in seeds])
                half = (pr.ci_high - pr.ci_low) / 2
                values = [label, False, pr.n, pr.mean_delta, half, pr.p_value, pr.wilcoxon_p]
            else:
                values = [label, False] + nothing
        for c, v in zip(BASELINE_COLUMNS, values):
            columns[c].append(v)
    out = df.copy()
    for c in BASELINE_COLUMNS:
        out[c] = columns[c]
    out.attrs["baseline"] = label
    return out


def baseline_note(df: pd.DataFrame) -> str:
    """The line under a table with a baseline: what Δ means and which seeds it pairs."""
    label = df.attrs.get("baseline", "the baseline")
    unpaired = int(((df["delta_n"] == 0) & ~df["is_baseline"].astype(bool)).sum()) if "delta_n" in df else 0
    return (f"Δ: top-1 minus {label}'s on the same dataset, backbone, weights and scale, paired by seed over the "
            "seeds both finished; ± is the 95% CI half-width (t), – where it is undefined; p: paired t-test."
            + (f" {unpaired} row{'s' if unpaired != 1 else ''} had no seed that {'it' if unpaired == 1 else 'they'} "
               f"and {label} both finished." if unpaired else ""))
