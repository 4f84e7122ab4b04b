"""Suites: YAML → validated :class:`Suite` → the grid of :class:`RunSpec`.

Suites are data: read with ``yaml.safe_load`` semantics (no tags, no code), checked key
by key, and every error names the file, the line and the key. Merge order of the
training recipe, lowest first::

    Recipe defaults → method's own recipe → scale preset → method's per-scale settings
    → suite ``train:`` → the method entry's ``train:`` → CLI options
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fgvcbench.engine.recipe import RECIPE_FIELDS, RELATED_FIELDS, Recipe, coerce_recipe_value
from fgvcbench.errors import DataError, SuiteError, UserError, given_text, yaml_text
from fgvcbench.plugins import Registry, _one_line, suggest
from fgvcbench.spec import RunSpec, canonical_json, dataset_label, portable
from fgvcbench.store import claim_stale_seconds, default_cache_dir, default_data_root

# A scale sets epochs, image size and seeds in one place.
SCALES: dict[str, dict[str, Any]] = {
    "smoke": {"recipe": {"epochs": 1, "image_size": 32, "batch_size": 16}, "seeds": [0]},
    "short": {"recipe": {"epochs": 30, "image_size": 224}, "seeds": [0, 1, 2]},
    "paper": {"recipe": {"epochs": 100, "image_size": 224}, "seeds": [0, 1, 2, 3, 4]},
}
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# seeds feed seed·1000 + offset generators (64-bit); a count beyond this is a typo
MAX_SEED, MAX_SEED_COUNT = 2**31 - 1, 10_000
TOP_KEYS = {"name", "description", "output", "scale", "seeds", "device", "data_root", "cache_dir",
            "train", "datasets", "backbones", "methods", "exclude", "ablation", "baseline", "executor", "cluster"}
EXECUTORS = ("local", "submitit")
# submitit settings (a suite's `cluster:`, a method entry's `cluster:` override, --cluster KEY=VALUE)
CLUSTER_KEYS = {"backend": str, "partition": str, "time_min": int, "gpus": int, "cpus": int, "mem_gb": int,
                "array_parallelism": int, "account": str, "qos": str, "constraint": str, "folder": str}
ABLATION_KEYS = {"method", "steps", "extra"}
DATASET_KEYS = {"name", "options", "root"}
BACKBONE_KEYS = {"name", "pretrained"}
METHOD_KEYS = {"name", "variants", "params", "train", "cluster"}
EXCLUDE_KEYS = {"dataset", "backbone", "method", "variant", "seed"}


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (YAML silently keeps the last one)."""


MAX_SUITE_BYTES = 10_000_000   # a suite is a few kB; a bigger file is the wrong one
MAX_YAML_NODES = 200_000   # aliases can repeat a node; a suite is far smaller than this


def _compose_to_python(node: yaml.Node, path: tuple, lines: dict[tuple, int], file: str,
                       open_nodes: tuple = ()) -> Any:
    if any(node is other for other in open_nodes):
        raise SuiteError("invalid YAML: an alias refers to a node that contains it", file=file,
                         line=node.start_mark.line + 1, key=_dotted(path) or None,
                         hint="write the value out instead of the alias (*name)")
    if len(lines) > MAX_YAML_NODES:
        raise SuiteError(f"invalid YAML: more than {MAX_YAML_NODES:,} values once aliases are expanded", file=file,
                         hint="write the suite without nested aliases")
    open_nodes = (*open_nodes, node)
    lines[path] = node.start_mark.line + 1
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        raise SuiteError(f"invalid YAML: tag {node.tag} is not allowed (suites are plain data)",
                         file=file, line=node.start_mark.line + 1, key=_dotted(path) or None,
                         hint="remove the tag")
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}   # `<<: *defaults`: keys written out beside it win, as in safe_load
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in reversed(sources):   # the first mapping listed wins
                    value = _compose_to_python(source, path, lines, file, open_nodes)
                    if not isinstance(value, dict):
                        raise SuiteError("invalid YAML: `<<` merges a mapping (or a list of them)", file=file,
                                         line=key_node.start_mark.line + 1, key=_dotted(path) or None,
                                         hint="merge an anchored mapping, e.g. <<: *defaults")
                    merged.update(value)
                continue
            key = _scalar_at(key_node, path, file)
            if isinstance(key, (list, dict)):   # `{[a]: 1}`: YAML allows it, no suite key is one
                raise SuiteError(f"a key must be a name, got a {'list' if isinstance(key, list) else 'mapping'} "
                                 f"{key!r}", file=file, line=key_node.start_mark.line + 1,
                                 key=_dotted(path) or None, hint="write the key as a plain name")
            if key in out:
                raise SuiteError(f"duplicate key {key!r}", file=file, line=key_node.start_mark.line + 1,
                                 key=_dotted(path + (key,)), hint="keep only one of them")
            out[key] = _compose_to_python(value_node, path + (key,), lines, file, open_nodes)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return {**merged, **out} if merged else out
    if isinstance(node, yaml.SequenceNode):
        return [_compose_to_python(item, path + (i,), lines, file, open_nodes) for i, item in enumerate(node.value)]
    return _scalar_at(node, path, file)


def _scalar_at(node: yaml.Node, path: tuple, file: str) -> Any:
    """:func:`_scalar`, with a value its tag cannot read (``!!int abc``) or a tag a suite
    does not take (``!foo``, ``!!python/…``) as a SuiteError at its line."""
    try:
        return _scalar(node)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError):
        where = {"file": file, "line": node.start_mark.line + 1, "key": _dotted(path) or None}
        if node.tag.startswith("tag:yaml.org,2002:") and "python" not in node.tag:
            raise SuiteError(f"invalid YAML value: {node.value!r} is no {node.tag.rsplit(':', 1)[-1]}", **where,
                             hint="remove the tag (!!…) or write a value of that type") from None
        raise SuiteError(f"invalid YAML: tag {node.tag} is not allowed (suites are plain data)", **where,
                         hint="remove the tag") from None


def _scalar(node: yaml.Node) -> Any:
    """A scalar (or any node) resolved exactly as ``yaml.safe_load`` would."""
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        return node.value
    if isinstance(node, yaml.ScalarNode):   # int, float, bool, null (an empty value too): the safe constructor
        return yaml.SafeLoader("").construct_object(node, deep=True)
    return yaml.safe_load(yaml.serialize(node))


