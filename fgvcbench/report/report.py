"""``fgvcbench report``: a Markdown report with PNG figures from run records — the
leaderboard, each recipe ablation's cumulative chart, accuracy against training time per
method, the per-seed spread, and per dataset the most-confused class pairs with example
images (from the ``predictions.json`` a run keeps in its artifacts)."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

from fgvcbench.report.ablation import ablation_config, ablation_table, render_ablation, write_ablation_chart
from fgvcbench.report.compare import add_baseline, baseline_note
from fgvcbench.report.leaderboard import build_leaderboard, config_notes, render, render_pivot
from fgvcbench.spec import canonical_json, config_key, dataset_label, dataset_titles, slug


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def find_ablations(records: list[dict]) -> list[tuple[str, str, str, str | None, str, object]]:
    """(dataset name, dataset label, backbone, scale, setup, plan) for every recipe ablation
    in the records — one per setup (:func:`ablation_config`: runs of two scales, of pretrained
    and random weights, or of two recipes never share a table): the cumulative order is the
    step list with the most of its prefixes present; lists of one more step on top of it
    are the extra rows."""
    from fgvcbench.suite import AblationPlan
    groups: dict[tuple, set] = defaultdict(set)
    extras: dict[tuple, set] = defaultdict(set)
    names = {}
    for r in records:
        s = r["spec"]
        steps = (s.get("params") or {}).get("steps")
        if r.get("status") == "ok" and isinstance(steps, list) and all(isinstance(x, str) for x in steps):
            key = (s["method"], dataset_label(s["dataset"]), s["backbone"]["name"], s.get("scale"), ablation_config(s))
            # a suite labels a step tried on top of the full order "steps:+NAME"
            (extras if str(s.get("variant", "")).startswith("steps:+") else groups)[key].add(tuple(steps))
            names[key] = s["dataset"]["name"]
    out = []
    for (method, label, backbone, scale, config), lists in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        def prefixes(order):
            return sum(order[:i] in lists for i in range(1, len(order) + 1))
        order = max(lists, key=lambda o: (prefixes(o), len(o)))
        if prefixes(order) < 2:
            continue  # not an ablation: fewer than two cumulative rows
        key = (method, label, backbone, scale, config)
        extra = [o[-1] for o in lists | extras[key] if len(o) == len(order) + 1 and o[:-1] == order]
        out.append((names[key], label, backbone, scale, config,
                    AblationPlan(method=method, order=list(order), extra=sorted(extra))))
    return out


def _artifacts(results_dirs) -> dict[str, Path]:
    found = {}
    for d in results_dirs:
        for path in Path(d).rglob("artifacts/*/predictions.json"):
            if path.relative_to(d).parts[-5:-4] != ("replaced",):   # what `run --rerun` moved aside
                found[path.parent.name] = path
    return found


def confused_pairs(predictions: list[dict], top: int = 4) -> list[tuple[int, int, int]]:
    """The class pairs most often confused (either direction), summed over runs:
    ``(a, b, errors)`` with a < b, most errors first."""
    counts: Counter = Counter()
    for p in predictions:
        for y, yhat in zip(p["label"], p["pred"]):
            if y != yhat:
                counts[(min(y, yhat), max(y, yhat))] += 1
    return [(a, b, n) for (a, b), n in counts.most_common(top)]


def locate(image: str, data_roots: tuple = ()) -> str:
    """``image`` where this machine has it: the recorded path, else the longest tail of it
    that exists under one of ``data_roots`` (records written on another machine, e.g.
    ``/root/.data/CUB_200_2011_first50/images/…`` found under ``--data-root .data``)."""
    path = Path(image)
    if path.exists() or not data_roots:
        return image
    parts = path.parts[1:] if path.is_absolute() else path.parts
    for start in range(len(parts)):
        for root in data_roots:
            candidate = Path(root) / Path(*parts[start:])
            if candidate.is_file():
                return str(candidate)
    return image


def _confusion_figure(predictions: list[dict], pairs, path: Path, title: str, data_roots: tuple = ()) -> bool:
    from PIL import Image
    plt = _plt()
    names = predictions[0]["class_names"]
    cols = 4
    fig, axes = plt.subplots(len(pairs), cols, figsize=(2.1 * cols, 2.3 * len(pairs)), squeeze=False)
    for row, (a, b, n) in enumerate(pairs):
        examples = []
        for true, wrong in ((a, b), (b, a)):
            for p in predictions:
                if p.get("paths") is None:
                    continue
                for y, yhat, img in zip(p["label"], p["pred"], p["paths"]):
                    if y == true and yhat == wrong and len([e for e in examples if e[0] == true]) < 2 \
                            and img not in [e[2] for e in examples]:
                        examples.append((true, wrong, img))
        for col in range(cols):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(examples):
                true, wrong, img = examples[col]
                try:
                    with Image.open(locate(img, data_roots)) as im:
                        im = im.convert("RGB")
                        im.thumbnail((160, 160))
                        ax.imshow(im)
                except OSError:
                    ax.text(0.5, 0.5, "image not on\nthis machine\n(report --data-root)", ha="center", va="center",
                            fontsize=7)
                ax.set_title(f"{_short(names[true])}\n→ {_short(names[wrong])}", fontsize=7)
        axes[row][0].text(-0.08, 0.5, f"{n} errors", transform=axes[row][0].transAxes, rotation=90,
                          va="center", ha="right", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _short(name: str, width: int = 18) -> str:
    """``name`` in at most ``width`` characters, an ellipsis where it was cut."""
    return name if len(name) <= width else name[:width - 1] + "…"


MARKERS = "os^DvP*X<>"


def _scatter_cost(df, path: Path, devices: str, unit: str, dataset: str) -> None:
    """One dataset's configurations: a colour per method, a marker per backbone (where there
    are several), a point's variant written beside it where its method has several (an
    ablation's ``steps:…`` rows are one line of points, named in the legend only)."""
    import textwrap
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    backbones = list(dict.fromkeys(df["backbone"]))
    hollow = False
    for method, part in df.groupby("method"):
        colour = None
        for backbone, rows in part.groupby("backbone", sort=False):
            marker = MARKERS[backbones.index(backbone) % len(MARKERS)]
            label = method + (f" · {backbone}" if len(backbones) > 1 else "")
            bars = ax.errorbar(rows["device_seconds_total_mean"], rows["top1_mean"], yerr=rows["top1_std"].fillna(0),
                               fmt=marker, capsize=3, label=label, color=colour)
            colour = bars[0].get_color()
            one = rows[rows["n"] < 2]
            if len(one):   # no spread measured: hollow (drawn over the filled marker), never read as a zero std
                ax.plot(one["device_seconds_total_mean"], one["top1_mean"], marker, color=colour,
                        markerfacecolor="white", zorder=3)
                hollow = True
            named = part["variant"].nunique() > 1 and not part["variant"].str.startswith("steps:").all()
            for k, r in enumerate(rows.sort_values("device_seconds_total_mean").itertuples()):
                if named:   # neighbours above and below in turn, so close points' names do not print over each other
                    ax.annotate(r.variant, (r.device_seconds_total_mean, r.top1_mean), fontsize=6,
                                xytext=(3, 3 if k % 2 == 0 else -9), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"{unit} of training per run (× devices; cached phases included; mean over seeds)", fontsize=8)
    ax.set_title("\n".join(textwrap.wrap(f"{dataset} · {devices}", 90)), fontsize=7)   # wrapped, not cut
    ax.set_ylabel("top-1 (%)")
    ax.legend(fontsize=7, title="hollow: one seed, no spread" if hollow else None, title_fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _spread(ok: list[dict], path: Path, dataset: str) -> None:
    plt = _plt()
    # one column per configuration (the leaderboard's rows): seeds of two setups never share one
    by_config: dict[str, list[dict]] = defaultdict(list)
    for r in ok:
        by_config[config_key(r["spec"])].append(r)
    names = {c: f"{rs[0]['spec']['method']}:{rs[0]['spec'].get('variant')} · {rs[0]['spec']['backbone']['name']}"
             for c, rs in by_config.items()}
    shared = Counter(names.values())
    configs = {names[c] + (f" · {c}" if shared[names[c]] > 1 else ""): [float(r["metrics"]["top1"]) for r in rs]
               for c, rs in by_config.items()}
    labels = sorted(configs, key=lambda k: -sum(configs[k]) / len(configs[k]))
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(labels) + 2), 3.8))
    for i, label in enumerate(labels):
        values = configs[label]
        ax.scatter([i] * len(values), values, s=18, alpha=0.8)
        ax.hlines(sum(values) / len(values), i - 0.25, i + 0.25, color="black", linewidth=1)
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("top-1 (%) per seed")
    ax.set_title(f"{dataset}: one dot per seed, bar = mean", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _predictions_usable(pred) -> bool:
    """A ``predictions.json`` as runs write it: class names, and predicted and true class
    indices of equal length, each a valid index (a hand-edited file is passed over)."""
    if not isinstance(pred, dict):
        return False
    names, p, y = pred.get("class_names"), pred.get("pred"), pred.get("label")
    if not (isinstance(names, list) and isinstance(p, list) and isinstance(y, list) and len(p) == len(y)):
        return False
    return all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(names) for v in (*p, *y))


