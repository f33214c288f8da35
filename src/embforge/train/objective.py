"""The contrastive objective of a training step: embeddings in, scalar loss out.

Shared by the plain step and GradCache so that both compute exactly the same loss, including the
cross-device gathering.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses.infonce import info_nce
from .distributed import gather_with_grad, world


@dataclass
class ContrastiveObjective:
    temperature: float = 0.02
    group_size: int = 2
    cross_device: bool = False
    in_batch: bool = True
    symmetric: bool = False

    def __call__(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if not self.cross_device:
            return info_nce(q, p, temperature=self.temperature, group_size=self.group_size,
                            in_batch=self.in_batch, symmetric=self.symmetric)
        rank, _ = world()
        p_all = gather_with_grad(p)
        q_all = gather_with_grad(q) if self.symmetric else None
        return info_nce(q, p_all, temperature=self.temperature, group_size=self.group_size,
                        query_offset=rank * q.shape[0], in_batch=self.in_batch, symmetric=self.symmetric,
                        q_all=q_all)
