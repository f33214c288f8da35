"""Which process this is, and the few collectives the store needs, on the launcher users already have.

``torchrun`` (or ``accelerate launch``) sets RANK / WORLD_SIZE; a command that is not training joins
the process group here. The store's traffic (barriers, top-k lists) is small and lives on the CPU, so
it always goes through a gloo group, even when training has set up NCCL for the gradients.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

# Ranks wait at a barrier while others finish their shards; a long corpus must not trip the default timeout.
TIMEOUT = timedelta(seconds=float(os.environ.get("EMBFORGE_DIST_TIMEOUT", 6 * 3600)))
_cpu_group: Any = None


def env_world() -> tuple[int, int]:
    """(rank, world size) as the launcher set them; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def join() -> tuple[int, int]:
    """Join the launcher's process group when there is one (idempotent); returns (rank, world size)."""
    global _cpu_group
    rank, world = env_world()
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=TIMEOUT)
    if _cpu_group is None:
        _cpu_group = (dist.group.WORLD if dist.get_backend() == "gloo"
                      else dist.new_group(backend="gloo", timeout=TIMEOUT))
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    if join()[1] > 1:
        dist.barrier(group=_cpu_group)


def all_gather_array(array: np.ndarray) -> list[np.ndarray]:
    """Every rank's ``array`` (same shape and dtype on every rank), in rank order; ``[array]`` alone."""
    _, world = join()
    if world <= 1:
        return [array]
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor, group=_cpu_group)
    return [p.numpy() for p in parts]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (for small things: a manifest, a list of shard digests)."""
    if join()[1] <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_cpu_group)
    return box[0]


def is_main() -> bool:
    return env_world()[0] == 0
