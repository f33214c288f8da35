"""AnglE: angle-optimised text embeddings (Li & Li, 2023, "AnglE-optimized Text Embeddings", ACL 2024).

Cosine similarity saturates: near cos = +-1 its gradient vanishes, so pairs that are already
close or far stop being told apart. AnglE splits each embedding into a real and an imaginary half,
``z = x[:D/2] + i x[D/2:]``, and ranks pairs by a quantity of the complex inner product
``<z, w> / (|z| |w|) = r e^{i dtheta}``, whose imaginary part keeps a gradient where the cosine's does not.

``angle_loss``
    a, b: (N, D) pair embeddings, D even; scores: (N,) labels (only the order matters).
    The per-pair value is ``|Re + Im|`` of the normalised complex inner product
    ``sum_k z_k conj(w_k) / (|z| |w|)`` (its real part is exactly the cosine of the full vectors),
    ranked with the CoSENT log-sum-exp at ``scale`` (``angle_tau``). This is the quantity the
    reference implementation ranks.

``pair_in_batch_negatives``
    The ``ibn`` term for scored pairs: each positive pair (``positive`` mask) is an InfoNCE problem
    in both directions, ``a_i`` against every ``b`` and ``b_i`` against every ``a`` of the batch, at
    ``scale`` (``ibn_tau``; 20 = temperature 0.05).

``angle_objective_pairs`` / ``angle_objective_groups``
    The combined AnglE objective, with the terms each data format supports (as the reference's
    fine-tuning tips describe):
    format A (scored pairs):  cosine_w * CoSENT(cosine_tau) + ibn_w * ibn(ibn_tau) + angle_w * angle(angle_tau);
    format B (query, positive, negative): ibn_w * InfoNCE over all positives and negatives of the batch
        + angle_w * angle over the (query, positive) = 1 and (query, negative) = 0 pairs; no cosine term;
    format C (query, positive): ibn_w * InfoNCE only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ._pairs import rank_logsumexp
from .cosent import cosent
from .infonce import info_nce
from .registry import Groups, LossSpec, Pairs, register


def complex_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (N, D) -> (N,): ``Re + Im`` of ``sum_k z_k conj(w_k) / (|z| |w|)`` for each pair."""
    if a.shape[-1] % 2:
        raise ValueError(f"the angle loss splits embeddings into two halves; dimension {a.shape[-1]} is odd")
    a_re, a_im = a.chunk(2, dim=-1)
    b_re, b_im = b.chunk(2, dim=-1)
    real = (a_re * b_re + a_im * b_im).sum(dim=-1)
    imag = (a_im * b_re - a_re * b_im).sum(dim=-1)
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    return (real + imag) / norms.clamp(min=1e-12)


def angle_loss(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    return rank_logsumexp(complex_similarity(a, b).abs(), scores, scale)


def pair_in_batch_negatives(a: torch.Tensor, b: torch.Tensor, positive: torch.Tensor,
                            scale: float = 20.0) -> torch.Tensor:
    rows = positive.nonzero().flatten()
    if rows.numel() == 0:
        return (a.sum() + b.sum()) * 0.0  # no positive pair in this batch: nothing to contrast
    a_n, b_n = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    forward = F.cross_entropy(scale * a_n[rows] @ b_n.T, rows)
    backward = F.cross_entropy(scale * b_n[rows] @ a_n.T, rows)
    return (forward + backward) / 2


def angle_objective_pairs(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor, positive: torch.Tensor, *,
                          cosine_w: float, cosine_tau: float, ibn_w: float, ibn_tau: float, angle_w: float,
                          angle_tau: float) -> torch.Tensor:
    """Format A: ``scores`` (N,) order the pairs; ``positive`` (N,) bool marks the pairs the ibn term uses."""
    loss = a.new_zeros(())
    if cosine_w:
        loss = loss + cosine_w * cosent(a, b, scores, cosine_tau)
    if ibn_w:
        loss = loss + ibn_w * pair_in_batch_negatives(a, b, positive, ibn_tau)
    if angle_w:
        loss = loss + angle_w * angle_loss(a, b, scores, angle_tau)
    return loss


def angle_objective_groups(q: torch.Tensor, p: torch.Tensor, *, group_size: int, ibn_w: float, ibn_tau: float,
                           angle_w: float, angle_tau: float, query_offset: int = 0) -> torch.Tensor:
    """Formats B and C: ``q`` (B, D) queries; ``p`` (P, D) passages in groups of ``group_size``
    (positive first, then negatives), possibly every process's groups with ``query_offset`` the
    global index of the first local query (as in :func:`info_nce`)."""
    loss = q.new_zeros(())
    if ibn_w:
        loss = loss + ibn_w * info_nce(F.normalize(q, dim=-1), F.normalize(p, dim=-1), temperature=1.0 / ibn_tau,
                                       group_size=group_size, query_offset=query_offset)
    if angle_w and group_size > 1:
        n = q.shape[0]
        own = p.view(-1, group_size, p.shape[-1])[query_offset:query_offset + n]   # (B, g, D)
        left = q.unsqueeze(1).expand_as(own).reshape(-1, q.shape[-1])
        labels = torch.zeros(n, group_size, device=q.device)
        labels[:, 0] = 1.0
        loss = loss + angle_w * angle_loss(left, own.reshape(-1, q.shape[-1]), labels.flatten(), angle_tau)
    return loss


def _pairs(b: Pairs, *, cosine_w: float, cosine_tau: float, ibn_w: float, ibn_tau: float, angle_w: float,
           angle_tau: float) -> torch.Tensor:
    # scores are rescaled to [0, 1]: the upper half of the range are the positives of the ibn term
    return angle_objective_pairs(b.a, b.b, b.scores, b.scores > 0.5, cosine_w=cosine_w, cosine_tau=cosine_tau,
                                 ibn_w=ibn_w, ibn_tau=ibn_tau, angle_w=angle_w, angle_tau=angle_tau)


def _groups(b: Groups, *, cosine_w: float, cosine_tau: float, ibn_w: float, ibn_tau: float, angle_w: float,
            angle_tau: float) -> torch.Tensor:
    return angle_objective_groups(b.q, b.p, group_size=b.group_size, ibn_w=ibn_w, ibn_tau=ibn_tau,
                                  angle_w=angle_w, angle_tau=angle_tau, query_offset=b.query_offset)


def _trains_something(s: Mapping[str, float]) -> str | None:
    if not (s["cosine_w"] or s["ibn_w"] or s["angle_w"]):
        return "--loss angle with cosine_w, ibn_w and angle_w all 0 trains nothing"
    return None


# The reference's STS-B example, which --recipe angle also pins.
SPEC = register(LossSpec(
    "angle", "AnglE: cosine_w * CoSENT + ibn_w * in-batch negatives + angle_w * angle term (docs/losses.md)",
    settings={"cosine_w": 1.0, "cosine_tau": 20.0, "ibn_w": 20.0, "ibn_tau": 20.0, "angle_w": 1.0, "angle_tau": 20.0},
    groups=_groups, pairs=_pairs, positive=("cosine_tau", "ibn_tau", "angle_tau"), check=_trains_something,
    aliases=("angle_loss", "aoe")))