def load_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML safely, returning the data and the line of every key/item path."""
    file = str(path)
    if path.exists() and not path.is_dir() and not path.is_file():   # /dev/zero, a named pipe: never ends
        raise SuiteError("this is not a regular file", file=file,
                         hint="give the path of a suite's .yaml file (e.g. suites/quickstart.yaml)")
    if path.is_file() and path.stat().st_size > MAX_SUITE_BYTES:
        raise SuiteError(f"the file is {path.stat().st_size:,} bytes, more than a suite's {MAX_SUITE_BYTES:,}", file=file,
                         hint="give the suite's .yaml file, not a data or results file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError("suite file not found", file=file, hint="check the path (suites live in suites/)") from None
    except IsADirectoryError:
        raise SuiteError("this is a folder, not a suite file", file=file,
                         hint="give the path of a suite's .yaml file (e.g. suites/quickstart.yaml)") from None
    except UnicodeDecodeError:
        raise SuiteError("the suite is not UTF-8 text", file=file,
                         hint="give a YAML text file (saved as UTF-8)") from None
    except OSError as exc:
        raise SuiteError(f"cannot read the suite: {exc.strerror or exc}", file=file,
                         hint="check the file's permissions") from None
    try:   # the parser and the conversion both recurse once per level
        return _parse_yaml(text, file)
    except RecursionError:
        raise SuiteError("invalid YAML: nested too deeply", file=file,
                         hint="a suite needs a few levels of lists and mappings; flatten the value") from None


def _parse_yaml(text: str, file: str) -> tuple[Any, dict[tuple, int]]:
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(f"invalid YAML: {problem}", file=file, line=mark.line + 1 if mark else None,
                         hint="fix the syntax (indentation, a missing ':' or quote)") from None
    lines: dict[tuple, int] = {}
    if node is None:
        return None, lines
    try:
        return _compose_to_python(node, (), lines, file), lines
    except yaml.YAMLError as exc:
        raise SuiteError(f"invalid YAML value: {exc}", file=file) from None


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


@dataclass
class Suite:
    name: str
    file: str
    output: Path
    scale: str
    seeds: list[int]
    device: str
    data_root: Path
    cache_dir: Path
    runs: list[RunSpec] = field(default_factory=list)
    description: str = ""
    datasets: list[tuple[dict, str | None]] = field(default_factory=list)
    backbones: list[dict] = field(default_factory=list)
    ablation: "AblationPlan | None" = None
    baseline: str | None = None   # method[:variant] every other run is compared with (`run` prints the table)
    # builds a RunSpec for (dataset, root, backbone, method, variant label, params, seed)
    make_spec: Any = None
    executor: str = "local"
    cluster: dict = field(default_factory=dict)          # submitit settings for every run
    # run id → the `cluster:` of the methods entry that made the run, overriding ``cluster``
    run_cluster: dict = field(default_factory=dict)
    grid: list[RunSpec] | None = None   # the whole grid, where `run --only` narrowed ``runs``
    root_errors: dict = field(default_factory=dict)   # dataset (canonical JSON) -> its missing root's error
    # notes to print before running, each with the run ids it is about: train: values a methods
    # entry's (or the ablation's) recipe steps replace
    notes: list[tuple[str, set]] = field(default_factory=list)
    train_given: dict = field(default_factory=dict)   # the suite's own train: settings (what `ablate` checks)
    # run id → the method's other variants that compute the same run (finernet's code is its
    # default): ``--only``/``--rerun`` method:VARIANT names the run by these too
    aliases: dict = field(default_factory=dict)

    def check_roots(self) -> None:
        """Raise the data-root error of the first dataset one of ``runs`` needs (a suite
        loaded with ``check_data=False``, then narrowed by ``--only``)."""
        for spec in self.runs:
            error = self.root_errors.get(canonical_json(spec.dataset))
            if error is not None:
                raise error


@dataclass
class AblationPlan:
    """A recipe ablation: ``order`` is the ordered list of steps (cumulative prefixes give
    the article's rows), ``extra`` are steps tried on top of the full order."""

    method: str
    order: list[str]
    extra: list[str]

    def rows(self) -> list[tuple[str, list[str]]]:
        """(row label, steps) for every cumulative prefix, then every extra step on top."""
        rows = [(step, self.order[:i + 1]) for i, step in enumerate(self.order)]
        return rows + [(f"+{step}", self.order + [step]) for step in self.extra]

    def label(self, steps: list[str]) -> str:
        """A stable variant label for a list of steps (the same list → the same run id
        whether `run` or `ablate` asks for it)."""
        n = len(steps)
        if 0 < n <= len(self.order) and steps == self.order[:n]:
            return f"steps:{steps[-1]}"
        if n == 0:
            return "steps:none"
        if n == len(self.order) + 1 and steps[:-1] == self.order:
            return f"steps:+{steps[-1]}"
        removed = [s for s in self.order if s not in steps]
        if len(removed) == 1 and steps == [s for s in self.order if s != removed[0]]:
            return f"steps:-{removed[0]}"
        return "steps:custom"

    def compare(self, step: str, mode: str) -> tuple[list[str], list[str]]:
        """The (without, with) step lists for one step. Cumulative: the recipe up to the
        step before it vs including it; leave-one-out: the full recipe minus it vs full.
        A step outside the order is tried on top of the full recipe in both modes."""
        if step not in self.order:
            return list(self.order), self.order + [step]
        i = self.order.index(step)
        if mode == "cumulative":
            return self.order[:i], self.order[:i + 1]
        return [s for s in self.order if s != step], list(self.order)


def dataset_option_problem(spec, key: str, value: Any) -> str | None:
    """Why ``value`` cannot be the dataset's option ``key`` (its default's type); None when
    it can. Suites and ``data verify --option`` check alike."""
    default = spec.options[key]
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list,), tuple: (list,),
             dict: (dict,)}.get(type(default))
    if kinds and value is not None and (not isinstance(value, kinds)
                                        or (isinstance(value, bool) and type(default) is not bool)):
        kind = {tuple: "list", dict: "mapping"}.get(type(default), type(default).__name__)
        return (f"expected {kind} like the default {yaml_text(default)}, got "
                f"{type(value).__name__} {given_text(value)}")
    return None


def _dataset_options(ck: "_Checker", spec, given: Any, path: tuple) -> dict:
    """A dataset entry's ``options`` checked against the adapter's declared ones (name,
    and the type of the default) and filled with their defaults."""
    options = dict(spec.options)
    for key, value in ck.typed(given or {}, (dict,), path, "a mapping").items():
        if key not in spec.options:
            close = suggest(str(key), spec.options)
            ck.fail((*path, key), f"unknown option for dataset {spec.name!r}",
                    f"did you mean {close!r}?" if close else f"options: {', '.join(spec.options) or 'none'}")
        problem = dataset_option_problem(spec, key, value)
        if problem:
            ck.fail((*path, key), problem, "fix the value's type")
        options[key] = value
    for key in spec.hash_if_set:   # at its default: not part of the run's identity
        if key in options and options[key] == spec.options[key]:
            del options[key]
    try:
        spec.check_options(options)
    except DataError as exc:   # a plugin's check may say what is wrong and not what to do
        said = str(exc)
        ck.fail(path, said, None if " — " in said else
                f"give a value it takes (`fgvcbench plugins {spec.name}` lists its options and defaults)")
    return options


