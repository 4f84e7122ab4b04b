"""The plugin manager: entry points → pluggy → registries of named things.

Every plugin, built-in or third-party, is an entry point in the ``fgvcbench`` group.
A plugin that fails to import, or whose hook raises, is recorded with its error and
skipped: it never takes the CLI down. ``FGVCBENCH_PLUGINS=a,b`` loads only the named
entry points (an empty value loads none).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable

import pluggy

from fgvcbench import hookspecs
from fgvcbench.errors import UserError
from fgvcbench.method import collecting

GROUP = "fgvcbench"
HOOKS = ("fgvcbench_methods", "fgvcbench_datasets", "fgvcbench_backbones", "fgvcbench_recipe_steps",
         "fgvcbench_run_finished")
_KINDS = {"fgvcbench_methods": "methods", "fgvcbench_datasets": "datasets",
          "fgvcbench_backbones": "backbones", "fgvcbench_recipe_steps": "recipe_steps"}


@dataclass
class PluginInfo:
    """One plugin: entry-point name, where it came from, which hooks it implements, and
    the error if it could not be loaded or one of its hooks raised."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    provides: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def add_error(self, message: str) -> None:
        """Keep every problem of the plugin, not only the last."""
        self.error = message if not self.error else f"{self.error}; {message}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "module": self.module, "distribution": self.distribution,
                "version": self.version, "hooks": self.hooks, "provides": self.provides,
                "error": self.error}


_CORE = os.path.dirname(os.path.abspath(__file__))


def _where(frames) -> str:
    """`` (file.py:LINE)`` of the innermost frame outside the core and pluggy: the plugin's
    own line, e.g. the ``Method(...)`` the core refused ("" without frames)."""
    own = [f for f in frames if not f.filename.startswith("<")          # generated code: a dataclass __init__
           and not os.path.abspath(f.filename).startswith(_CORE + os.sep) and f"{os.sep}pluggy{os.sep}" not in f.filename]
    frame = (own or frames or [None])[-1]
    return f" ({os.path.basename(frame.filename)}:{frame.lineno})" if frame else ""


