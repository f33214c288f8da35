"""Second-stage reranking for evaluation: each query's first-stage top-k reordered by a cross-encoder.

The candidates' texts are fetched from the corpus in one pass (it may be a stream, such as a BEIR
corpus file), every (query, candidate) pair is scored in one batched call (split across the ranks
under ``torchrun``), and equal reranker scores keep their first-stage order. Candidates below the
top-k keep their first-stage order after the reranked ones, so metrics at cut-offs beyond k still see them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..mining.negatives import fetch_texts
from ..model.cross_encoder import CrossEncoder
from ..model.shared_predict import predict_shared


def rerank_rows(reranker: CrossEncoder, queries: Sequence[str], rows: Sequence[Sequence[int]],
                doc_texts: Iterable[str], top_k: int, batch_size: int = 32) -> list[list[int]]:
    """For each query, its first-stage corpus rows (best first) reordered: the first ``top_k`` by the
    reranker's score, then the rest in first-stage order."""
    heads = [list(r[:top_k]) for r in rows]
    texts = fetch_texts(doc_texts, (i for head in heads for i in head))
    pairs = [(q, texts[i]) for q, head in zip(queries, heads) for i in head]
    scores = predict_shared(reranker, pairs, batch_size=batch_size, show_progress_bar=len(pairs) > 8 * batch_size)
    out: list[list[int]] = []
    at = 0
    for head, row in zip(heads, rows):
        s = scores[at:at + len(head)]
        at += len(head)
        order = np.argsort(-s, kind="stable")  # stable: ties keep the first-stage order
        out.append([head[j] for j in order] + list(row[top_k:]))
    return out