class _Checker:
    def __init__(self, file: str, lines: dict[tuple, int]):
        self.file, self.lines = file, lines

    def error(self, path: tuple, message: str, hint: str | None = None) -> SuiteError:
        """The error at ``path`` (its line, or its nearest parent's), not raised."""
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        return SuiteError(message, file=self.file, line=self.lines.get(probe), key=_dotted(path) or None, hint=hint)

    def fail(self, path: tuple, message: str, hint: str | None = None) -> None:
        raise self.error(path, message, hint)

    def keys(self, obj: dict, allowed: set[str], path: tuple, what: str) -> None:
        for key in obj:
            if key not in allowed:
                close = suggest(str(key), allowed)
                self.fail(path + (key,), f"unknown key in {what}",
                          f"did you mean {close!r}?" if close else f"allowed: {', '.join(sorted(allowed))}")

    def typed(self, value: Any, types: tuple, path: tuple, expected: str, hint: str | None = None) -> Any:
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            scalar = isinstance(value, (str, int, float)) and not isinstance(value, bool)
            hint = hint or (f"write it as a list: [{value}]" if types == (list,) and scalar
                            else f"write {expected} there")
            self.fail(path, f"expected {expected}, got {type(value).__name__} {value!r}", hint)
        return value

    def entry(self, item: Any, path: tuple, allowed: set[str], what: str) -> dict:
        if isinstance(item, str):
            return {"name": item}
        if not isinstance(item, dict):
            self.fail(path, f"a {what} entry must be a name or a mapping with 'name', got {type(item).__name__} "
                            f"{item!r}", "write a name, or {name: NAME, ...}; `fgvcbench plugins` lists the names")
        self.keys(item, allowed, path, what)
        if "name" not in item or not isinstance(item["name"], str):
            self.fail(path, f"a {what} entry needs a 'name' string",
                      "add name: NAME to the entry; `fgvcbench plugins` lists the names")
        return item

    def recipe_overrides(self, obj: Any, path: tuple) -> dict[str, Any]:
        if obj is None:
            return {}
        self.typed(obj, (dict,), path, "a mapping of training settings")
        out = {}
        for key, value in obj.items():
            if key not in RECIPE_FIELDS:
                close = suggest(str(key), RECIPE_FIELDS)
                self.fail(path + (key,), "unknown training setting",
                          f"did you mean {close!r}?" if close else "see the README's Recipe table")
            try:
                out[key] = coerce_recipe_value(key, value)
            except TypeError as exc:
                self.fail(path + (key,), str(exc), f"write it like the default, {key}: {yaml_text(RECIPE_FIELDS[key].default)}")
        return out


def _unknown(checker: _Checker, path: tuple, kind: str, name: str, choices, skipped=None) -> None:
    if skipped and name in skipped:   # installed, but refused when its plugin loaded: say why, not "did you mean"
        checker.fail(path, f"{kind} {name!r} was skipped when plugins loaded", f"{skipped[name]} — fix it there")
    close = suggest(name, choices)
    hint = f"did you mean {close!r}? (`fgvcbench plugins` lists them)" if close and close != name \
        else "run `fgvcbench plugins` to list what is installed"
    only = os.environ.get("FGVCBENCH_PLUGINS")
    if only is not None:   # the plugin that serves it may simply not be loaded
        hint = f"FGVCBENCH_PLUGINS={only!r} loads only those plugins: unset it, or add the one that provides it; " + hint
    checker.fail(path, f"unknown {kind} {name!r}", hint)


def _checkpoint_problem(registry: Registry, name: str, path: str) -> str | None:
    """Why the checkpoint at ``path`` cannot be ``name``'s weights (not a state dict, damaged,
    another architecture), or None: the model is built once with the file loaded, as every
    run would, so a bad file stops the suite here instead of failing each run. Errors other
    than the weights' own are left to the runs, which report them."""
    spec = registry.find_backbone(name)
    if spec is None:
        return None
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec.create(name, 2, path)
    except UserError as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 — a plugin's own failure: its runs say what it is
        return None
    return None


