"""The classifier stages' loop (stages 0, 2 and 3: ``naive/train.py``,
``GCN_reg/train_main.py``, ``GCN_reg/alternate_with_GCN.py``): weighted CE, the graph
term on alternating epochs, the code's per-epoch SGD rebuild, selection and early stop."""

from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from fgvcbench.api import (RunContext, RunningLoss, TensorData, accuracy_metrics, build_optimizer, gather_rows,
                           lr_multiplier, model_layout, place_model, resident, to_device)

from .simnet import SimNet, graph_loss

def is_graph_epoch(epoch: int) -> bool:
    """``alternate_with_GCN.py``: 0-based epoch e trains weighted CE alone when
    e % 2 == c0g1 (= 1), else adds the graph term — the first epoch is a graph epoch."""
    return epoch % 2 == 0


class WithPooled(nn.Module):
    """A timm model that also returns its pooled features (z for the graph term)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.model.get_classifier()(pooled), pooled

    def get_classifier(self) -> nn.Module:
        return self.model.get_classifier()


class SimTransLoss:
    """mean_i w_i·CE_i, + α·mean_ij g(A_ij)·‖z_i − z_j‖² when an adjacency is given (graph
    epochs). ``rows`` index the novel training set, so the weights and the labels are
    looked up per batch."""

    def __init__(self, labels: torch.Tensor, weights: torch.Tensor, *, alpha: float, mu: float, smoothing: float,
                 device: torch.device):
        self.labels, self.weights = labels.to(device), weights.to(device)
        self.alpha, self.mu, self.smoothing = alpha, mu, smoothing

    def __call__(self, logits: torch.Tensor, rows: torch.Tensor, z: torch.Tensor | None = None,
                 adjacency: torch.Tensor | None = None) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), self.labels[rows], reduction="none", label_smoothing=self.smoothing)
        loss = (self.weights[rows] * ce).mean()
        if adjacency is not None:
            loss = loss + self.alpha * graph_loss(z, adjacency, self.mu)
        return loss



def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: v.detach().cpu().clone() for n, v in model.state_dict().items()}


def _lr_factor(recipe, epoch: int, epochs: int) -> float:
    """The recipe's schedule read per 0-based epoch over ``epochs`` (the code steps per
    epoch; no warmup): the engine's multiplier with one step an epoch."""
    return lr_multiplier(recipe.replace(epochs=epochs, warmup_epochs=0), 1)(epoch)


def _optimizer(model: nn.Module, recipe, lr: float) -> torch.optim.Optimizer:
    return build_optimizer(list(model.named_parameters()), recipe.replace(lr=lr), model)


def falling_run(scores: list[float], stop_th: int) -> bool:
    """``utils/project_kits.early_stop``: stop when each of the last ``stop_th`` selection
    scores is strictly below the one before it (``stop_th`` ≤ 1: never)."""
    if stop_th <= 1 or len(scores) < stop_th:
        return False
    last = scores[-stop_th:]
    return all(a > b for a, b in zip(last, last[1:]))


def train_classifier(ctx: RunContext, model: WithPooled, data: TensorData, criterion: SimTransLoss, *, epochs: int,
                     batch_size: int, phase: str, seed_offset: int, simnet: SimNet | None = None,
                     graph_batch_size: int | None = None, stop_th: int = 0) -> dict:
    """The code's classifier loop: per 0-based epoch an SGD optimiser built anew at lr ·
    schedule(epoch), shuffled batches of ``batch_size`` (``graph_batch_size`` on graph
    epochs, when ``simnet`` gives the adjacency), the epoch selected on ``data.val`` and
    training stopped early once ``stop_th`` selection scores in a row fall (the schedule
    still spans ``epochs``). Returns the selected model's metrics, state (of the inner timm
    model) and test predictions."""
    recipe, device = ctx.recipe, ctx.device   # mixup/cutmix were refused by check_params
    place_model(model, recipe, device)
    if simnet is not None:
        place_model(simnet, recipe, device).eval()
    augment = ctx.augmenter(seed_offset=seed_offset)
    generator = torch.Generator().manual_seed(ctx.seed * 1000 + seed_offset)
    images = resident(data.train.images, device)
    n = len(data.train)
    autocast = device.type == "cuda" and recipe.amp
    logits_of = lambda split: ctx.predict(model, split, output_fn=lambda out: out[0])  # noqa: E731
    best_val, best_epoch, best_state = -1.0, 0, None
    scores: list[float] = []
    epochs_run = 0
    for epoch in range(epochs):
        graph = simnet is not None and is_graph_epoch(epoch)
        size = graph_batch_size if graph else batch_size
        lr = recipe.lr * _lr_factor(recipe, epoch, epochs)
        optimizer = _optimizer(model, recipe, lr)   # the code builds it anew every epoch
        model.train()
        t0 = time.perf_counter()
        running = RunningLoss(device, f"{phase} loss", f"at epoch {epoch + 1}")
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, size):
            rows = order[start:start + size]
            if len(rows) < 2 and n > 1:
                continue  # a batch of one breaks BatchNorm
            x = augment.train(gather_rows(images, to_device(rows, images.device), device))
            x = model_layout(x, recipe, device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                logits, z = model(x)
                adjacency = None
                if graph:
                    with torch.no_grad():
                        same, _ = simnet(x)
                        adjacency = torch.softmax(same.float(), 1)[:, 1].reshape(len(rows), len(rows))
                loss = criterion(logits, to_device(rows, device), z, adjacency)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            running.add(loss)
            ctx.images_seen += len(rows)
        seconds = time.perf_counter() - t0
        ctx.train_seconds += seconds
        row = {"epoch": epoch + 1, "phase": phase, "train_loss": running.mean(), "lr": lr, "batch_size": size,
               "graph": graph, "seconds": seconds}
        if len(data.val):
            val = accuracy_metrics(logits_of(data.val), data.val.labels, data.num_classes)
            row["val_top1"] = val["top1"]
            scores.append(val["top1"])
            if val["top1"] > best_val:
                best_val, best_epoch, best_state = val["top1"], epoch + 1, state_of(model)
        ctx.history.append(row)
        epochs_run = epoch + 1
        if falling_run(scores, stop_th):
            row["early_stop"] = True
            break
    test_logits = logits_of(data.test)
    last = accuracy_metrics(test_logits, data.test.labels, data.num_classes)
    selected = last
    if best_state is not None and best_epoch != epochs_run:
        model.load_state_dict(best_state)
        test_logits = logits_of(data.test)
        selected = accuracy_metrics(test_logits, data.test.labels, data.num_classes)
    metrics = {"top1": selected["top1"], "top5": selected["top5"], "mean_class_acc": selected["mean_class_acc"],
               "top1_last": last["top1"], "val_top1": best_val if best_val >= 0 else float("nan"),
               "best_epoch": best_epoch or epochs_run, "epochs_run": epochs_run}
    return {"state_dict": state_of(model.model), "metrics": metrics,
            "test_pred": test_logits.argmax(1).tolist() if test_logits.numel() else []}
