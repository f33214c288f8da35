"""Cross-process gathering that keeps the gradient.

``torch.distributed.all_gather`` returns tensors with no autograd history, so a loss over gathered
passages would train only on the local ones (a classic silent bug). Here the backward pass sums
every process's gradient for the gathered tensor and hands each process the slice it owns, which
makes DDP's averaged gradients equal to those of one process holding the whole batch. It uses only
all_gather and all_reduce, so it runs on gloo (CPU tests) as well as NCCL.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def world() -> tuple[int, int]:
    """(rank, world size), (0, 1) outside distributed runs."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(size)]
        dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
        ctx.sizes = [int(s.item()) for s in sizes]
        if len(set(ctx.sizes)) != 1:
            raise RuntimeError(f"every process must contribute the same number of rows, got {ctx.sizes}")
        parts = [torch.empty_like(tensor) for _ in range(size)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank = rank
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all processes in rank order; identity outside distributed runs."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)
