"""CoSENT (Su, 2022, "CoSENT: a more efficient sentence vector scheme than Sentence-BERT"; also AnglE's
cosine term, Li & Li 2023).

Inputs
    a, b: (N, D) embeddings of the two texts of N scored pairs (row i of ``a`` pairs with row i of ``b``).
    scores: (N,) gold similarity labels; only their order matters (STS 0-5, NLI 0/1 alike).
    scale: multiplies the cosine differences (AnglE's ``cosine_tau``, 20 in the paper).

Returns ``log(1 + sum_{s_i > s_j} exp(scale * (cos_j - cos_i)))``: a pairwise ranking loss that asks
every more similar pair to score a higher cosine than every less similar one. Unlike cosine
regression it never pushes cosines towards fixed target values, so it does not fight the
geometry a pre-trained model already has.
"""

from __future__ import annotations

import torch

from ._pairs import pair_cosine, rank_logsumexp
from .registry import LossSpec, Pairs, register


def cosent(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    return rank_logsumexp(pair_cosine(a, b), scores, scale)


def _pairs(b: Pairs, *, cosine_tau: float) -> torch.Tensor:
    return cosent(b.a, b.b, b.scores, cosine_tau)


SPEC = register(LossSpec(
    "cosent", "every more similar pair ranked above every less similar one, at scale --cosine_tau",
    settings={"cosine_tau": 20.0}, pairs=_pairs, positive=("cosine_tau",), aliases=("cosent_loss",)))
