"""Cross-encoder (reranker) losses: pure functions over the one logit a reranker gives each (query, passage).

They take logits, not embeddings, so they stay out of the embedding-loss registry (``--loss``); the
reranker trainer picks one by name from :data:`RERANK_LOSSES` (``--rerank_loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_softmax_ce(logits: torch.Tensor) -> torch.Tensor:
    """FlagEmbedding's reranker objective: softmax over each query's group, cross-entropy towards the positive.

    ``logits`` (B, G): row b holds query b's scores for its group, the positive in column 0 and
    G - 1 negatives after it. Returns the mean over queries of ``-log softmax(logits[b])[0]``.
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"group_softmax_ce needs (queries, group >= 2) logits, got shape {tuple(logits.shape)}")
    return -F.log_softmax(logits.float(), dim=-1)[:, 0].mean()


def bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on sigmoid(logit): pointwise relevance, or a regression towards soft labels.

    ``logits`` and ``labels`` have the same shape; labels lie in [0, 1] (1 relevant, 0 not, or a scaled
    score). Returns the mean over pairs.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), labels.to(torch.float32))


def margin_mse(pos_logits: torch.Tensor, neg_logits: torch.Tensor, teacher_pos: torch.Tensor,
               teacher_neg: torch.Tensor) -> torch.Tensor:
    """MarginMSE (Hofstätter et al.): the student's margin positive - negative regressed onto the teacher's.

    ``pos_logits`` / ``teacher_pos`` (B,): each query's positive; ``neg_logits`` / ``teacher_neg`` (B, N):
    its N negatives. Returns the mean over the B * N (positive, negative) margins of the squared error.
    """
    student = pos_logits.float().unsqueeze(-1) - neg_logits.float()
    teacher = teacher_pos.float().unsqueeze(-1) - teacher_neg.float()
    return F.mse_loss(student, teacher)


#: ``--rerank_loss`` names, and the data each one trains on: query groups, scored pairs, or groups that
#: carry teacher scores (``pos_scores`` / ``neg_scores``).
RERANK_LOSSES: dict[str, tuple[str, ...]] = {
    "ce": ("groups",),
    "bce": ("groups", "pairs"),
    "margin_mse": ("scored groups",),
}
