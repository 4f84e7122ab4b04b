"""Method-vs-baseline tables: every leaderboard row against one baseline on the same setup.

Papers print "single-step 87.90 → FineRNet 88.44"; the honest version pairs the two by
seed (the seed-to-seed spread both share cancels) and says how sure the difference is.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

from fgvcbench.errors import UserError
from fgvcbench.plugins import suggest
from fgvcbench.spec import config_key, dataset_label, setup_key

if TYPE_CHECKING:   # the suite loader checks a baseline without pandas or scipy
    import pandas as pd

BASELINE_COLUMNS = ["baseline", "is_baseline", "delta_n", "delta_mean", "delta_ci95", "delta_p", "delta_wilcoxon_p",
                    "delta_protocol"]


class BaselineMismatch(UserError):
    """A baseline name that picks no configuration, or more than one, on some setup.
    ``message`` follows the name (``'x' matches no run``); the caller says where the name
    came from (``--baseline``, a suite's ``baseline:``)."""

    def __init__(self, message: str, hint: str):
        super().__init__(f"the baseline {message} — {hint}")
        self.message, self.hint = message, hint


def parse_baseline(baseline: str) -> tuple[str, str | None, str | None]:
    """``method[:variant][@config]`` → (method, variant or None, config hash prefix or None)."""
    name, at, config = baseline.strip().partition("@")
    method, _, variant = name.partition(":")
    if not method or (at and not config):
        raise BaselineMismatch("is no baseline name",
                               "name a method, method:variant or method:variant@CONFIG "
                               "(e.g. finetune:default; CONFIG is a row's config hash)")
    return method, variant or None, config or None


def match_baseline(configs: Iterable[tuple[str, dict]], baseline: str) -> dict[str, str]:
    """setup (:func:`setup_key`) → the one configuration ``baseline`` names there, from
    (config hash, spec) pairs. A name that matches nothing, a config prefix that matches
    none of the method's, or two configurations of one setup (two variants, or one variant
    with other params) raises :class:`BaselineMismatch`: what the deltas are against must
    not be a guess. Used by ``leaderboard --baseline`` and by a suite's ``baseline:``."""
    method, variant, prefix = parse_baseline(baseline)
    specs = dict(configs)   # one spec per configuration
    names = sorted({f"{s['method']}:{s.get('variant', 'default')}" for s in specs.values()})
    hits = {c: s for c, s in specs.items()
            if s["method"] == method and (variant is None or s.get("variant", "default") == variant)}
    if not hits:
        close = suggest(baseline, names) or suggest(method, sorted({n.split(":")[0] for n in names}))
        raise BaselineMismatch("matches no run",
                               f"did you mean {close!r}?" if close else f"the runs are: {', '.join(names)}")
    name = baseline.strip().partition("@")[0]
    if prefix:
        known = sorted(hits)
        hits = {c: s for c, s in hits.items() if c.startswith(prefix)}
        if not hits:
            raise BaselineMismatch(f"has no configuration {prefix!r}", f"its configurations: {', '.join(known)}")
    per_setup: dict[str, dict[str, dict]] = {}
    for config, spec in sorted(hits.items()):
        per_setup.setdefault(setup_key(spec), {})[config] = spec
    for found in per_setup.values():
        if len(found) > 1:
            spec = next(iter(found.values()))
            where = f"{dataset_label(spec['dataset'])} · {spec['backbone']['name']}"
            variants = sorted({s.get("variant", "default") for s in found.values()})
            if variant is None and len(variants) > 1:
                raise BaselineMismatch(f"names {len(variants)} variants on {where}",
                                       f"name one: {', '.join(f'{method}:{v}' for v in variants)}")
            raise BaselineMismatch(f"has {len(found)} configurations on {where} (other params or train settings)",
                                   f"name one as {name}@CONFIG: {', '.join(found)}")
    return {setup: next(iter(found)) for setup, found in per_setup.items()}


def protocol(record: dict) -> dict[str, str]:
    """What a top-1 depends on besides the method, as people write it: the training crop
    and what it is drawn from (the whole image, or its centre square), the test view
    (centre crop from resize; a method that sets its view at run start
    records it under ``notes.eval_crop_pct``) and the split the epoch was selected on."""
    from fgvcbench.data.pipeline import load_size_for
    from fgvcbench.engine.recipe import RECIPE_FIELDS, Recipe
    given = (record.get("spec") or {}).get("recipe") or {}
    train = crop = resize = None
    try:   # the view as the pipelines compute it (Recipe.eval_resize), from the recorded recipe
        if "image_size" in given:
            recipe = Recipe(**{k: v for k, v in given.items() if k in RECIPE_FIELDS})
            pct = (record.get("notes") or {}).get("eval_crop_pct")   # a method's own view, set at run start
            if pct is not None:
                recipe = recipe.replace(eval_crop_pct=pct)
            train, crop = recipe.image_size, recipe.eval_image_size or recipe.image_size
            resize = recipe.eval_resize or load_size_for(crop)
    except (TypeError, ValueError, ZeroDivisionError):   # a hand-edited record: its protocol is unknown
        train = crop = resize = None
    selection = ((record.get("spec") or {}).get("params") or {}).get("selection") == "test"
    # what the training crops are drawn from, as the record says (crop_extent); where it does
    # not, as runs were before it existed: the classic pipeline's whole images, the fast
    # one's centre squares
    extent = given.get("crop_extent") or ("full" if given.get("pipeline", "fast") == "classic" else "square")
    whole = extent == "full"
    return {"train crop": f"{train} px" if train else "?",
            "crops from": "whole image" if whole else "centre square",
            "test view": f"{resize} → {crop} px" if crop else "?",
            "selected on": "test" if selection else "validation"}


def protocol_difference(row: dict, baseline: dict) -> str:
    """``row``'s protocol where it is not the baseline's (:func:`protocol`), e.g.
    ``train crop 448 px (baseline 224 px)``; empty when they share it."""
    mine, theirs = protocol(row), protocol(baseline)
    return "; ".join(f"{k} {v} (baseline {theirs[k]})" for k, v in mine.items() if v != theirs[k])


def add_baseline(df: pd.DataFrame, records: list[dict], baseline: str, source: str = "--baseline") -> pd.DataFrame:
    """``df`` with a paired comparison of every row against ``baseline`` (``method`` or
    ``method:variant``) on the same setup (:func:`setup_key`): Δ top-1 = row − baseline
    over the seeds both finished (``delta_n`` pairs), its mean, 95 % CI half-width, paired
    t-test p and Wilcoxon p (:func:`~fgvcbench.report.stats.paired_difference`). Rows
    whose setup has no baseline run, and the baseline's own row, get none. A baseline name
    that matches two configurations of one setup (two variants, or other params) is
    refused: which one the deltas are against must not be a guess. ``source`` names where
    the name came from in the error (``--baseline``, or a suite's ``baseline:``)."""
    try:
        method, variant, config_prefix = parse_baseline(baseline)
    except BaselineMismatch as exc:
        raise UserError(f"{source} {baseline!r} {exc.message} — {exc.hint}") from None
    by_config: dict[str, list[dict]] = {}
    for r in records:
        by_config.setdefault(config_key(r["spec"]), []).append(r)
    try:
        base_of = match_baseline(((c, recs[0]["spec"]) for c, recs in by_config.items()), baseline)
    except BaselineMismatch as exc:
        raise UserError(f"{source} {baseline!r} {exc.message} in these records — {exc.hint}") from None

    def ok_by_seed(config: str) -> dict:
        return {r["spec"].get("seed"): float(r["metrics"]["top1"]) for r in by_config.get(config, [])
                if r.get("status") == "ok"}
    label = (f"{method}:{variant}" if variant else method) + (f"@{config_prefix}" if config_prefix else "")
    columns = {c: [] for c in BASELINE_COLUMNS}
    nothing = [0, math.nan, math.nan, math.nan, math.nan]
    for config in df["config"]:
        recs = by_config.get(config) or []
        base = base_of.get(setup_key(recs[0]["spec"])) if recs else None
        if base is None:
            values = ["", False] + nothing + [""]
        elif base == config:
            values = [label, True] + nothing + [""]
        else:
            mine, theirs = ok_by_seed(config), ok_by_seed(base)
            seeds = sorted(set(mine) & set(theirs), key=str)   # the pairs, in any fixed order
            differs = protocol_difference(recs[0], by_config[base][0])
            if seeds:
                from fgvcbench.report.stats import paired_difference
                pr = paired_difference([theirs[s] for s in seeds], [mine[s] for s in seeds])
                half = (pr.ci_high - pr.ci_low) / 2
                values = [label, False, pr.n, pr.mean_delta, half, pr.p_value, pr.wilcoxon_p, differs]
            else:
                values = [label, False] + nothing + [differs]
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
    unpaired = no_base = other_protocol = test_selected = 0
    if "delta_n" in df:
        compared = (df["baseline"] != "") & ~df["is_baseline"].astype(bool)
        unpaired = int((compared & (df["delta_n"] == 0)).sum())
        no_base = int((df["baseline"] == "").sum())
        differs = compared & (df["delta_n"] > 0) & (df["delta_protocol"] != "")
        other_protocol = int(differs.sum())
        test_selected = int((differs & df["delta_protocol"].str.contains("selected on test", regex=False)).sum())
    rows = lambda k: f"{k} row{'s' if k != 1 else ''}"  # noqa: E731
    return (f"Δ: top-1 minus {label}'s on the same dataset, backbone, weights and scale, paired by seed over the "
            "seeds both finished; ± is the 95% CI half-width (t); p: paired t-test. Both are left out (p: –) where "
            "they are undefined: one pair, or every seed moved by the same amount (there the CSV's "
            "delta_wilcoxon_p still says how sure)."
            + (f" {rows(unpaired)} had no seed that {'it' if unpaired == 1 else 'they'} "
               f"and {label} both finished." if unpaired else "")
            + (f" {rows(no_base)} had no {label} run on {'its' if no_base == 1 else 'their'} setup to compare with."
               if no_base else "")
            + (f" {rows(other_protocol)} did not share {label}'s protocol (training crop, test view or the split "
               f"the epoch is selected on; each says how): that difference is part of "
               f"{'its' if other_protocol == 1 else 'their'} Δ." if other_protocol else "")
            + (" A row selected on the test split, against a baseline selected on validation, gains the optimism of "
               "that choice: its Δ is for comparison with the seed code, not a result." if test_selected else ""))
