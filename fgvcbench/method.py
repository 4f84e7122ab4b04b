"""What a method is: a name, its parameters as data, named variants and a ``run``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from fgvcbench.run import RunContext


@dataclass(frozen=True)
class Method:
    """A benchmarkable method.

    ``params`` holds every parameter with its default; a suite may override any of them
    (unknown keys are rejected). ``variants`` maps a variant name to the params it
    changes; ``default`` always exists. ``recipe`` holds training-recipe defaults this
    method prefers (applied after the scale preset, before the suite's ``train:``).
    ``run(ctx)`` trains and evaluates and returns a flat dict of metrics; ``top1`` (in
    percent) is the number leaderboards rank by.
    """

    name: str
    run: Callable[["RunContext"], Mapping[str, Any]]
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    recipe: Mapping[str, Any] = field(default_factory=dict)
    # Per-scale recipe overrides, e.g. {"paper": {"epochs": 100}} (a paper's own settings).
    scales: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "default" not in self.variants:
            object.__setattr__(self, "variants", {"default": {}, **dict(self.variants)})
        for variant, overrides in self.variants.items():
            unknown = set(overrides) - set(self.params)
            if unknown:
                raise ValueError(
                    f"method {self.name!r} variant {variant!r} sets unknown params {sorted(unknown)}; "
                    f"declare them in Method.params")

    def resolve_params(self, variant: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """defaults → variant → suite overrides."""
        resolved = dict(self.params)
        resolved.update(self.variants[variant])
        resolved.update(overrides or {})
        return resolved
