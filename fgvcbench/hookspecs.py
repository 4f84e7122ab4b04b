"""The whole plugin contract of fgvcbench.

A plugin is any importable module (or object) that implements some of these hooks with
``@fgvcbench.api.hookimpl`` and is announced through the ``fgvcbench`` entry-point group::

    [project.entry-points.fgvcbench]
    my_plugin = "my_package.my_module"

The built-in methods, datasets and backbones (``plugins/`` in the repository) are found
exactly this way; nothing in the core imports them. Every hook is optional.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pluggy

if TYPE_CHECKING:  # only for type hints: the contract has no runtime import cycle
    from fgvcbench.backbones import BackboneSpec
    from fgvcbench.data.base import DatasetSpec
    from fgvcbench.engine.recipe import RecipeStep
    from fgvcbench.method import Method

hookspec = pluggy.HookspecMarker("fgvcbench")


@hookspec
def fgvcbench_methods() -> list["Method"]:
    """Return the methods this plugin provides.

    A :class:`fgvcbench.api.Method` has a unique ``name`` (the key used in suites, the CLI
    and CSVs), its ``params`` with their defaults, named ``variants`` (each a dict of
    params that differ from the defaults) and ``run(ctx) -> dict`` of metrics. A suite's
    param values are type-checked against the defaults (``param_types`` for the params
    whose default does not tell), and the optional ``check(params, recipe)`` raises
    :class:`fgvcbench.api.UserError` for values no run can use; both run for every
    variant when the suite loads, before any run starts.
    """


@hookspec
def fgvcbench_datasets() -> list["DatasetSpec"]:
    """Return the datasets this plugin provides.

    A :class:`fgvcbench.api.DatasetSpec` names the dataset, documents its on-disk
    layout, declares its options and loads the ``train`` and ``test`` image lists
    (paths, labels, class names, optional boxes and coarse labels). Loading never
    downloads: a missing root raises :class:`fgvcbench.api.DataError` with the layout.
    """


@hookspec
def fgvcbench_backbones() -> list["BackboneSpec"]:
    """Return the backbones this plugin provides.

    A :class:`fgvcbench.api.BackboneSpec` either has an exact ``name`` or, with
    ``matches``, serves a whole family (e.g. every timm model name). ``create`` returns a
    ``torch.nn.Module`` with timm's classifier interface (``num_features``,
    ``forward_features``, ``forward_head(x, pre_logits=...)``, ``get_classifier``).
    """


@hookspec
def fgvcbench_recipe_steps() -> list["RecipeStep"]:
    """Return named recipe steps: each a pure function ``Recipe -> Recipe``.

    Steps are composed in the order a suite lists them, so a paper's ordering of
    ablation steps is data, not code.
    """


@hookspec
def fgvcbench_run_finished(record: Mapping[str, Any]) -> None:
    """Called once per run after its record is safely on disk (status ok, failed or
    diverged). Loggers (CSV, MLflow, W&B …) hang here. An exception raised here is
    reported as a warning; it never loses or changes the record."""
