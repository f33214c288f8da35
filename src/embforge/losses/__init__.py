"""Losses: pure functions over embeddings, one per module. None of them touches files or models."""

from .angle import angle_loss, angle_objective_groups, angle_objective_pairs, pair_in_batch_negatives
from .cosent import cosent
from .cosine import cosine_regression
from .distill import similarity_distillation
from .ese import ese_loss, pca_compress
from .infonce import info_nce
from .matryoshka import matryoshka
from .topk import multi_topk, topk_mask

__all__ = ["angle_loss", "angle_objective_groups", "angle_objective_pairs", "cosent", "cosine_regression",
           "ese_loss", "info_nce", "matryoshka", "multi_topk", "pair_in_batch_negatives", "pca_compress",
           "similarity_distillation", "topk_mask"]
