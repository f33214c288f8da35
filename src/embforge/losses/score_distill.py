"""Distillation from teacher scores carried by the data (FlagEmbedding's ``pos_scores`` / ``neg_scores``).

Unlike :mod:`embforge.losses.distill` (a teacher *model* embedding the batch), the teacher here is
whatever scored the records beforehand, typically a cross-encoder reranker, so only the passages of each
query's own group have a teacher score: both losses compare the student with the teacher over that group.

``kd_loss(student_scores, teacher_scores, temperature)``
    student_scores (B, G): the student's scores of each query's group, positive first (embforge passes
        similarity / InfoNCE temperature, the logits InfoNCE ranks with, as FlagEmbedding's
        ``compute_score`` does). teacher_scores (B, G): the teacher's scores of the same passages, same order.
    Returns ``-mean_b sum_g softmax(t_b / T)_g * log_softmax(s_b / T)_g``: the cross-entropy of the student's
    distribution under the teacher's. This is FlagEmbedding's ``distill_loss`` in ``kl_div`` mode (which
    computes exactly this cross-entropy, despite the name), so at ``T = 1`` loss values compare with its
    logs. It differs from ``KL(teacher || student)`` only by the teacher's entropy, a constant of the data:
    the gradient is the same. No ``T^2`` factor (Hinton et al.) either, again as FlagEmbedding.

``margin_mse(student_pos, student_neg, teacher_pos, teacher_neg)``
    student_pos (B,), student_neg (B, N): the student's score of each query's positive and of its N negatives;
    teacher_pos (B,), teacher_neg (B, N): the teacher's scores of the same passages.
    Returns ``mean_{b,n} ((s_pos - s_neg) - (t_pos - t_neg))^2`` (Hofstätter et al., 2020, "Improving Efficient
    Neural Ranking Models with Cross-Architecture Knowledge Distillation"; sentence-transformers'
    ``MarginMSELoss`` with several negatives). Only margins are matched, so the teacher's scores may have any
    offset; their scale must be reachable by the student's scores, which is why embforge passes the
    temperature-scaled similarities (a cosine margin is at most 2, a reranker's logit margin often 10).
"""

from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn.functional as F

#: The values of ``--teacher_scores``: which loss reads the data's teacher scores (none: they are ignored).
MODES = ("none", "kd", "margin_mse")


class Settings(TypedDict):
    kd_weight: float
    kd_temperature: float


SETTINGS: Settings = {"kd_weight": 1.0, "kd_temperature": 1.0}


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Softmax and squares in at least float32 (half-precision logits at temperature 0.02 overflow)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def kd_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    s = _wide(student_scores)
    with torch.no_grad():
        target = F.softmax(teacher_scores.to(s.dtype) / temperature, dim=-1)
    return -(target * F.log_softmax(s / temperature, dim=-1)).sum(dim=-1).mean()


def margin_mse(student_pos: torch.Tensor, student_neg: torch.Tensor, teacher_pos: torch.Tensor,
               teacher_neg: torch.Tensor) -> torch.Tensor:
    sp, sn = _wide(student_pos), _wide(student_neg)
    target = (teacher_pos.to(sp.dtype).unsqueeze(-1) - teacher_neg.to(sp.dtype)).detach()
    return F.mse_loss(sp.unsqueeze(-1) - sn, target)


def group_scores(q: torch.Tensor, p: torch.Tensor, group_size: int, query_offset: int = 0) -> torch.Tensor:
    """(B, G) similarities of each local query with its own group, from ``p`` holding the groups of every
    process (``query_offset``: the global index of the first local query), as InfoNCE lays them out."""
    own = p.view(-1, group_size, p.shape[-1])[query_offset:query_offset + q.shape[0]]
    return torch.einsum("bd,bgd->bg", q, own)


def score_distillation(mode: str, q: torch.Tensor, p: torch.Tensor, teacher_scores: torch.Tensor, *,
                       group_size: int, temperature: float, kd_temperature: float,
                       query_offset: int = 0) -> torch.Tensor:
    """The ``--teacher_scores`` term on embeddings: ``mode`` kd or margin_mse, over each local query's group
    scored as InfoNCE scores it (similarity / ``temperature``); ``teacher_scores`` (B, G) aligned with it."""
    student = group_scores(q, p, group_size, query_offset) / temperature
    if teacher_scores.shape != student.shape:
        raise ValueError(f"teacher scores of shape {tuple(teacher_scores.shape)} for groups {tuple(student.shape)}")
    if mode == "kd":
        return kd_loss(student, teacher_scores, kd_temperature)
    if mode == "margin_mse":
        return margin_mse(student[:, 0], student[:, 1:], teacher_scores[:, 0], teacher_scores[:, 1:])
    raise ValueError(f"unknown teacher-score loss {mode!r}; choose from {', '.join(MODES[1:])}")
