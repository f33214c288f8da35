"""InfoNCE over in-batch and hard negatives (FlagEmbedding, DPR, E5, BGE).

Inputs
    q: (B, D) query embeddings of this process.
    p: (P, D) passage embeddings laid out in groups of ``group_size``: passage ``i * group_size`` is
       query ``i``'s positive and the next ``group_size - 1`` are its hard negatives. Under
       cross-device negatives ``p`` holds the groups of every process, and ``query_offset`` is the
       global index of this process's first query.
    temperature: scores are cosine (or dot) similarities divided by it; FlagEmbedding uses 0.02.
    in_batch: when False, each query sees only its own group (no in-batch negatives).
    symmetric: adds the passage-to-query direction (positives against all queries ``q_all``), as in
       SimCSE-style symmetric objectives; ``q_all`` defaults to ``q``.

Returns the mean cross-entropy over this process's queries. Averaged over processes (which DDP
does to gradients), it equals the loss of one process holding the whole batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import Groups, LossSpec, register


def _wide(scores: torch.Tensor) -> torch.Tensor:
    """Softmax in at least float32: half-precision logits over/underflow at temperature 0.02."""
    return scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores


def info_nce(q: torch.Tensor, p: torch.Tensor, *, temperature: float, group_size: int, query_offset: int = 0,
             in_batch: bool = True, symmetric: bool = False, q_all: torch.Tensor | None = None) -> torch.Tensor:
    n = q.shape[0]
    if in_batch:
        scores = q @ p.T / temperature
        targets = (torch.arange(n, device=q.device) + query_offset) * group_size
        loss = F.cross_entropy(_wide(scores), targets)
    else:
        own = p.view(-1, group_size, p.shape[-1])[query_offset:query_offset + n]
        scores = torch.einsum("bd,bgd->bg", q, own) / temperature
        loss = F.cross_entropy(_wide(scores), torch.zeros(n, dtype=torch.long, device=q.device))
    if symmetric:
        queries = q if q_all is None else q_all
        positives = p[(torch.arange(n, device=p.device) + query_offset) * group_size]
        back = positives @ queries.T / temperature
        loss = (loss + F.cross_entropy(_wide(back), torch.arange(n, device=q.device) + query_offset)) / 2
    return loss


def _groups(b: Groups, *, temperature: float) -> torch.Tensor:
    return info_nce(b.q, b.p, temperature=temperature, group_size=b.group_size, query_offset=b.query_offset,
                    in_batch=b.in_batch, symmetric=b.symmetric, q_all=b.q_all)


SPEC = register(LossSpec(
    "infonce", "cross-entropy of each query against in-batch and hard negatives at --temperature",
    settings={"temperature": 0.02}, groups=_groups, positive=("temperature",),
    aliases=("mnrl", "multiple_negatives_ranking_loss", "contrastive", "info_nce")))