def _one_line(exc: BaseException) -> str:
    """The exception in one line, with the place to fix it (:func:`_where`)."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    return f"{exc.__class__.__name__}: {exc}{_where(frames)}".replace("\n", " ")


def _builtin_first(ep) -> tuple[bool, str]:
    """Entry points in load order: fgvcbench's own plugins first (a third-party plugin that
    reuses a built-in name is the one refused), then by name."""
    dist = getattr(ep, "dist", None)
    return (not (dist is not None and dist.metadata["Name"] == "fgvcbench"), ep.name)


class Registry:
    """Named methods, datasets, backbones and recipe steps from all loaded plugins."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.methods: dict[str, Any] = {}
        self.datasets: dict[str, Any] = {}
        self.backbones: dict[str, Any] = {}
        self.recipe_steps: dict[str, Any] = {}
        self.origin: dict[tuple[str, str], str] = {}   # (kind, name) -> plugin name
        self.skipped: dict[str, str] = {}   # a method refused at registration -> why (for "unknown method")
        self.skipped_datasets: dict[str, str] = {}   # the same for datasets
        self.warnings: list[str] = []

    # -- loading -----------------------------------------------------------------------
    def load_entry_points(self, only: Iterable[str] | None = None) -> None:
        every = metadata.entry_points()
        points = sorted(every.select(group=GROUP), key=_builtin_first)
        self._check_group_names(every)
        if only is not None:
            only = set(only)
            names = [ep.name for ep in points]
            if not only:   # what a suite then hits is "unknown dataset": say where it comes from
                self.warnings.append("FGVCBENCH_PLUGINS is set but empty, so no plugin loads (no method, dataset "
                                     "or backbone) — unset it to load every plugin, or name some of: "
                                     + ",".join(names))
            for name in sorted(only - set(names)):   # a typo would silently load nothing
                close = suggest(name, names)
                self.warnings.append(f"FGVCBENCH_PLUGINS names {name!r}, which is not installed"
                                     + (f" — did you mean {close!r}?" if close else f" — installed: {', '.join(names)}"))
        for ep in points:
            if only is not None and ep.name not in only:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(name=ep.name, module=ep.value,
                              distribution=dist.metadata["Name"] if dist else None,
                              version=dist.version if dist else None)
            try:
                obj = ep.load()
            except BaseException as exc:  # noqa: BLE001 — a broken plugin must not break the CLI
                if isinstance(exc, KeyboardInterrupt):
                    raise
                info.error = f"failed to import: {_one_line(exc)}"
                self.plugins[ep.name] = info
                continue
            self.register(obj, info)

    def _check_group_names(self, every) -> None:
        """A plugin declared under a misspelt entry-point group is never loaded: say so."""
        squash = lambda g: g.lower().replace("-", "").replace("_", "").replace(".", "")  # noqa: E731
        for group in sorted(set(every.groups) - {GROUP}):
            if squash(group) != squash(GROUP) and not difflib.get_close_matches(group, [GROUP], cutoff=0.8):
                continue
            for ep in every.select(group=group):
                dist = getattr(ep, "dist", None)
                owner = f"distribution {dist.metadata['Name']!r}" if dist is not None else "an installed package"
                self.warnings.append(f"{owner} declares entry point {ep.name!r} in group {group!r}, which "
                                     f"fgvcbench does not read — name the group {GROUP!r} "
                                     f"([project.entry-points.{GROUP}] in its pyproject.toml) and reinstall it")

    def register(self, obj: Any, info: PluginInfo | None = None) -> None:
        """Register a plugin object (module or instance) and collect what it provides."""
        info = info or PluginInfo(name=getattr(obj, "__name__", repr(obj)), module=getattr(obj, "__name__", ""))
        if info.name in self.plugins and self.plugins[info.name].error is None:
            self.warnings.append(f"plugin {info.name!r} registered twice; keeping the first")
            return
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:  # noqa: BLE001 — e.g. a hook with a wrong signature
            info.error = f"invalid plugin: {_one_line(exc)}"
            self.plugins[info.name] = info
            return
        self.plugins[info.name] = info
        self._check_hook_names(obj, info)
        for impl_hook in HOOKS:
            caller = getattr(self.pm.hook, impl_hook)
            impls = [i for i in caller.get_hookimpls() if i.plugin is obj]
            if not impls:
                continue
            info.hooks.append(impl_hook)
            kind = _KINDS.get(impl_hook)
            if kind is None:
                continue
            for impl in impls:
                try:
                    with collecting():   # one invalid Method must not hide the plugin's others
                        returned = impl.function()
                        items = _as_items(returned)   # a generator hook's body runs here
                except Exception as exc:  # noqa: BLE001
                    info.add_error(f"{impl_hook} raised {_one_line(exc)}")
                    continue
                if items is None:
                    what = type(returned).__name__
                    info.add_error(f"{impl_hook} returned a {what}, not a list — return [{what}(...), …] "
                                   f"(a list, even of one)")
                    continue
                for item in items:
                    self._add(kind, item, info)

    def _check_hook_names(self, obj: Any, info: PluginInfo) -> None:
        """A misspelt hook, or a hook without ``@hookimpl``, would be ignored in silence."""
        marked = {i.function for hook in HOOKS for i in getattr(self.pm.hook, hook).get_hookimpls() if i.plugin is obj}
        for attr in sorted(a for a in dir(obj) if a.startswith("fgvcbench_")):
            value = getattr(obj, attr, None)
            if not callable(value):
                continue
            if attr not in HOOKS:
                close = suggest(attr, HOOKS)
                self.warnings.append(f"plugin {info.name!r} defines {attr}, which is no fgvcbench hook — "
                                     + (f"did you mean {close}?" if close else f"the hooks: {', '.join(HOOKS)}"))
            elif value not in marked and getattr(value, "__func__", value) not in marked:
                self.warnings.append(f"plugin {info.name!r}: {attr} is not marked @hookimpl "
                                     "(from fgvcbench.api), so it is never called")

    def _add(self, kind: str, item: Any, info: PluginInfo) -> None:
        from fgvcbench.backbones import BackboneSpec
        from fgvcbench.data.base import DatasetSpec
        from fgvcbench.engine.recipe import RecipeStep
        from fgvcbench.method import Method
        expected = {"methods": Method, "datasets": DatasetSpec, "backbones": BackboneSpec,
                    "recipe_steps": RecipeStep}[kind]
        if not isinstance(item, expected):
            info.add_error(f"fgvcbench_{kind} returned a {type(item).__name__}, not a {expected.__name__} "
                           f"(from fgvcbench.api); skipped")
            return
        invalid = getattr(item, "invalid", None)
        if invalid is not None:   # the others of its plugin still load
            problem, stack = invalid
            why = f"{problem}{_where(stack)}"
            skipped = self.skipped if kind == "methods" else self.skipped_datasets
            skipped.setdefault(item.name, f"plugin {info.name!r} defines it wrongly: {why}")
            self.warnings.append(f"plugin {info.name!r}: {kind[:-1]} {item.name!r} skipped — {why}")
            return
        table = getattr(self, kind)
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            self.warnings.append(f"plugin {info.name!r} returned a {kind[:-1]} without a name; skipped")
            return
        if name in table:
            kept = self.origin[(kind, name)]
            self.warnings.append(f"{kind[:-1]} {name!r} from plugin {info.name!r} clashes with the one "
                                 f"from {kept!r}, which is kept (it loaded first: built-ins, then plugins by "
                                 f"entry-point name) — rename the one in {info.name!r}")
            return
        table[name] = item
        self.origin[(kind, name)] = info.name
        info.provides.setdefault(kind, []).append(name)

    # -- lookup ------------------------------------------------------------------------
    def find_backbone(self, name: str):
        """An exact backbone name first, then the first family spec that serves it."""
        if name in self.backbones:
            return self.backbones[name]
        for spec in self.backbones.values():
            try:
                if spec.matches is not None and spec.serves(name):
                    return spec
            except Exception as exc:  # noqa: BLE001 — one family's broken matches() must not hide the others
                warning = (f"backbone family {spec.name!r} (plugin {self.origin.get(('backbones', spec.name))!r}): "
                           f"matches({name!r}) raised {_one_line(exc)}; skipped for that name")
                if warning not in self.warnings:
                    self.warnings.append(warning)
        return None

    def describe(self, name: str) -> dict:
        """What a suite can say about one method, dataset, backbone or recipe step."""
        kinds = ("methods", "datasets", "backbones", "recipe_steps")
        for kind in kinds:
            item = getattr(self, kind).get(name)
            if item is None and kind == "backbones":
                item = self.find_backbone(name)   # a family spec (timm) serves most backbone names
            if item is None:
                continue
            out = {"name": name, "kind": kind[:-1].replace("_", " "),
                   "plugin": self.origin.get((kind, item.name)), "description": getattr(item, "description", "")}
            if kind == "backbones" and item.name != name:
                out["served_by"] = item.name
            if kind == "methods":
                out["params"] = [{"param": k, "default": v, "accepts": item.param_type_words(k)}
                                 for k, v in item.params.items()]
                out["variants"] = {v: dict(changes) for v, changes in item.variants.items()}
                out["recipe"] = dict(item.recipe)
                out["scales"] = {k: dict(v) for k, v in item.scales.items()}
                out["checks_values"] = item.check is not None
            elif kind == "recipe_steps":
                out["sets"] = _step_changes(item)
            elif kind == "datasets":
                out.update(options=dict(item.options), needs_root=item.needs_root, default_root=item.default_root,
                           layout=item.layout, choices={k: list(v) for k, v in item.choices.items()})
            return out
        for kind, skipped in (("method", self.skipped), ("dataset", self.skipped_datasets)):
            if name in skipped:
                raise UserError(f"{kind} {name!r} was skipped when plugins loaded: {skipped[name]}")
        every = [n for kind in kinds for n in getattr(self, kind)]
        close = suggest(name, every)
        raise UserError(f"no method, dataset, backbone or recipe step named {name!r} — "
                        + (f"did you mean {close!r}? " if close else "") + "`fgvcbench plugins` lists them all")

    def list(self, kind: str, pattern: str = "*") -> list[str]:
        """timm-style discovery: ``registry.list("methods", "fine*")``."""
        return sorted(n for n in getattr(self, kind) if fnmatch.fnmatch(n, pattern))

    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.error]

    def notify_run_finished(self, record: dict) -> list[str]:
        """Call every ``fgvcbench_run_finished`` impl; return warnings for those that raised."""
        problems = []
        for impl in self.pm.hook.fgvcbench_run_finished.get_hookimpls():
            try:
                impl.function(record=record)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"plugin {impl.plugin_name!r} run_finished hook raised {_one_line(exc)}")
        return problems


