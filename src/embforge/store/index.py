"""Approximate search with a FAISS index over the store, and its recall against exact search.

For corpora where exact search is too slow: any ``index_factory`` string (``IVF4096,Flat``, ``HNSW32``,
``IVF4096,PQ64``, ``Flat``) with inner product. The index is trained once (on rank 0, on a deterministic
sample of the store's rows) and sent to every rank, so under torchrun every rank holds the same
quantizer and codebooks; each adds only its own shards, block by block from the memmaps (memory = the
index, never a float copy of the corpus on top), and the ranks' top-k lists are merged by the same rule
as exact search. An IVF index then probes the same lists in N processes as in one; HNSW builds one
graph per rank, so its (approximate) answers depend on the number of ranks.

``use_gpu``: when faiss sees GPUs (a faiss-gpu build), training and search run on GPU ``LOCAL_RANK``
(mod the GPU count); otherwise, and for index types faiss cannot move to a GPU (HNSW), a warning is
logged and the CPU is used. The GPU path is not exercised by the tests (faiss-cpu only here).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import EmbforgeError
from . import ranks
from .layout import EmbeddingStore
from .search import TopK, check_request, gather_merge, search, truncate

logger = logging.getLogger(__name__)

EXAMPLES = "'Flat', 'IVF4096,Flat', 'HNSW32', 'IVF4096,PQ64'"
TRAIN_ROWS = 40 * 4096  # faiss asks >= 39 points per centroid: enough for the IVF4096 of the examples


def _faiss() -> Any:
    import faiss

    return faiss


def _make(factory: str, dim: int) -> Any:
    faiss = _faiss()
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise EmbforgeError(f"index factory {factory!r}: faiss cannot build it ({str(exc).split('Error: ')[-1].strip()});"
                            f" expected a faiss index_factory string such as {EXAMPLES}") from exc


def _rows_needed(index: Any) -> int:
    """The fewest training rows faiss accepts: one per IVF list, 2**nbits per PQ codebook."""
    faiss = _faiss()
    need = 1
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        need = max(need, int(ivf.nlist))
    for obj in (index, ivf):
        pq = getattr(obj, "pq", None)
        if pq is not None:
            need = max(need, 2 ** int(pq.nbits))
    return need


def _to_gpu(index: Any, use_gpu: bool) -> Any:
    if not use_gpu:
        return index
    faiss = _faiss()
    n_gpus = getattr(faiss, "get_num_gpus", lambda: 0)()
    if n_gpus == 0:
        logger.warning("use_gpu: faiss sees no GPU (faiss-cpu installed?); the index runs on the CPU")
        return index
    device = int(os.environ.get("LOCAL_RANK", 0)) % n_gpus
    try:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), device, index)
    except RuntimeError as exc:
        logger.warning("use_gpu: faiss cannot put this index on a GPU (%s); it runs on the CPU", exc)
        return index


def _trained(factory: str, store: EmbeddingStore, dim: int, normalize: bool, train_rows: int, seed: int,
             use_gpu: bool) -> Any:
    """The empty trained index, built on rank 0 and sent to the others as bytes."""
    faiss = _faiss()
    index = _make(factory, dim)  # every rank: a bad string fails everywhere, before any collective
    if index.is_trained:
        return index
    need = _rows_needed(index)
    if store.n_rows < need:
        raise EmbforgeError(f"index {factory!r} needs at least {need} rows to train, the store has "
                            f"{store.n_rows}: use fewer lists (e.g. 'IVF{max(1, store.n_rows // 39)},Flat') "
                            "or exact search")
    if train_rows < need:
        raise EmbforgeError(f"train_rows={train_rows}: index {factory!r} needs at least {need} rows to train")
    blob: Any = None
    if ranks.is_main():
        pick = np.sort(np.random.default_rng(seed).choice(store.n_rows, min(train_rows, store.n_rows),
                                                         replace=False))
        sample = np.ascontiguousarray(truncate(store.rows(pick), dim, normalize))
        on = _to_gpu(index, use_gpu)
        try:
            on.train(sample)
            blob = faiss.serialize_index(faiss.index_gpu_to_cpu(on) if on is not index else index)
        except RuntimeError as exc:  # sent as text, so the other ranks raise too instead of waiting
            blob = f"index {factory!r}: faiss could not train it on {len(pick)} rows: {exc}"
    blob = ranks.broadcast_object(blob)
    if isinstance(blob, str):
        raise EmbforgeError(blob)
    return faiss.deserialize_index(blob)


def index_search(queries: np.ndarray, store: EmbeddingStore, k: int, factory: str, *, nprobe: int | None = None,
                 ef_search: int | None = None, use_gpu: bool = False, train_rows: int = TRAIN_ROWS, seed: int = 0, dim: int | None = None,
                 normalize: bool = False, query_block: int = 4096, add_block: int = 65536,
                 show_progress: bool = False) -> TopK:
    """Approximate top ``k`` store rows per query with a faiss index built from ``factory``.

    ``nprobe`` (IVF only) is the number of lists searched per query (faiss's default is 1);
    ``ef_search`` (HNSW only) the breadth of the graph walk (faiss's default 16 is low for k in the tens).
    ``dim``/``normalize`` truncate as in ``search``. Under torchrun every rank calls this with the same
    queries and gets the same TopK; rows the index could not fill are -1 with score -inf.
    """
    queries = np.asarray(queries)
    k = check_request(queries, store, k, None, dim)
    faiss = _faiss()
    width = store.dim if dim is None else min(dim, store.dim)
    rank, world = ranks.join()
    owned = store.owned(rank, world)
    index = _trained(factory, store, width, normalize, train_rows, seed, use_gpu)
    if nprobe is not None:
        if faiss.try_extract_index_ivf(index) is None:
            raise EmbforgeError(f"nprobe applies to IVF indexes; {factory!r} is not one")
        faiss.extract_index_ivf(index).nprobe = nprobe
    if ef_search is not None:
        hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
        if hnsw is None:
            raise EmbforgeError(f"ef_search applies to HNSW indexes; {factory!r} is not one")
        hnsw.efSearch = ef_search
    index = _to_gpu(index, use_gpu)
    # local ids are positions in add order; this table maps them back to global store rows
    local_starts, global_starts = [], []
    for start, block in tqdm(store.blocks(add_block, owned), desc="index", unit="block",
                             disable=not show_progress or rank != 0):
        local_starts.append(index.ntotal)
        global_starts.append(start)
        index.add(np.ascontiguousarray(truncate(block, dim, normalize)))
    starts, offsets = np.asarray(local_starts, dtype=np.int64), np.asarray(global_starts, dtype=np.int64)
    out_scores = np.empty((queries.shape[0], k), dtype=np.float32)
    out_rows = np.empty((queries.shape[0], k), dtype=np.int64)
    for qs in tqdm(range(0, queries.shape[0], query_block), desc="search", unit="block",
                   disable=not show_progress or rank != 0):
        q = np.ascontiguousarray(truncate(np.asarray(queries[qs:qs + query_block], dtype=np.float32), dim, normalize))
        if index.ntotal:
            scores, local = index.search(q, k)
        else:  # a rank without shards (more ranks than shards) still takes part in the merge
            scores, local = np.full((q.shape[0], k), -np.inf, np.float32), np.full((q.shape[0], k), -1, np.int64)
        which = np.clip(np.searchsorted(starts, local, side="right") - 1, 0, None)
        rows = np.where(local >= 0, local - starts[which] + offsets[which] if starts.size else -1, -1)
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        best_s, best_r = gather_merge(torch.from_numpy(scores), torch.from_numpy(rows.astype(np.int64)), k,
                                      None, world)
        out_scores[qs:qs + q.shape[0]] = best_s.numpy()
        out_rows[qs:qs + q.shape[0]] = best_r.numpy()
    return TopK(out_scores, out_rows)


def recall_at_k(approx: TopK, exact: TopK) -> float:
    """Mean over queries of |approx rows ∩ exact rows| / k, with k the exact lists' width."""
    if approx.rows.shape[0] != exact.rows.shape[0]:
        raise EmbforgeError(f"recall: {approx.rows.shape[0]} approximate lists against {exact.rows.shape[0]} exact")
    k = exact.rows.shape[1]
    if approx.rows.shape[0] == 0 or k == 0:
        return 1.0
    hits = 0
    for s in range(0, exact.rows.shape[0], 256):  # (256, k, k) comparisons at a time
        a, e = approx.rows[s:s + 256], exact.rows[s:s + 256]
        hits += int((a[:, :, None] == e[:, None, :]).any(axis=2).sum())  # exact rows are never -1
    return float(hits / (exact.rows.shape[0] * k))


def estimate_recall(queries: np.ndarray, store: EmbeddingStore, k: int, factory_result: TopK, sample: int = 1000,
                    seed: int = 0, *, dim: int | None = None, normalize: bool = False) -> float:
    """Recall@k of an index's result against exact search on a deterministic sample of the queries,
    so the user sees the recall without paying for the full exact search (collective under torchrun)."""
    n = queries.shape[0]
    pick = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    exact = search(np.asarray(queries)[pick], store, k, dim=dim, normalize=normalize)
    return recall_at_k(TopK(factory_result.scores[pick], factory_result.rows[pick]), exact)
