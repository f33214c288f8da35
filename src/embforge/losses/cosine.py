"""Cosine-similarity regression (Reimers & Gurevych, 2019, Sentence-BERT's STS objective).

Inputs
    a, b: (N, D) embeddings of N pairs.
    targets: (N,) target cosines, usually gold scores rescaled to [0, 1] (STS-B score / 5).

Returns the mean squared error between cos(a_i, b_i) and the target. Simple and calibrated (the
cosine itself estimates the score), but it spends capacity on matching absolute values, which is
why CoSENT usually ranks better.
"""

from __future__ import annotations

import torch

from ._pairs import pair_cosine
from .registry import LossSpec, Pairs, register


def cosine_regression(a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    cos = pair_cosine(a, b)
    return ((cos - targets.to(cos.dtype)) ** 2).mean()


def _pairs(b: Pairs) -> torch.Tensor:
    return cosine_regression(b.a, b.b, b.scores)


SPEC = register(LossSpec("cosine", "MSE between cos(a, b) and the score rescaled to [0, 1]", pairs=_pairs,
                         aliases=("cosine_similarity", "cosine_loss")))
