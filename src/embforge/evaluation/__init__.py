"""Evaluation: retrieval (MRR, Recall, nDCG, MAP @k) and STS (Spearman, Pearson), per Matryoshka dim."""

from .metrics import msmarco_metrics, query_metrics, retrieval_metrics, sts_metrics
from .search import exact_search

__all__ = ["exact_search", "msmarco_metrics", "query_metrics", "retrieval_metrics", "sts_metrics"]
