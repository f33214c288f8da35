"""Matryoshka representation learning (Kusupati et al., 2022, "Matryoshka Representation Learning").

``matryoshka(loss_fn, embeddings, dims, weights)`` trains every prefix ``x[:, :d]`` for ``d`` in
``dims`` to work on its own: the loss is ``sum_d w_d * loss_fn(*[x[:, :d] for x in embeddings])``.

Inputs
    loss_fn: any loss over a tuple of embedding tensors (the InfoNCE, CoSENT, AnglE... of this package).
    embeddings: tensors of shape (N_i, D) (None entries pass through as None).
    dims: prefix sizes, each <= D. weights: one per dim (default all 1).
    normalize: re-normalise each prefix to unit length, as inference at that dim will
        (``Encoder.encode(dim=d)``); a prefix of a unit vector is not a unit vector.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Embeddings = Sequence[torch.Tensor | None]


def truncate(embeddings: Embeddings, dim: int, normalize: bool = True) -> list[torch.Tensor | None]:
    out: list[torch.Tensor | None] = []
    for x in embeddings:
        if x is None:
            out.append(None)
            continue
        part = x[..., :dim]
        out.append(F.normalize(part, dim=-1) if normalize else part)
    return out


def matryoshka(loss_fn: Callable[..., torch.Tensor], embeddings: Embeddings, dims: Sequence[int],
               weights: Sequence[float] | None = None, normalize: bool = True) -> torch.Tensor:
    weights = list(weights) if weights is not None else [1.0] * len(dims)
    if len(weights) != len(dims):
        raise ValueError(f"{len(dims)} dims but {len(weights)} weights")
    total = None
    for d, w in zip(dims, weights):
        term = w * loss_fn(*truncate(embeddings, d, normalize))
        total = term if total is None else total + term
    return total
