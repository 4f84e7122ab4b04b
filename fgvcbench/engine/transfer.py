"""Host → GPU copies that do not stall the GPU.

PyTorch copies from pageable host memory with ``cudaMemcpyAsync`` followed by a stream
synchronisation, so every ``cpu_tensor.to("cuda")`` in a training step makes the host
wait until the GPU has drained its queue; the GPU then idles while the host launches
the next kernels. A copy from pinned (page-locked) memory with ``non_blocking=True`` is
queued on the stream like a kernel instead, and PyTorch's pinned-memory allocator keeps
the block until the copy has run. The training step's per-batch copies — augmentation
parameters, indices, image batches gathered on the host — all go through here.
"""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a host tensor bound for a GPU goes through pinned memory,
    asynchronously. Elsewhere (CPU, or already on a device) a plain ``.to``."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def gather_rows(images: torch.Tensor, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``images[rows]`` for a training batch. ``rows`` lives where ``images`` does. Host
    images (too large for the GPU, or an on-disk memmap) bound for a GPU are gathered
    straight into a pinned buffer, so the batch's copy to the device is asynchronous."""
    if images.device.type != "cpu" or device.type != "cuda":
        return images[rows]
    out = torch.empty((len(rows),) + tuple(images.shape[1:]), dtype=images.dtype, pin_memory=True)
    torch.index_select(images, 0, rows, out=out)
    return out


def resident(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Training images where batches are cheapest to cut from: on the GPU when they take
    at most a quarter of its free memory (one copy, no per-batch host→device traffic);
    otherwise where they are (host memory or an on-disk memmap), for ``gather_rows``."""
    if device.type != "cuda" or images.device.type == "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() <= free // 4:
        return images.to(device)
    return images
