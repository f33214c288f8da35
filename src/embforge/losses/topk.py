"""Multi-TopK training (CSRv2, "Beyond Matryoshka: Revisiting Sparse Coding for Adaptive
Representation", Wen et al., 2025; its TopK-aware LoRA backbone fine-tuning).

A sparse code keeps only the k largest activations. Training the backbone so that its embedding
still works after such masking, for several k at once, makes it a good input for TopK sparse
coding (CSR) and for TopK-sparse retrieval.

``topk_mask(x, k, mode)``: keep the k entries of each row with the largest magnitude (``magnitude``)
or the largest value (``value``), zero the rest. The gradient flows through the kept entries.

``multi_topk(loss_fn, embeddings, k_list, weights, mode)``: ``sum_k w_k * loss_fn(*[mask_k(x)])``,
each masked vector re-normalised when ``normalize`` (cosine losses), for embeddings (N_i, D), k <= D.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypedDict

import torch
import torch.nn.functional as F

from .matryoshka import Embeddings

TOPK_MODES = ("magnitude", "value")
# Defaults of the train flags of this wrapper (declared once, here; resolve fills the flags not given).
class Settings(TypedDict):
    topk_mode: str
    apply_topk_to_backbone: bool


SETTINGS: Settings = {"topk_mode": "magnitude", "apply_topk_to_backbone": False}


def topk_mask(x: torch.Tensor, k: int, mode: str = "magnitude") -> torch.Tensor:
    if mode not in TOPK_MODES:
        raise ValueError(f"topk mode must be one of {TOPK_MODES}, got {mode!r}")
    keys = x.abs() if mode == "magnitude" else x
    index = keys.topk(k, dim=-1).indices
    mask = torch.zeros_like(x).scatter(-1, index, 1.0)
    return x * mask


def multi_topk(loss_fn: Callable[..., torch.Tensor], embeddings: Embeddings, k_list: Sequence[int],
               weights: Sequence[float] | None = None, mode: str = "magnitude", normalize: bool = True) -> torch.Tensor:
    weights = list(weights) if weights is not None else [1.0] * len(k_list)
    if len(weights) != len(k_list):
        raise ValueError(f"{len(k_list)} k values but {len(weights)} weights")
    total = None
    for k, w in zip(k_list, weights):
        masked = [None if x is None else topk_mask(x, k, mode) for x in embeddings]
        if normalize:
            masked = [None if x is None else F.normalize(x, dim=-1) for x in masked]
        term = w * loss_fn(*masked)
        total = term if total is None else total + term
    return total
