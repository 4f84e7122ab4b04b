"""The public surface for plugins. A plugin imports from here and nowhere else in the core.

Example — a whole method plugin::

    from fgvcbench.api import Method, hookimpl

    def run(ctx):
        data = ctx.load_data()
        model = ctx.create_model(data.num_classes)
        return ctx.fit(model, data).metrics

    @hookimpl
    def fgvcbench_methods():
        return [Method(name="my_method", run=run, params={"alpha": 0.5},
                       variants={"strong": {"alpha": 0.9}})]
"""

from __future__ import annotations

import pluggy

from fgvcbench.backbones import BackboneSpec
from fgvcbench.data.base import DatasetRequest, DatasetSpec, DatasetSplits, ImageList
from fgvcbench.data.pipeline import TensorData, TensorSplit, stratified_split
from fgvcbench.engine.recipe import Recipe, RecipeStep
from fgvcbench.engine.train import (IMAGENET_MEAN, IMAGENET_STD, FitResult, RunningLoss, accuracy_metrics,
                                    build_optimizer, lr_multiplier, model_layout, place_model)
from fgvcbench.engine.transfer import gather_rows, resident, to_device
from fgvcbench.errors import DataError, DivergedError, UserError
from fgvcbench.knn import BACKENDS as KNN_BACKENDS
from fgvcbench.knn import engine_seconds, faiss_available, knn_search, knn_within_classes
from fgvcbench.method import Method
from fgvcbench.models.pretrained import PretrainedWeightsError, create_timm_model, pretrained_data_config
from fgvcbench.run import RunContext

hookimpl = pluggy.HookimplMarker("fgvcbench")

__all__ = [
    "BackboneSpec", "DataError", "DatasetRequest", "DatasetSpec", "DatasetSplits", "DivergedError",
    "FitResult", "IMAGENET_MEAN", "IMAGENET_STD", "ImageList", "KNN_BACKENDS", "Method", "PretrainedWeightsError",
    "Recipe", "RecipeStep", "RunContext",
    "RunningLoss", "TensorData", "TensorSplit", "UserError", "accuracy_metrics", "build_optimizer",
    "create_timm_model",
    "engine_seconds", "faiss_available", "gather_rows", "hookimpl", "knn_search", "knn_within_classes",
    "lr_multiplier",
    "model_layout", "place_model", "pretrained_data_config", "resident", "stratified_split", "to_device",
]

# The embedded synthetic dataset's generator (registered by the built-in datasets plugin).
from fgvcbench.plugins import get_registry  # noqa: E402


def run_cli(args: list[str]) -> tuple[int, str]:
    """Run the ``fgvcbench`` CLI in this process — for a plugin's own tests, which see its
    entry point as ``fgvcbench`` does: ``code, output = run_cli(["run", "suite.yaml"])``.
    Returns the exit code and what it printed."""
    from typer.testing import CliRunner

    from fgvcbench.cli import app
    get_registry(refresh=True)          # plugins installed since the last call are seen
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


__all__ += ["get_registry", "run_cli"]

from fgvcbench.data.synthetic import SyntheticConfig  # noqa: E402
from fgvcbench.data.synthetic import load_split as load_synthetic_split  # noqa: E402
from fgvcbench.data.synthetic import materialize as materialize_synthetic  # noqa: E402

__all__ += ["SyntheticConfig", "load_synthetic_split", "materialize_synthetic"]