def _file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256, read in 1 MiB blocks."""
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_suite(path: str | os.PathLike, registry: Registry, *, scale: str | None = None,
               seeds: list[int] | None = None, output: str | None = None,
               device: str | None = None, data_root: str | None = None, check_data: bool = True,
               check_weights: bool = True) -> Suite:
    """Read, validate and expand a suite. CLI options override the file. With
    ``check_data`` a dataset whose root folder does not exist is an error here, before
    anything runs; with ``check_weights`` each checkpoint is loaded into its backbone once
    (a worker or a cluster job passes False: the command that started it checked them,
    and a checkpoint changed since has another digest, so another run id)."""
    from fgvcbench.data.pipeline import decode_cache_mode
    decode_cache_mode()   # a bad FGVCBENCH_DECODE_CACHE stops the command, not every run
    claim_stale_seconds()   # as a bad FGVCBENCH_CLAIM_STALE_SECONDS does
    file = Path(path)
    data, lines = load_yaml(file)
    ck = _Checker(str(path), lines)
    if data is None:
        ck.fail((), "the suite is empty", "see suites/quickstart.yaml for a working example")
    if not isinstance(data, dict):
        ck.fail((), "a suite must be a YAML mapping (datasets:, backbones:, methods: …)",
                "write `key: value` lines; suites/quickstart.yaml is a working example")
    ck.keys(data, TOP_KEYS, (), "the suite")
    name = ck.typed(data.get("name", file.stem), (str,), ("name",), "a string")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):   # a line break or tab in titles and folder names
        ck.fail(("name",), f"{name!r} holds a control character", "use a plain name such as my_suite, on one line")
    if output is None and "output" not in data and (not name.strip() or name.strip() in (".", "..")
                                                    or "/" in name or "\\" in name):
        # the default output is results/<name>: an empty name or a path would write elsewhere
        ck.fail(("name",), f"{name!r} is no suite name", "use a plain name such as my_suite (no '/', not empty)")
    if scale is not None and scale not in SCALES:   # from --scale: not the file's fault
        close = suggest(scale, SCALES)
        raise UserError(f"--scale {scale!r} is not a scale — " +
                        (f"did you mean {close!r}?" if close else f"use one of {', '.join(SCALES)}"))
    scale = scale or ck.typed(data.get("scale", "smoke"), (str,), ("scale",), "a string")
    if scale not in SCALES:
        close = suggest(scale, SCALES)
        ck.fail(("scale",), f"unknown scale {scale!r}",
                f"did you mean {close!r}?" if close else f"use one of {', '.join(SCALES)}")
    preset = SCALES[scale]
    if seeds is None:
        raw = data.get("seeds", preset["seeds"])
        if isinstance(raw, int) and not isinstance(raw, bool):
            if not 1 <= raw <= MAX_SEED_COUNT:
                ck.fail(("seeds",), f"seeds must be a count from 1 to {MAX_SEED_COUNT:,}, got {raw}",
                        "give a count (3) or a list ([0, 1, 2])")
            raw = list(range(raw))
        ck.typed(raw, (list,), ("seeds",), "a count or a list of integers", "give a count (3) or a list ([0, 1, 2])")
        for i, s in enumerate(raw):
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
                ck.fail(("seeds", i), f"a seed must be an integer from 0 to {MAX_SEED}, got {s!r}",
                        "list whole numbers from 0, e.g. seeds: [0, 1, 2]")
        repeat = first_repeat(raw)   # a repeat runs nothing twice; it is more likely a typo for another seed
        if repeat is not None:
            ck.fail(("seeds", repeat), f"seed {raw[repeat]} is listed twice", "list each seed once")
        seeds = list(raw)
    if not seeds:
        ck.fail(("seeds",), "no seeds", "give at least one seed")
    if device is not None and not DEVICE.fullmatch(device):   # --device (a dry run checks it too)
        raise UserError(f"--device {device!r}: unknown device — use auto, cpu, cuda, cuda:N or mps")
    device = device or ck.typed(data.get("device", "auto"), (str,), ("device",), "a string")
    if not DEVICE.fullmatch(device):
        ck.fail(("device",), f"unknown device {device!r}", "use auto, cpu, cuda, cuda:N or mps")
    env_root = default_data_root()
    # what a missing data root's message suggests: FGVCBENCH_DATA only where it would count
    root_fix = ("check --data-root" if data_root else
                "pass --data-root DIR" + ("" if "data_root" in data else " or set FGVCBENCH_DATA"))
    data_root = Path(data_root or ck.typed(data.get("data_root", env_root), (str,), ("data_root",), "a path"))
    data_root = data_root.expanduser()
    default_cache = str(default_cache_dir())
    cache_dir = Path(ck.typed(data.get("cache_dir", default_cache), (str,), ("cache_dir",), "a path")).expanduser()
    given = output or ck.typed(data.get("output", f"results/{name}"), (str,), ("output",), "a path")
    if not str(given).strip():   # '' is the current folder: records and tables would land among other files
        ck.fail(("output",), "an empty output folder", f"give a folder, e.g. output: results/{name.strip() or 'my_suite'}")
    out = Path(given)
    suite_train = ck.recipe_overrides(data.get("train"), ("train",))

    datasets = []
    root_errors: dict[str, SuiteError] = {}   # a dataset (canonical JSON) -> why its data root cannot be used
    for i, item in enumerate(ck.typed(data.get("datasets", []), (list,), ("datasets",), "a list")):
        entry = ck.entry(item, ("datasets", i), DATASET_KEYS, "dataset")
        spec = registry.datasets.get(entry["name"])
        if spec is None:
            _unknown(ck, ("datasets", i, "name"), "dataset", entry["name"], registry.datasets, registry.skipped_datasets)
        options = _dataset_options(ck, spec, entry.get("options"), ("datasets", i, "options"))
        base = registry.datasets.get(options["of"]) if isinstance(options.get("of"), str) else None
        if spec.is_view:
            # a view: its base's options are checked here too (a typo fails before any run
            # starts) and filled with the base's defaults, so writing a default changes no run id
            if base is None:
                _unknown(ck, ("datasets", i, "options", "of"), "dataset", options["of"], registry.datasets)
            options["of_options"] = _dataset_options(ck, base, options["of_options"],
                                                     ("datasets", i, "options", "of_options"))
        # the adapter that reads the folder: the dataset's own, or a view's base (``of``)
        reader = spec.folder_reader(options, registry.datasets)
        root = entry.get("root")
        if root is not None and reader is None:
            ck.fail(("datasets", i, "root"), f"dataset {spec.name!r} is generated: it reads no folder",
                    "remove root: (options set what is generated)")
        if root is not None:  # a relative root is a folder under data_root
            ck.typed(root, (str,), ("datasets", i, "root"), "a path")
            root = str(data_root / Path(root).expanduser())
        elif reader is not None:
            root = str(data_root / reader.folder_name)
        root_error = None
        if reader is not None and not Path(root).is_dir():
            where = ("datasets", i, "root") if entry.get("root") is not None else ("datasets", i)
            absolute = entry.get("root") is not None and Path(entry["root"]).expanduser().is_absolute()
            holds = Path(root).relative_to(data_root) if Path(root).is_relative_to(data_root) else None
            missing = "is a file, not a folder" if Path(root).exists() else "not found"
            root_error = ck.error(where, f"data root for {spec.name!r}" + (f" (its base {reader.name!r})"
                                                                           if reader is not spec else "")
                                  + f" {missing}: {root}",
                                  ("fix this entry's root: (an absolute path, which --data-root and "
                                   "FGVCBENCH_DATA do not move)" if absolute
                                   else f"{root_fix}" + (f" (the folder that holds {holds})" if holds else "")
                                   + ", or set this entry's root:")
                                  + f"; expected layout: {reader.layout or 'see the docs'}")
            if check_data:
                raise root_error   # else raised later, if a run that `--only` keeps needs it
        dataset = {"name": spec.name, "options": options}
        if reader is not None and root is not None and Path(root).name != reader.folder_name:
            # another copy than the usual folder (a subset, a re-split): part of the run's identity,
            # so two roots of one adapter are two datasets — by folder name, not machine path
            dataset["root_name"] = Path(root).name
        if any(d == dataset for d, _, _ in datasets):
            ck.fail(("datasets", i), f"dataset {spec.name!r} is listed twice with the same options and root",
                    "remove the repeated entry, or give it another root or options")
        datasets.append((dataset, root, ("datasets", i)))
        if root_error is not None:
            root_errors[canonical_json(dataset)] = root_error

    backbones = []
    for i, item in enumerate(ck.typed(data.get("backbones", []), (list,), ("backbones", ), "a list")):
        entry = ck.entry(item, ("backbones", i), BACKBONE_KEYS, "backbone")
        if registry.find_backbone(entry["name"]) is None:
            broken = [w for w in registry.warnings if f"matches({entry['name']!r}) raised" in w]
            if broken:   # the family that should serve it may be the one whose matches() raised
                ck.fail(("backbones", i, "name"), f"unknown backbone {entry['name']!r}; {broken[0]}",
                        "fix that plugin's matches() (it must return True or False), or uninstall it")
            _unknown(ck, ("backbones", i, "name"), "backbone", entry["name"], _backbone_names(registry))
        pretrained = entry.get("pretrained", False)
        ck.typed(pretrained, (bool, str), ("backbones", i, "pretrained"), "true, false or a checkpoint path")
        if isinstance(pretrained, str):
            pretrained = str(Path(pretrained).expanduser())
            if not Path(pretrained).is_file():
                what = "is a folder, not a checkpoint file" if Path(pretrained).is_dir() else "not found"
                ck.fail(("backbones", i, "pretrained"), f"checkpoint {what}: {pretrained}",
                        "give an existing .pth/.pt/.safetensors file, or true/false")
        backbone = {"name": entry["name"], "pretrained": pretrained}
        if isinstance(pretrained, str):
            # the weights' content is part of the run's identity (and of every cached stage): a
            # checkpoint retrained in place, or one path in two working folders, is not one run
            backbone["weights_sha256"] = _file_digest(Path(pretrained))
        if portable({"backbone": backbone}) in [portable({"backbone": b}) for b in backbones]:
            # the same weights: by a checkpoint's content, as a run's identity reads them
            ck.fail(("backbones", i), f"backbone {entry['name']!r} is listed twice with the same weights",
                    "remove the repeated entry")
        if isinstance(pretrained, str) and check_weights:
            problem = _checkpoint_problem(registry, entry["name"], pretrained)
            if problem:
                ck.fail(("backbones", i, "pretrained"), problem)
        backbones.append(backbone)

    methods, entry_cluster = [], {}
    recipes: dict[tuple, Recipe] = {}   # methods entry -> its resolved recipe (no variant or cell changes it)
    executor = ck.typed(data.get("executor", "local"), (str,), ("executor",), "local or submitit")
    if executor not in EXECUTORS:
        ck.fail(("executor",), f"unknown executor {executor!r}", f"use one of {', '.join(EXECUTORS)}")
    cluster = _cluster_settings(data.get("cluster") or {}, ck, ("cluster",))
    for i, item in enumerate(ck.typed(data.get("methods", []), (list,), ("methods",), "a list")):
        entry = ck.entry(item, ("methods", i), METHOD_KEYS, "method")
        method = registry.methods.get(entry["name"])
        if method is None:
            _unknown(ck, ("methods", i, "name"), "method", entry["name"], registry.methods, registry.skipped)
        variants = entry.get("variants", ["default"])
        if variants == "all":  # every variant once: those with the same params (default = code) collapse
            given = entry.get("params") if isinstance(entry.get("params"), dict) else {}
            seen: set[str] = set()
            variants = []
            for v in method.variants:
                key = canonical_json(method.resolve_params(v, given))
                if key not in seen:
                    seen.add(key)
                    variants.append(v)
        if isinstance(variants, str):
            variants = [variants]
        ck.typed(variants, (list,), ("methods", i, "variants"), "a list of variant names or 'all'")
        if not variants:
            ck.fail(("methods", i, "variants"), "no variants",
                    f"list at least one ({', '.join(method.variants)}), or write all, or drop the key for default")
        for j, v in enumerate(variants):
            if not isinstance(v, str):   # a list or mapping here would not even be looked up
                quote = f"quote it ('{v}') if it is a name; " if isinstance(v, (int, float)) else ""
                ck.fail(("methods", i, "variants", j), f"a variant is a name, got {type(v).__name__} {v!r}",
                        f"{quote}variants: {', '.join(method.variants)}")
        repeat = first_repeat(variants)
        if repeat is not None:
            ck.fail(("methods", i, "variants", repeat), f"variant {variants[repeat]!r} is listed twice",
                    "list each variant once")
        for j, v in enumerate(variants):
            if v not in method.variants:
                close = suggest(str(v), method.variants)
                ck.fail(("methods", i, "variants", j), f"method {method.name!r} has no variant {v!r}",
                        f"did you mean {close!r}?" if close else f"variants: {', '.join(method.variants)}")
        params = ck.typed(entry.get("params") or {}, (dict,), ("methods", i, "params"), "a mapping")
        for key in params:
            if key not in method.params:
                close = suggest(str(key), method.params)
                ck.fail(("methods", i, "params", key), f"method {method.name!r} has no parameter {key!r}",
                        f"did you mean {close!r}?" if close else f"parameters: {', '.join(method.params) or 'none'}")
            problem = method.param_problem(key, params[key])
            if problem:   # its type or choices, at the key's own line
                ck.fail(("methods", i, "params", key), problem,
                        None if " — " in problem else f"write it like the default, {key}: {yaml_text(method.params[key])}")
        steps = params.get("steps")
        if "steps" in params:  # a `steps` parameter is an ordered list of recipe-step names
            ck.typed(steps, (list,), ("methods", i, "params", "steps"), "a list of recipe-step names")
            for j, step in enumerate(steps):
                if not isinstance(step, str) or step not in registry.recipe_steps:
                    _unknown(ck, ("methods", i, "params", "steps", j), "recipe step", str(step),
                             registry.recipe_steps)
            repeat = first_repeat(steps)   # the ablation section refuses the same; a step applied twice is a typo
            if repeat is not None:
                ck.fail(("methods", i, "params", "steps", repeat), f"step {steps[repeat]!r} is listed twice",
                        "list each step once (for a knob a step would change twice, set it under train:)")
        train = ck.recipe_overrides(entry.get("train"), ("methods", i, "train"))
        if entry.get("cluster") is not None:
            entry_cluster[("methods", i)] = _cluster_settings(entry["cluster"], ck, ("methods", i, "cluster"))
        recipe = recipes[("methods", i)] = _resolve_recipe(method, scale, preset, suite_train, train, ck,
                                                           ("methods", i))
        for variant in variants:  # values no run can use fail now, not hours into the grid
            resolved = method.resolve_params(variant, params)
            try:
                method.check_params(resolved, recipe)
            except Exception as exc:  # noqa: BLE001 — a plugin's check must not end in a traceback
                message = str(exc) if isinstance(exc, UserError) else \
                    f"{method.name}'s parameter check raised {_one_line(exc)}"
                where = ("methods", i, "params") if params else ("methods", i)
                ck.fail(where, message if variant == "default" else f"variant {variant!r}: {message}")
            problem = _steps_problem(registry, recipe, resolved.get("steps") if "steps" in method.params else None)
            if problem:
                where = ("methods", i, "params", "steps") if "steps" in params else ("methods", i)
                ck.fail(where, problem if variant == "default" else f"variant {variant!r}: {problem}")
        methods.append((method, variants, params, train, ("methods", i)))

    exclude = ck.typed(data.get("exclude") or [], (list,), ("exclude",), "a list of mappings")
    for i, rule in enumerate(exclude):
        ck.typed(rule, (dict,), ("exclude", i), "a mapping like {backbone: pixels, variant: linear_probe}")
        ck.keys(rule, EXCLUDE_KEYS, ("exclude", i), "an exclude rule")
        if isinstance(rule.get("seed"), bool):   # true would match seed 1 (true == 1 in Python)
            ck.fail(("exclude", i, "seed"), f"seed {yaml_text(rule['seed'])} is not a seed",
                    "write one of the grid's seeds as an integer, e.g. seed: 1")

    ablation = _ablation_plan(data.get("ablation"), registry, ck)
    if ablation:   # each row's steps on the recipe its runs take: a step that fails, fails every run of it
        recipe = recipes[("ablation",)] = _resolve_recipe(registry.methods[ablation.method], scale, preset,
                                                          suite_train, {}, ck, ("ablation",))
        for row, steps in ablation.rows():
            problem = _steps_problem(registry, recipe, steps)
            if problem:
                extra = row.startswith("+")
                ck.fail(("ablation", "extra", ablation.extra.index(row[1:])) if extra
                        else ("ablation", "steps", ablation.order.index(row)), problem)
    for key, items in (("datasets", datasets), ("backbones", backbones), ("methods", methods)):
        if not items and not (key == "methods" and ablation):
            ck.fail((key,), f"no {key} listed", f"add at least one entry under '{key}:' (see `fgvcbench plugins`)")

    runs: list[RunSpec] = []
    # two entries or two variants that give one computation would run it twice under two labels
    made_by: dict[str, tuple] = {}   # computation (_computation) -> (the methods entry, the variant) that listed it
    run_cluster: dict[str, dict] = {}   # two entries of one method may ask for other cluster settings
    aliases: dict[str, set[str]] = {}
    cells = []   # per methods entry and variant, what no dataset or backbone changes: resolved once
    for method, variants, params, train, mpath in methods:
        for variant in variants:
            params_of = method.resolve_params(variant, params)
            # the variants that would compute this run (the grid's own names are dropped below)
            same = {v for v in method.variants if method.resolve_params(v, params) == params_of}
            cells.append((method, mpath, variant, recipes[mpath], params_of, same))
    for dataset, root, _ in datasets:
        for backbone in backbones:
            for method, mpath, variant, recipe, params_of, same in cells:
                for seed in seeds:
                    spec = RunSpec(suite=name, dataset=dataset, backbone=backbone, method=method.name,
                                   variant=variant, seed=seed, scale=scale,
                                   params=params_of, recipe=recipe.to_dict(), data_root=root)
                    if same:
                        aliases[spec.run_id] = same
                    first, first_variant = made_by.setdefault(_computation(spec), (mpath, variant))
                    if (first, first_variant) != (mpath, variant):
                        _repeated(ck, method.name, first, first_variant, mpath, variant)
                    runs.append(spec)
                    if mpath in entry_cluster:
                        run_cluster[spec.run_id] = entry_cluster[mpath]
    names = _DatasetNames(runs)
    _check_exclude_values(ck, exclude, runs, names)
    runs = [spec for spec in runs if not any(_matches(rule, spec, names) for rule in exclude)]
    # a variant some entry of the method lists (this run's own included) is that entry's name,
    # never another entry's alias
    listed: dict[str, set[str]] = {}
    for spec in runs:
        listed.setdefault(spec.method, set()).add(spec.variant)
    aliases = {spec.run_id: rest for spec in runs if (rest := aliases.get(spec.run_id, set()) - listed[spec.method])}
    def make_spec(dataset, root, backbone, method, variant, params, seed) -> RunSpec:
        recipe = _resolve_recipe(method, scale, preset, suite_train, {}, ck, ("ablation",))
        return RunSpec(suite=name, dataset=dataset, backbone=backbone, method=method.name, variant=variant,
                       seed=seed, scale=scale, params=method.resolve_params("default", params),
                       recipe=recipe.to_dict(), data_root=root)

    if ablation:
        method = registry.methods[ablation.method]
        for dataset, root, _ in datasets:
            for backbone in backbones:
                for row, steps in ablation.rows():
                    for seed in seeds:
                        spec = make_spec(dataset, root, backbone, method, ablation.label(steps), {"steps": steps}, seed)
                        twin = made_by.get(_computation(spec))
                        if twin is not None:   # a methods entry that runs an ablation row again
                            line = ck.lines.get(("ablation",))
                            ck.fail(twin[0], f"method {method.name!r} (variant {twin[1]!r}) runs the ablation's row "
                                             f"{row!r}" + (f" (line {line})" if line else "")
                                    + " again: the same steps, params and recipe",
                                    "remove the entry (the ablation table shows that row), or change its params")
                        runs.append(spec)
    odd = _first_non_finite(data, ())
    if odd is not None:   # where no check of its own refused it: a plugin's param or option
        ck.fail(odd[0], f"{odd[1]} is not a number a run can use or a record can keep (JSON has no NaN or Infinity)",
                "give a finite number (a large one for no limit), or null where the setting takes it")
    if not runs:
        if exclude:
            ck.fail(("exclude",), "the grid is empty after 'exclude'", "loosen the exclude rules")
        ck.fail((), "the grid is empty", "list at least one dataset, backbone and method (or an ablation:)")
    baseline, baseline_note = _baseline(data.get("baseline"), runs, ck, aliases)
    # train: settings recipe steps replace: one note per finding, naming each place that has it,
    # with the run ids it is about (`--only` shows its own)
    found: dict[str, list] = {}   # finding -> [places, run ids, overwritten, given, the entry's own train: keys]

    def replaced(where: str, ids: set[str], rows: list[list[str]], entry_train: dict, path: tuple) -> None:
        given = {**suite_train, **entry_train}
        overwritten = steps_overwrite(registry, recipes[path], rows, given)
        if overwritten:
            mine = set(entry_train) & set(overwritten)
            finding = found.setdefault(canonical_json([overwritten, given, sorted(mine)]),
                                       [[], set(), overwritten, given, mine])
            finding[0].append(where)
            finding[1].update(ids)

    for method, variants, params, train, mpath in methods:
        rows = [method.resolve_params(v, params).get("steps") for v in variants]
        rows = [r for r in rows if isinstance(r, list)]
        if rows and (suite_train or train):
            line = ck.lines.get(mpath)
            replaced(f"{_dotted(mpath)} ({method.name}" + (f", line {line})" if line else ")"),
                     {spec.run_id for spec in runs if spec.method == method.name}, rows, train, mpath)
    if ablation and suite_train:
        method, line = registry.methods[ablation.method], ck.lines.get(("ablation",))
        replaced("ablation" + (f" (line {line})" if line else ""),
                 {spec.run_id for spec in runs if spec.method == method.name and spec.variant.startswith("steps:")},
                 [steps for _, steps in ablation.rows()], {}, ("ablation",))
    notes = [(steps_overwrite_note(" and ".join(places), overwritten, given, mine), ids)
             for places, ids, overwritten, given, mine in found.values()]
    if baseline_note:   # about the whole grid's tables: shown whatever --only keeps
        notes.append((baseline_note, {spec.run_id for spec in runs}))
    return Suite(name=name, file=str(path), output=out, scale=scale, seeds=seeds, device=device,
                 data_root=data_root, cache_dir=cache_dir, runs=runs,
                 description=str(data.get("description", "")),
                 datasets=[(d, r) for d, r, _ in datasets], backbones=backbones, ablation=ablation,
                 make_spec=make_spec, executor=executor, cluster=cluster, run_cluster=run_cluster,
                 baseline=baseline, root_errors=root_errors, notes=notes, train_given=dict(suite_train),
                 aliases=aliases)


def _first_non_finite(value: Any, path: tuple) -> tuple[tuple, str] | None:
    """The path and YAML spelling of the first .nan / .inf in ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, ".nan" if value != value else ("-.inf" if value < 0 else ".inf")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _first_non_finite(item, path + (key,))
        if found is not None:
            return found
    return None


