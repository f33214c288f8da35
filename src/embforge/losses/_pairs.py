"""Helpers shared by the pair losses: cosine of row pairs and the pairwise ranking log-sum-exp."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pair_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of row i of ``a`` with row i of ``b``: (N, D), (N, D) -> (N,)."""
    return (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(dim=-1)


def rank_logsumexp(values: torch.Tensor, scores: torch.Tensor, scale: float) -> torch.Tensor:
    """``log(1 + sum over (i, j) with scores[i] > scores[j] of exp(scale * (values[j] - values[i])))``.

    The ranking form of CoSENT and of AnglE's angle term: every pair ordered by its label whose
    predicted values come out in the wrong order adds to the loss. With no ordered pair (all labels
    equal) it is log(1) = 0.
    """
    values = values.float() if values.dtype in (torch.float16, torch.bfloat16) else values
    diff = scale * (values[None, :] - values[:, None])          # [i, j] = scale * (v_j - v_i)
    ordered = scores[:, None] > scores[None, :]                  # s_i > s_j
    diff = diff.masked_fill(~ordered, float("-inf"))
    zero = torch.zeros(1, dtype=diff.dtype, device=diff.device)
    return torch.logsumexp(torch.cat([zero, diff.flatten()]), dim=0)
