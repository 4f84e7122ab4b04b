"""A fully resolved run, and its id: the content hash of everything that defines it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def portable(spec: dict[str, Any]) -> dict[str, Any]:
    """What identifies a run anywhere: its spec without the suite's name and this machine's
    paths — the data root, and a local checkpoint's path, which its content hash
    (``weights_sha256``) stands for. Run ids, leaderboard rows and setups hash this, so the
    same checkpoint copied elsewhere (another machine, a relative path) is the same run."""
    d = {k: v for k, v in spec.items() if k not in ("suite", "data_root")}
    backbone = d.get("backbone")
    if isinstance(backbone, dict) and backbone.get("weights_sha256"):
        d["backbone"] = {**backbone, "pretrained": "checkpoint"}
    return d


@dataclass(frozen=True)
class RunSpec:
    """One cell of a suite's grid: dataset × backbone × method × variant × seed, with the
    method's params and the training recipe fully resolved.

    The run id hashes the spec *without* the suite name and the machine-specific paths
    (:func:`portable`: the data root, a checkpoint's path), so the same run found by two
    suites, or on two machines, has the same id and is stored, resumed and de-duplicated
    as one. ``world_size`` (the processes that train
    each run together under torchrun, whose global batch is world size × batch size) enters
    the id, and the record's spec, only above 1: a one-process run keeps its id.
    """

    suite: str
    dataset: dict[str, Any]          # {"name", "options"}
    backbone: dict[str, Any]         # {"name", "pretrained"}
    method: str
    variant: str
    seed: int
    scale: str
    params: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None     # where the data is on this machine (not hashed)
    world_size: int = 1

    def identity(self) -> dict[str, Any]:
        """:func:`portable` of the spec: what the run id hashes. It shares the spec's own
        dicts (no copy: run ids are taken thousands of times as a big grid resumes)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["world_size"] == 1:
            del d["world_size"]
        return portable(d)

    @property
    def run_id(self) -> str:
        return hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["world_size"] == 1:
            del d["world_size"]
        return d

    @property
    def label(self) -> str:
        variant = "" if self.variant == "default" else f"[{self.variant}]"
        return f"{dataset_label(self.dataset)} · {self.backbone['name']} · {self.method}{variant} · seed {self.seed}"


def dataset_label(dataset: dict) -> str:
    """How tables name a run's dataset: its name, and for a dataset *view* (a dataset whose
    options name the dataset it is built ``of``) the base too, with the base's level (where it has one) and
    the view's noise rate where set — e.g. ``coarse(cub)``, ``coarse(aircraft/family)``,
    ``weak_shot(cub, ρ=0.2)``; a dataset read from another folder than its adapter's
    default carries the folder's name, ``cub@CUB_200_2011_first50`` (a view: on its base,
    ``coarse(cub@CUB_200_2011_first50)``)."""
    name = str(dataset.get("name"))
    folder = f"@{dataset['root_name']}" if dataset.get("root_name") else ""   # a copy elsewhere (e.g. a subset)
    if dataset.get("data"):   # records of two versions of one folder's data (leaderboard.load_records)
        return f"{dataset_label({k: v for k, v in dataset.items() if k != 'data'})} [data {dataset['data']}]"
    options = dataset.get("options") if isinstance(dataset.get("options"), dict) else {}
    of = options.get("of")
    if not isinstance(of, str) or not of:
        return name + folder
    level = (options.get("of_options") or {}).get("level") if isinstance(options.get("of_options"), dict) else None
    label = f"{of}{folder}/{level}" if isinstance(level, str) else of + folder
    if isinstance(options.get("noise_rate"), (int, float)) and not isinstance(options.get("noise_rate"), bool):
        label += f", ρ={options['noise_rate']:g}"
    return f"{name}({label})"


def dataset_titles(datasets) -> dict[str, str]:
    """A heading per dataset (its dict, as a run's spec holds it), keyed by its canonical
    JSON: its label (:func:`dataset_label`), and where two of them share a label (other
    options, another root), the options that tell them apart — only those."""
    found = {canonical_json(d): d for d in datasets}
    labels = {key: dataset_label(d) for key, d in found.items()}
    out = {}
    for key, d in found.items():
        label = labels[key]
        twins = [found[k] for k in found if labels[k] == label]
        if len(twins) > 1:
            options = d.get("options") or {}
            differ = sorted(k for k in {k for t in twins for k in (t.get("options") or {})}
                            if len({canonical_json((t.get("options") or {}).get(k)) for t in twins}) > 1)
            words = ", ".join(f"{k}={options.get(k)}" for k in differ) or \
                f"root {d.get('root') or d.get('root_name') or '?'}"
            label = f"{label} ({words})"
        out[key] = label
    return out


def pretrained_label(value: Any) -> str:
    """A backbone's ``pretrained`` as tables print it: yes, no, or the weights file's name."""
    if value is True:
        return "yes"
    if not value:
        return "no"
    return Path(str(value)).name


def slug(text: str) -> str:
    """``text`` as a file-name part: runs of anything but letters, digits, ``_ . -`` become ``_``."""
    import re
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def config_key(spec: dict[str, Any]) -> str:
    """A leaderboard row's configuration: a short hash of the portable spec without its seed
    (the same fields the run id hashes, so it is stable across machines)."""
    identity = {k: v for k, v in portable(spec).items() if k != "seed"}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]


def setup_key(spec: dict[str, Any]) -> str:
    """What a method and its baseline must share to be compared: the dataset (with its
    options and folder), the backbone and its weights (a checkpoint's content, not its
    path), the scale and the world size. Methods differ in their params and recipe by
    design, so those are not part of it."""
    spec = portable(spec)
    identity = {"dataset": spec.get("dataset"), "backbone": spec.get("backbone"), "scale": spec.get("scale"),
                "world_size": spec.get("world_size", 1)}
    return json.dumps(identity, sort_keys=True, default=str)