def _probe(value: Any) -> Any:
    """Another value of ``value``'s type, to tell a step that scales a setting from one that
    replaces it; ``_probe`` itself where there is none to try (None)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7
    if isinstance(value, float):
        return value * 1.5 + 0.125
    if isinstance(value, str):
        return value + "-probe"
    return _probe


def _steps_problem(registry, recipe: Recipe, steps: Any) -> str | None:
    """Why ``steps`` (a list of known recipe-step names; anything else is checked elsewhere)
    cannot apply to ``recipe`` as every run of them would — a step that raises or returns
    no Recipe, or a recipe no run can use — or None."""
    if not isinstance(steps, list) or not all(isinstance(s, str) and s in registry.recipe_steps for s in steps):
        return None
    from fgvcbench.run import apply_steps
    try:
        apply_steps(registry, recipe, steps)
    except UserError as exc:
        return str(exc)
    return None


def _through(registry, recipe: Recipe, steps: list[str]) -> list[Recipe] | None:
    """``recipe`` after each of ``steps`` in turn (the first item: ``recipe``); None where a
    step is unknown or raises (its runs fail and say why)."""
    trail = [recipe]
    for name in steps:
        step = registry.recipe_steps.get(name)
        if step is None:
            return None
        try:
            trail.append(step.apply(trail[-1]))
        except Exception:  # noqa: BLE001
            return None
        if not isinstance(trail[-1], Recipe):   # refused where the suite loads (_steps_problem)
            return None
    return trail


def steps_overwrite(registry, recipe: Recipe, rows: list[list[str]], given: dict[str, Any]) -> dict[str, tuple]:
    """The ``train:`` settings (``given``, already in ``recipe``) that recipe steps replace:
    field -> (the step that last set it, the value trained), from the first of ``rows`` (lists
    of steps) that does. A field the steps leave at ``train:``'s value at the end is not
    one, nor one they derive from it (``long_training`` multiplies the epochs it is given,
    ``fixres`` sizes from the image size: another ``train:`` value would train otherwise)."""
    found: dict[str, tuple] = {}
    for steps in rows:
        trail = _through(registry, recipe, steps)
        if trail is None:
            continue
        for key in given:
            final = getattr(trail[-1], key)
            if key in found or final == getattr(recipe, key):
                continue
            probe = _probe(getattr(recipe, key))
            if probe is not _probe:
                try:
                    other = _through(registry, recipe.replace(**{key: probe}), steps)
                except Exception:  # noqa: BLE001 — a value the recipe refuses: no probe
                    other = None
                if other is not None and getattr(other[-1], key) != final:
                    continue   # derived from train:'s value
            last = max(i for i in range(1, len(trail)) if getattr(trail[i], key) != getattr(trail[i - 1], key))
            found[key] = (steps[last - 1], final)
    return found


def steps_overwrite_note(where: str, overwritten: dict[str, tuple], given: dict[str, Any],
                         entry_keys: set[str] | frozenset = frozenset()) -> str:
    """The note for :func:`steps_overwrite`'s finding; ``entry_keys``: those set in a methods
    entry's own ``train:`` (the others come from the suite's, which other methods read too)."""
    n = len(overwritten)
    fields = "; ".join(f"{key}: {given[key]} → {final} (step {step!r})" for key, (step, final) in overwritten.items())
    mine = [k for k in overwritten if k in entry_keys]
    suite = [k for k in overwritten if k not in entry_keys]
    fixes = ([f"remove {', '.join(mine)} from this entry's train:"] if mine else []) + \
        ([f"move {', '.join(suite)} from the suite's train: to the train: of the methods entries meant to use "
          f"{'it' if len(suite) == 1 else 'them'}"] if suite else [])
    steps = len({step for step, _ in overwritten.values()})
    return (f"{where}: its recipe steps replace {n} train: setting{'s' if n != 1 else ''} — {fields}; runs train "
            f"with the steps' values (--dry-run and a record's spec.recipe show train:'s, notes.applied_recipe what "
            f"trained): {' and '.join(fixes)}, or leave out the step{'s' if steps != 1 else ''} that "
            f"set{'s' if steps == 1 else ''} {'it' if n == 1 else 'them'}")


def _computation(spec: RunSpec) -> str:
    """What a run computes: its identity without the variant's name (a variant is its params)."""
    return canonical_json({**spec.identity(), "variant": None})