def _as_items(returned: Any) -> list | None:
    """A hook's return value as a list of items (None: nothing); None when it is not a
    list-like of items (a bare Method, a dict, a string)."""
    if returned is None:
        return []
    if isinstance(returned, (str, bytes, dict)) or not hasattr(returned, "__iter__"):
        return None
    return list(returned)


def _step_changes(step) -> dict | None:
    """What a recipe step sets when applied to the default recipe (field → value), or None
    where it raises there (a step written for another step's recipe)."""
    from fgvcbench.engine.recipe import Recipe
    base = Recipe()
    try:
        changed = step.apply(base)
    except Exception:  # noqa: BLE001 — a description never fails; `run` names a step that raises
        return None
    return changed.changes_from(base) if isinstance(changed, Recipe) else None


def suggest(name: str, choices: Iterable[str]) -> str | None:
    """The closest registered name, for 'did you mean' messages."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return match[0] if match else None


def unknown_dataset(name: Any, datasets: Iterable[str]) -> str:
    """The sentence for a dataset name no plugin provides (a view's ``of:``, ``bench
    --dataset``): the name, the closest registered one, where the list is."""
    close = suggest(str(name), datasets)
    return (f"unknown dataset {name!r} — " + (f"did you mean {close!r}? " if close else "")
            + "`fgvcbench plugins` lists them")


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        only = os.environ.get("FGVCBENCH_PLUGINS")
        subset = None if only is None else {s.strip() for s in only.split(",") if s.strip()}
        registry = Registry()
        registry.load_entry_points(subset)
        _REGISTRY = registry
    return _REGISTRY
