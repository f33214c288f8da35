"""Exact top-k inner-product search with a deterministic tie-break.

Plain chunked matmul + topk: exact, needs no index, and bounded in memory by the chunk sizes.
torch.topk picks arbitrarily among equal scores at the k-th place; rows with such boundary ties are
re-selected under (score desc, doc id asc) so results never depend on chunking or thread count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import EmbforgeError


def top_k_with_ties(scores: torch.Tensor, k: int, tie_rank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (values, indices) per row of ``scores``, ties at the boundary broken by ``tie_rank``."""
    values, idx = torch.topk(scores, k, dim=1)
    thresholds = values[:, -1:]
    tied_rows = ((scores >= thresholds).sum(dim=1) > k).nonzero().flatten().tolist()
    for r in tied_rows:
        row = scores[r]
        cand = (row >= thresholds[r]).nonzero().flatten()
        keys = np.lexsort((tie_rank[cand].numpy(), -row[cand].double().numpy()))
        chosen = cand[torch.as_tensor(keys[:k])]
        idx[r] = chosen
        values[r] = row[chosen]
    return values, idx


def exact_search(queries: np.ndarray, docs: np.ndarray, doc_ids: Sequence[str], k: int,
                 query_chunk: int = 256, doc_chunk: int = 65536,
                 show_progress: bool = False) -> list[list[tuple[str, float]]]:
    """For each query row, the ``k`` best (doc id, inner product) pairs, best first."""
    if k <= 0:
        raise EmbforgeError(f"k must be a positive integer, got {k}")
    if len(doc_ids) != docs.shape[0]:
        raise ValueError("doc_ids and docs differ in length")
    if docs.shape[0] == 0:
        raise EmbforgeError("the corpus is empty: nothing to search")
    if queries.shape[1] != docs.shape[1]:
        raise ValueError(f"query dim {queries.shape[1]} != doc dim {docs.shape[1]}")
    n_docs = docs.shape[0]
    k = min(k, n_docs)
    order = sorted(range(n_docs), key=doc_ids.__getitem__)
    tie_rank = torch.empty(n_docs, dtype=torch.long)
    tie_rank[torch.as_tensor(order)] = torch.arange(n_docs)
    rank_list = tie_rank.tolist()
    q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    d_all = torch.from_numpy(np.ascontiguousarray(docs, dtype=np.float32))
    results: list[list[tuple[str, float]]] = []
    with torch.inference_mode():
        for qs in tqdm(range(0, q_all.shape[0], query_chunk), desc="search", disable=not show_progress):
            q = q_all[qs:qs + query_chunk]
            best_v = torch.empty((q.shape[0], 0))
            best_i = torch.empty((q.shape[0], 0), dtype=torch.long)
            for ds in range(0, n_docs, doc_chunk):
                scores = q @ d_all[ds:ds + doc_chunk].T
                v, i = top_k_with_ties(scores, min(k, scores.shape[1]), tie_rank[ds:ds + doc_chunk])
                best_v = torch.cat([best_v, v], dim=1)
                best_i = torch.cat([best_i, i + ds], dim=1)
                if best_v.shape[1] > k:  # keep the k best of the merged per-chunk candidates
                    best_v, best_i = _merge(best_v, best_i, k, tie_rank)
            for vals, idxs in zip(best_v.tolist(), best_i.tolist()):
                hits = sorted(zip(vals, idxs), key=lambda t: (-t[0], rank_list[t[1]]))
                results.append([(doc_ids[j], float(s)) for s, j in hits])
    return results


def _merge(values: torch.Tensor, indices: torch.Tensor, k: int,
           tie_rank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k best of per-chunk candidates under (score desc, doc id asc)."""
    out_v = torch.empty((values.shape[0], k))
    out_i = torch.empty((values.shape[0], k), dtype=torch.long)
    for r in range(values.shape[0]):
        keys = np.lexsort((tie_rank[indices[r]].numpy(), -values[r].double().numpy()))[:k]
        out_v[r] = values[r, keys]
        out_i[r] = indices[r, keys]
    return out_v, out_i