def first_repeat(items: list) -> int | None:
    """The index of the first item equal to an earlier one (any JSON-like values), or None."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        key = canonical_json(item)
        if key in seen:
            return i
        seen.add(key)
    return None


def _repeated(ck: "_Checker", method: str, first: tuple, first_variant: str, path: tuple, variant: str) -> None:
    """A methods entry (or one of its variants) that computes what an earlier one does."""
    if first == path:   # two variants of one entry, one set of params (an alias: default = code)
        ck.fail((*path, "variants"), f"variants {first_variant!r} and {variant!r} of {method!r} have the same "
                                     f"params: they would run the same thing twice", "list one of them")
    line = ck.lines.get(first)
    same = f"variant {variant!r}" + (f" (as its {first_variant!r})" if variant != first_variant else "")
    ck.fail(path, f"method {method!r} repeats {_dotted(first)}" + (f" (line {line})" if line else "")
            + f": {same} resolves to the same params and recipe", "remove one, or change its params or train")


def _baseline(value: Any, runs: list[RunSpec], ck: "_Checker",
              aliases: dict | None = None) -> tuple[str | None, str | None]:
    """``baseline: method[:variant][@config]``: one configuration of the grid's own runs
    per setup, as ``leaderboard --baseline`` takes it (one matcher,
    :func:`~fgvcbench.report.compare.match_baseline`) — checked here, before anything runs.
    A variant the suite lists under another name (``aliases``: run id → names) becomes that
    name, with a note (the tables name the listed variant). Returns (baseline, note)."""
    if value is None:
        return None, None
    from fgvcbench.report.compare import BaselineMismatch, match_baseline, parse_baseline
    from fgvcbench.spec import config_key
    ck.typed(value, (str,), ("baseline",), "a method name or method:variant, e.g. finernet:single_step")
    # under torchrun the runs become world_size-N runs (another config hash): hash them as they will be
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        world = 1
    configs = []
    for r in runs:
        spec = r.to_dict()
        configs.append((config_key({**spec, "world_size": world} if world > 1 else spec), spec))
    try:
        match_baseline(configs, value)
    except BaselineMismatch as exc:
        method, variant, _ = parse_baseline(value) if exc.message == "matches no run" else (None, None, None)
        listed = sorted({r.variant for r in runs if r.method == method and variant in (aliases or {}).get(r.run_id, ())})
        if len(listed) != 1:
            ck.fail(("baseline",), f"{value!r} {exc.message}", exc.hint)
        _, at, config = value.strip().partition("@")
        named = f"{method}:{listed[0]}" + (f"@{config}" if at else "")
        note = (f"baseline: {value} — variant {variant!r} computes the same runs as {method}:{listed[0]}, which the "
                f"suite lists; the tables compare with {named}")
        return _baseline(named, runs, ck)[0], note
    return value, None


def _ablation_plan(section: Any, registry: Registry, ck: "_Checker") -> AblationPlan | None:
    if section is None:
        return None
    ck.typed(section, (dict,), ("ablation",), "a mapping with steps: [...] (and optionally method, extra)")
    ck.keys(section, ABLATION_KEYS, ("ablation",), "the ablation section")
    method_name = ck.typed(section.get("method", "recipe"), (str,), ("ablation", "method"), "a method name")
    method = registry.methods.get(method_name)
    if method is None:
        _unknown(ck, ("ablation", "method"), "method", method_name, registry.methods, registry.skipped)
    if "steps" not in method.params:
        ck.fail(("ablation", "method"), f"method {method_name!r} has no 'steps' parameter to ablate",
                "use the recipe method")
    lists = {}
    for key, default in (("steps", list(method.params["steps"])), ("extra", [])):
        value = ck.typed(section.get(key, default), (list,), ("ablation", key), "a list of recipe-step names")
        for j, step in enumerate(value):
            if not isinstance(step, str) or step not in registry.recipe_steps:
                _unknown(ck, ("ablation", key, j), "recipe step", str(step), registry.recipe_steps)
        lists[key] = list(value)
    # a step twice in `extra` is one row twice; twice in `steps`, two rows under one name, and
    # `ablate --step` could not say which of them it measures
    for key, fix in (("steps", "list each step once (for a knob a step would change twice, set it under train:)"),
                     ("extra", "list each extra step once")):
        repeat = first_repeat(lists[key])
        if repeat is not None:
            ck.fail(("ablation", key, repeat), f"{key} step {lists[key][repeat]!r} is listed twice", fix)
    for j, step in enumerate(lists["extra"]):   # every row has it already: +step would be the full recipe again
        if step in lists["steps"]:
            ck.fail(("ablation", "extra", j), f"extra step {step!r} is in steps: already, so its row would train "
                    "the full recipe again under another name", f"drop {step} from extra:")
    if not lists["steps"]:
        ck.fail(("ablation", "steps"), "no steps to ablate", "list the steps in order, e.g. [base, cosine]")
    return AblationPlan(method=method_name, order=lists["steps"], extra=lists["extra"])


def _backbone_names(registry: Registry) -> list[str]:
    names = list(registry.backbones)
    try:
        import timm
        names += timm.list_models()
    except Exception:  # noqa: BLE001 — suggestions are a nicety
        pass
    return names


def _cluster_settings(value, ck: "_Checker", path: tuple) -> dict:
    from fgvcbench.cluster import BACKENDS, MAX_SETTING   # one rule for the suite's and --cluster's values
    value = ck.typed(value, (dict,), path, "a mapping of cluster settings")
    out = {}
    for key, item in value.items():
        if key not in CLUSTER_KEYS:
            close = suggest(str(key), CLUSTER_KEYS)
            ck.fail(path + (key,), f"unknown cluster setting {key!r}",
                    f"did you mean {close!r}?" if close else f"settings: {', '.join(sorted(CLUSTER_KEYS))}")
        kind = CLUSTER_KEYS[key]
        if kind is int and (isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_SETTING):
            ck.fail(path + (key,), f"cluster {key} must be an integer from 0 to {MAX_SETTING:,}, got {item!r}",
                    f"write a whole number, e.g. {key}: 1")
        if kind is str and not isinstance(item, str):
            ck.fail(path + (key,), f"cluster {key} must be a string, got {item!r}", f"quote it: {key}: \"{item}\"")
        if key == "backend" and item not in BACKENDS:
            ck.fail(path + (key,), f"unknown cluster backend {item!r}", f"use {', '.join(BACKENDS)}")
        out[key] = item
    return out


def _resolve_recipe(method, scale, preset, suite_train, entry_train, ck: _Checker, path: tuple) -> Recipe:
    default = Recipe()   # the method's recipe at this scale: what a train: setting overrides
    for layer in (method.recipe, preset["recipe"], method.scales.get(scale, {})):
        default = default.replace(**{k: coerce_recipe_value(k, v) for k, v in layer.items()})
    recipe = default
    for layer in (suite_train, entry_train):
        recipe = recipe.replace(**{k: coerce_recipe_value(k, v) for k, v in layer.items()})
    for key, problem in recipe.validate():
        # the setting the suite gave: the named one, else one whose value causes the problem too
        fields = (key,) + RELATED_FIELDS.get(key, ())
        mine = next((k for k in fields if k in entry_train), None)
        theirs = next((k for k in fields if k in suite_train), None)
        where = path + ("train", mine) if mine else (("train", theirs) if theirs else path)
        given = mine or theirs
        if given == key:
            hint = f"give a value that fits, or remove it for the default ({key}: {getattr(default, key)})"
        elif given:
            hint = f"{key} is the method's default ({getattr(default, key)}); {given} is set here"
        else:
            hint = f"method {method.name!r} sets it itself: report it to the plugin's authors"
        ck.fail(where, f"training setting {key} {problem}", hint)
    return recipe


class _DatasetNames:
    """What an exclude rule's ``dataset:`` names, as tables print datasets: a run's title
    (``cub (crop=bbox)`` where two entries share a label), its label (``imagefolder@birds``,
    ``coarse(cub)``) — each picks only the runs it is printed for — or else an adapter's
    name, which picks every entry of that adapter."""

    def __init__(self, runs: list[RunSpec]) -> None:
        from fgvcbench.spec import dataset_titles
        found = {canonical_json(spec.dataset): spec.dataset for spec in runs}
        titles = dataset_titles(found.values())
        self.texts = {key: {titles[key], dataset_label(d)} for key, d in found.items()}
        self.printed = set().union(*self.texts.values())

    def match(self, value: Any, spec: RunSpec) -> bool:
        if isinstance(value, str) and value in self.printed:
            return value in self.texts[canonical_json(spec.dataset)]
        return value == spec.dataset["name"]

    def values(self, spec: RunSpec) -> list:
        return sorted(self.texts[canonical_json(spec.dataset)]) + [spec.dataset["name"]]


def _rule_values(spec: RunSpec, names: _DatasetNames) -> dict[str, list]:
    """What each exclude key may name in a run (a dataset: see :class:`_DatasetNames`)."""
    return {"dataset": names.values(spec), "backbone": [spec.backbone["name"]], "method": [spec.method],
            "variant": [spec.variant], "seed": [spec.seed]}


def _matches(rule: dict, spec: RunSpec, names: _DatasetNames) -> bool:
    values = _rule_values(spec, names)
    return all(names.match(v, spec) if k == "dataset" else v in values[k] for k, v in rule.items())


def _check_exclude_values(ck: _Checker, exclude: list, runs: list[RunSpec], names: _DatasetNames) -> None:
    """Every value an exclude rule names is in the grid: a typo would exclude nothing."""
    grid: dict[str, dict] = {}   # key -> its values in the grid, in order (a dict: no quadratic scan)
    for spec in runs:
        for key, values in _rule_values(spec, names).items():
            grid.setdefault(key, {}).update(dict.fromkeys(values))
    for i, rule in enumerate(exclude):
        for key, value in rule.items():
            values = list(grid.get(key, {}))   # a list: a rule's value may be unhashable (a YAML list)
            if value in values:
                continue
            names = [str(v) for v in values]
            close = suggest(str(value), names) if isinstance(value, str) else None
            if close is not None and close == value:   # '0' for the seed 0: the same text, another type
                hint = f"write it unquoted, {key}: {value} (the grid's {key}s are {type(values[0]).__name__}s)"
            else:
                hint = f"did you mean {close!r}?" if close else f"its {key}s: {', '.join(names) or 'none'}"
            ck.fail(("exclude", i, key), f"{key} {value!r} is not in this suite's grid, so the rule excludes nothing",
                    hint)
