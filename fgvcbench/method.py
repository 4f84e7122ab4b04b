"""What a method is: a name, its parameters as data, named variants and a ``run``."""

from __future__ import annotations

import contextlib
import contextvars
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

if TYPE_CHECKING:
    from fgvcbench.engine.recipe import Recipe
    from fgvcbench.run import RunContext

NULL = type(None)
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a mapping", NULL: "null"}


# While the registry calls a plugin's hooks, an invalid Method is kept (with its problem in
# ``invalid``) rather than raised, so the plugin's other methods still load.
_COLLECTING: contextvars.ContextVar[bool] = contextvars.ContextVar("fgvcbench_collecting", default=False)


@contextlib.contextmanager
def collecting() -> Iterator[None]:
    """Inside: ``Method(...)`` with a mistake returns a Method whose ``invalid`` is
    ``(problem, stack)`` instead of raising ValueError; the registry skips it by name."""
    token = _COLLECTING.set(True)
    try:
        yield
    finally:
        _COLLECTING.reset(token)


def refuse_or_mark(item: Any, problem: str) -> None:
    """A plugin item's declaration is wrong: raise ValueError where it is built by hand; while
    the registry collects hooks, mark it ``invalid`` (problem, stack) so the registry skips
    it and names the plugin's line, and the plugin's other items still load."""
    if not _COLLECTING.get():
        raise ValueError(problem)
    object.__setattr__(item, "invalid", (problem, traceback.extract_stack()[:-1]))


def _default_types(default: Any) -> tuple | None:
    """What a suite may give for a parameter, read off its default; None: anything."""
    for kind in (bool, int, float, str, list, dict):
        if type(default) is kind:
            return (kind,)
    return None


def _admits(value: Any, kind: type | None) -> bool:
    if kind is None or kind is NULL:
        return value is None
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


@dataclass(frozen=True)
class Method:
    """A benchmarkable method.

    ``params`` holds every parameter with its default; a suite may override any of them
    (unknown keys are rejected). ``variants`` maps a variant name to the params it
    changes; ``default`` always exists. ``recipe`` holds training-recipe defaults this
    method prefers (applied after the scale preset, before the suite's ``train:``).
    ``run(ctx)`` trains and evaluates and returns a flat dict of metrics; ``top1`` (in
    percent) is the number leaderboards rank by.

    A suite's value for a parameter must have its default's type (a ``float`` default
    takes integers too; ``bool`` is never a number). ``param_types`` names the types of
    parameters whose default does not tell, e.g. ``{"k": (int, None)}`` for a ``None``
    default (``None`` there means null is allowed); ``param_choices`` the closed sets,
    e.g. ``{"selection": ("val", "test")}``. ``check(params, recipe)`` raises
    :class:`~fgvcbench.errors.UserError` for values no run can use (a choice outside its
    set, a recipe knob the method cannot honour). The suite loader runs both for every
    variant before any run starts, so a typo fails in a second with the file and line,
    not hours into a grid; each run checks again before ``run``.
    """

    name: str
    run: Callable[["RunContext"], Mapping[str, Any]]
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    recipe: Mapping[str, Any] = field(default_factory=dict)
    # Per-scale recipe overrides, e.g. {"paper": {"epochs": 100}} (a paper's own settings).
    scales: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    param_types: Mapping[str, tuple] = field(default_factory=dict)
    param_choices: Mapping[str, tuple] = field(default_factory=dict)
    check: Callable[[Mapping[str, Any], "Recipe"], None] | None = None

    def __post_init__(self) -> None:
        if "default" not in self.variants:
            object.__setattr__(self, "variants", {"default": {}, **dict(self.variants)})
        try:
            self._validate()
        except ValueError as exc:
            refuse_or_mark(self, str(exc))

    def _validate(self) -> None:
        for table in ("param_types", "param_choices"):
            unknown = set(getattr(self, table)) - set(self.params)
            if unknown:
                raise ValueError(f"method {self.name!r} {table} names unknown params {sorted(unknown)}")
        for key, choices in self.param_choices.items():
            if not isinstance(choices, tuple) or self.params[key] not in choices:
                raise ValueError(f"method {self.name!r} param_choices[{key!r}] must be a tuple holding the "
                                 f"default {self.params[key]!r}; got {choices!r}")
        for key, kinds in self.param_types.items():
            if not isinstance(kinds, tuple) or not all(k is None or isinstance(k, type) for k in kinds):
                raise ValueError(f"method {self.name!r} param_types[{key!r}] must be a tuple of types "
                                 f"(None: null allowed), e.g. (int, None); got {kinds!r}")
        for variant, overrides in self.variants.items():
            unknown = set(overrides) - set(self.params)
            if unknown:
                raise ValueError(
                    f"method {self.name!r} variant {variant!r} sets unknown params {sorted(unknown)}; "
                    f"declare them in Method.params")
            for key, value in overrides.items():
                problem = self.param_problem(key, value)
                if problem:
                    raise ValueError(f"method {self.name!r} variant {variant!r}: {problem}")

    def param_type_words(self, key: str) -> str:
        """What a suite may give for ``key``, in words: "a number", "an integer or null", "any value"."""
        if key in self.param_choices:
            return "one of " + ", ".join(str(c) for c in self.param_choices[key])
        kinds = self.param_types.get(key) or _default_types(self.params.get(key))
        if kinds is None:
            return "any value"
        return " or ".join(_TYPE_WORDS.get(NULL if k is None else k, getattr(k, "__name__", str(k))) for k in kinds)

    def param_problem(self, key: str, value: Any) -> str | None:
        """Why ``value`` cannot be parameter ``key`` — its type, or a value outside
        ``param_choices`` — as one line with the fix; None when it can."""
        kinds = self.param_types.get(key) or _default_types(self.params.get(key))
        if kinds is not None and not any(_admits(value, kind) for kind in kinds):
            from fgvcbench.errors import given_text, yaml_number_hint
            hint = yaml_number_hint(value, all(k is int or k is None for k in kinds))
            return (f"{self.name} {key}: expected {self.param_type_words(key)}, got {type(value).__name__} "
                    f"{given_text(value)}{hint} — fix the value's type")
        choices = self.param_choices.get(key)
        if choices is not None and value not in choices:
            return f"{self.name} {key}: {value!r} — use one of {', '.join(map(str, choices))}"
        return None

    def check_params(self, params: Mapping[str, Any], recipe: "Recipe") -> None:
        """Each value's type and choices, then the method's own ``check``; raises UserError
        with one line."""
        from fgvcbench.errors import UserError
        for key, value in params.items():
            problem = self.param_problem(key, value)
            if problem:
                raise UserError(problem)
        if self.check is not None:
            self.check(params, recipe)

    def resolve_params(self, variant: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """defaults → variant → suite overrides; an integer given where the default is a
        float becomes that float (``90`` and ``90.0`` are one run, one cached stage)."""
        resolved = dict(self.params)
        resolved.update(self.variants[variant])
        resolved.update(overrides or {})
        for key, value in resolved.items():
            if (isinstance(self.params.get(key), float) and isinstance(value, int)
                    and not isinstance(value, bool)):
                resolved[key] = float(value)
        return resolved
