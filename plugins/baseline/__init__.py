"""Single-step fine-tuning: the baseline every FGVC method is compared with.

``finetune`` trains the whole network with cross-entropy under the suite's recipe and
reports test accuracy at the epoch selected on the validation split.
Variants:

- ``default``: full fine-tuning.
- ``linear_probe``: the backbone is frozen (BatchNorm statistics too); only the new
  linear head learns. It shows how much of the accuracy the pretrained features carry.
"""

from __future__ import annotations

from fgvcbench.api import Method, RunContext, hookimpl


def run_finetune(ctx: RunContext) -> dict:
    data = ctx.load_data(use_boxes=ctx.params["crop_to_box"])
    model = ctx.create_model(data.num_classes)
    result = ctx.fit(model, data, freeze_backbone=ctx.params["freeze_backbone"])
    return result.metrics


FINETUNE = Method(
    name="finetune",
    run=run_finetune,
    description="Single-step fine-tuning with cross-entropy (the standard FGVC baseline).",
    params={"freeze_backbone": False, "crop_to_box": False},
    variants={"default": {}, "linear_probe": {"freeze_backbone": True}},
)


@hookimpl
def fgvcbench_methods():
    return [FINETUNE]
