"""Exact top-k inner-product search for evaluation: doc ids in, (doc id, score) lists out.

A thin wrapper over ``store.search`` (the one search mining uses too) on an in-memory store, with ties
broken by doc id: each doc's tie rank is its id's place in sorted id order, so results never depend on
chunking, thread count or the corpus's order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import EmbforgeError
from ..store import EmbeddingStore
from ..store.search import search, top_k_with_ties

__all__ = ["exact_search", "id_tie_rank", "top_k_with_ties"]


def id_tie_rank(doc_ids: Sequence[str]) -> np.ndarray:
    """Each doc's place in sorted id order: the tie rank that breaks equal scores by doc id asc."""
    order = sorted(range(len(doc_ids)), key=doc_ids.__getitem__)
    rank = np.empty(len(doc_ids), dtype=np.int64)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(len(doc_ids))
    return rank


def exact_search(queries: np.ndarray, docs: np.ndarray, doc_ids: Sequence[str], k: int,
                 query_chunk: int = 256, doc_chunk: int = 65536,
                 show_progress: bool = False) -> list[list[tuple[str, float]]]:
    """For each query row, the ``k`` best (doc id, inner product) pairs, best first."""
    if len(doc_ids) != docs.shape[0]:
        raise ValueError("doc_ids and docs differ in length")
    if docs.shape[0] == 0:
        raise EmbforgeError("the corpus is empty: nothing to search")
    if queries.shape[1] != docs.shape[1]:
        raise ValueError(f"query dim {queries.shape[1]} != doc dim {docs.shape[1]}")
    # local: the docs are in memory on every rank, and evaluation may run on one rank only
    top = search(queries, EmbeddingStore.from_array(docs), k, tie_rank=id_tie_rank(doc_ids),
                 query_block=query_chunk, doc_block=doc_chunk, show_progress=show_progress, local=True)
    return [[(doc_ids[j], s) for s, j in zip(scores, rows)]
            for scores, rows in zip(top.scores.tolist(), top.rows.tolist())]