def _setup_words(spec: dict) -> str:
    """A setup in a line: weights, the base recipe's epochs, image size and batch, other params."""
    pretrained = spec["backbone"].get("pretrained")
    weights = "pretrained" if pretrained is True else "random init" if not pretrained else Path(str(pretrained)).name
    recipe = spec.get("recipe") or {}
    parts = [f"weights: {weights}"] + [f"{key.replace('_', ' ')} {recipe[key]}" for key in
                                        ("epochs", "image_size", "batch_size") if key in recipe]
    params = {k: v for k, v in (spec.get("params") or {}).items() if k != "steps"}
    if params:
        parts.append("params: " + ", ".join(f"{k}={v}" for k, v in sorted(params.items())))
    return "Setup: " + " · ".join(parts) + " (the base recipe, before the steps)."


def write_report(records: list[dict], results_dirs, out_dir: str | os.PathLike, title: str = "fgvcbench report",
                 metrics: tuple[str, ...] = (), baselines: tuple[str, ...] = (), data_roots: tuple = ()) -> Path:
    """Write ``report.md`` and its PNG figures into ``out_dir``; return the report's path.
    ``baselines``: one method-vs-baseline table each (``method`` or ``method:variant``); a
    bad one raises before anything is written. ``data_roots``: where to look for example
    images whose recorded path is not on this machine (:func:`locate`)."""
    df = build_leaderboard(records, metrics)
    compared = [add_baseline(df, records, baseline) for baseline in baselines]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ok = [r for r in records if r.get("status") == "ok" and isinstance((r.get("metrics") or {}).get("top1"), (int, float))]
    devices = sorted({(r.get("provenance") or {}).get("device_name") or "?" for r in ok})
    titles = dataset_titles(r["spec"]["dataset"] for r in records)
    title_of_config = {config_key(r["spec"]): titles[canonical_json(r["spec"]["dataset"])] for r in records}
    seeds = sorted({r["spec"].get("seed") for r in ok if isinstance(r["spec"].get("seed"), int)})
    when = sorted((r.get("provenance") or {}).get("finished") or "" for r in ok)
    lines = [f"# {title}", "",
             f"{len(records)} run records ({len(ok)} ok) from {', '.join(str(d) for d in results_dirs)}; "
             f"devices: {', '.join(devices) or '–'}; seeds: {', '.join(map(str, seeds)) or '–'}; "
             f"finished {when[0][:10] if when else '–'} … {when[-1][:10] if when else '–'}. "
             "Accuracies are top-1 % on each dataset's test split, mean ± std over seeds; the epoch is selected "
             "on a validation split (the dataset's own, else one carved from train; a recipe with "
             "`val_fraction: 0` and no such split reports its last epoch)"
             + (", except in rows marked *(test-selected)*: they select on the test split, as the seed code "
                "does — for comparison with it, not a result" if any((r["spec"].get("params") or {}).get("selection")
                                                                     == "test" for r in ok) else "") + ".", ""]
    lines += ["## Leaderboard", "", render(df, "github"), ""]
    notes = config_notes(df)   # rows named alike: what their config hashes stand for
    if notes:
        lines += [f"- {line}" for line in notes] + [""]
    for table in compared:
        lines += [f"## Against {table.attrs['baseline']}", "", render_pivot(table, "github", markdown=True), "",
                  baseline_note(table), ""]

    ablations = find_ablations(ok)
    if ablations:
        lines += ["## Recipe ablations", ""]
    several = {(label, backbone, scale) for _, label, backbone, scale, _, _ in ablations}
    for name, label, backbone, scale, config, plan in ablations:
        runs = [r for r in records if dataset_label(r["spec"]["dataset"]) == label]
        # one setup; each row over the seeds every cumulative row finished (ablation_table)
        table = ablation_table(runs, plan, name, backbone, scale=scale, config=config)
        setup = _setup_words(next(r["spec"] for r in runs if ablation_config(r["spec"]) == config))
        named = len(several) < len(ablations)   # two setups share dataset, backbone and scale: name each
        title = f"{label} · {backbone} · scale {scale}" + (f" · setup {config}" if named else "")
        chart = f"ablation-{slug(label)}-{slug(backbone)}-{slug(str(scale))}" + (f"-{config}" if named else "") + ".png"
        write_ablation_chart(table, out / chart, f"{title}: cumulative top-1")
        table_md = render_ablation(table).replace("\nSeeds:", "\n\nSeeds:")   # a paragraph, not a table row
        lines += [f"### {title}", "", setup, "", table_md, "", f"![cumulative ablation]({chart})", ""]

    if len(df) and df["device_seconds_total_mean"].notna().any():
        kinds = {str((r.get("provenance") or {}).get("device", "")).split(":")[0] for r in ok}
        unit = "GPU-seconds" if kinds == {"cuda"} else "CPU-seconds" if kinds == {"cpu"} else "device-seconds"
        timed = df[df["device_seconds_total_mean"].notna() & df["top1_mean"].notna()]
        charts = []
        for label, part in timed.groupby(timed["config"].map(title_of_config), sort=True):   # one dataset's
            chart = f"accuracy_vs_time-{slug(label)}.png"
            _scatter_cost(part, out / chart, ", ".join(devices), unit, label)
            charts.append((label, chart))
        shared = int(df["device_shared_by"].max()) if "device_shared_by" in df else 1
        caveat = (f" Some runs shared their device (`--workers`, up to {shared} runs at once): their times are "
                  f"longer than a run alone would take." if shared > 1 else "")
        lines += [f"## Accuracy against {unit}", "",
                  f"One point per configuration (mean ± std over seeds), on a log scale of {unit} of training: "
                  "training seconds (cached phases included) × the devices a run trained on (torchrun's "
                  "processes). One chart per dataset: accuracies of two datasets do not share an axis." + caveat, ""]
        for label, chart in charts:
            lines += [f"![{label}: accuracy vs {unit}]({chart})", ""]

    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for r in ok:
        by_dataset[titles[canonical_json(r["spec"]["dataset"])]].append(r)
    predictions = _artifacts(results_dirs)
    for label, runs in sorted(by_dataset.items()):
        lines += [f"## {label}", ""]
        spread = f"spread-{slug(label)}.png"
        _spread(runs, out / spread, label)
        lines += ["Per-seed spread:", "", f"![per-seed spread]({spread})", ""]
        preds = []
        for r in runs:
            path = predictions.get(r["run_id"])
            if path is not None:
                try:
                    pred = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError, RecursionError):
                    continue
                if _predictions_usable(pred):
                    preds.append(pred)
        preds = [p for p in preds if p.get("class_names") == (preds[0].get("class_names") if preds else None)]
        pairs = confused_pairs(preds) if preds else []
        if pairs:
            names = preds[0]["class_names"]
            figure = f"confusions-{slug(label)}.png"
            _confusion_figure(preds, pairs, out / figure, f"{label}: most-confused class pairs over {len(preds)} runs",
                              data_roots)
            lines += [f"Most-confused class pairs (errors summed over {len(preds)} runs' test predictions):", "",
                      "| class | class | errors |", "|---|---|---|"]
            lines += [f"| {names[a]} | {names[b]} | {n} |" for a, b, n in pairs]
            lines += ["", f"![most-confused pairs]({figure})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
