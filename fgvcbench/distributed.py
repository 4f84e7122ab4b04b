"""One large run on several GPUs or nodes: ``torchrun … -m fgvcbench.cli run SUITE``.

Every rank runs the same pending runs in the same order (rank 0 decides them and claims
them); ``ctx.fit`` trains with DistributedDataParallel and each rank takes its shard of
every epoch's sample order (padded to equal length, as DistributedSampler does); every
rank evaluates, rank 0's validation accuracy decides selection and early stopping for
all; cached stages are computed or loaded by all ranks together and written by rank 0;
only rank 0 writes records and prints. A method's own training loops (outside
``ctx.fit``) run replicated on every rank. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); True if distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        cuda = device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return active()


def local_device(device: torch.device) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK when training on CUDA under torchrun."""
    if active() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


def shard(order: torch.Tensor, rank_: int, world: int) -> torch.Tensor:
    """This rank's part of an epoch's sample order: padded by repeating its head to a
    multiple of ``world``, then every ``world``-th index from ``rank_`` (the shards are
    disjoint, of equal length, and together cover the whole order)."""
    if world <= 1:
        return order
    total = -(-len(order) // world) * world
    if total > len(order):
        order = torch.cat([order, order[: total - len(order)]])
    return order[rank_:total:world]
