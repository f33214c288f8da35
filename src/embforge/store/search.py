"""Exact top-k inner-product search over an embedding store: one implementation for eval and mining.

Blocked matmul + top-k, never holding more than ``query_block x (doc_block + k)`` scores: the store is
read block by block from its memmaps. Ties are broken by ``(score desc, tie_rank asc)`` at every step,
so the answer depends on neither the block sizes, the thread count nor the number of processes.
Under torchrun each rank searches its own shards and the ranks' top-k lists are merged with the same
rule. Blocks never cross a shard boundary, so every (query block, doc block) matmul has the same shapes
in one process as in N, and the scores are bit-identical.

The rule is applied through one int64 key per candidate: the score's float32 bits mapped to an
order-preserving integer in the high 32 bits, ``2**32 - 1 - tie_rank`` in the low ones. ``topk`` over
keys is then the whole tie-break, vectorised, for merges of any width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import EmbforgeError
from . import ranks
from .layout import EmbeddingStore

_LOW = 2**32 - 1  # tie ranks must fit the key's low 32 bits
_PAD = torch.iinfo(torch.int64).min  # below every real key, even a score of -inf


@dataclass(frozen=True)
class TopK:
    """The k best store rows per query, best first; an approximate index may leave ``-1`` rows
    (score ``-inf``) where it found fewer than k."""

    scores: np.ndarray  # (n_queries, k) float32
    rows: np.ndarray  # (n_queries, k) int64 global store rows


def keys(scores: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered as (score desc, tie asc): larger key = better candidate."""
    bits = (scores.float() + 0.0).contiguous().view(torch.int32)  # + 0.0 folds -0.0 onto 0.0
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return ordered * 2**32 + (_LOW - ties)


def select(scores: torch.Tensor, k: int, ties: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k set of each row of ``scores`` under the rule, as (values, column indices), unordered
    among equal values; ``ties`` gives each column's tie rank (broadcastable to ``scores``).

    torch.topk alone picks arbitrarily among equal scores at the k-th place. A boundary tie shows as
    the (k+1)-th score equal to the k-th; only rows with one are re-selected by key, so the common case
    costs one topk and keys are never computed over a whole block.
    """
    if k >= scores.shape[1]:
        order = torch.arange(scores.shape[1], device=scores.device).expand(scores.shape[0], -1)
        return scores, order
    values, idx = torch.topk(scores, k + 1, dim=1)
    values, idx, tied = values[:, :k], idx[:, :k], (values[:, k - 1] == values[:, k]).nonzero().flatten()
    if tied.numel():
        sub = scores[tied]
        chosen = torch.topk(keys(sub, ties.expand(scores.shape)[tied]), k, dim=1).indices
        idx[tied] = chosen
        values[tied] = sub.gather(1, chosen)
    return values, idx


def order(scores: torch.Tensor, rows: torch.Tensor, tie_rank: torch.Tensor | None) -> tuple[
        torch.Tensor, torch.Tensor]:
    """Candidates (``rows`` -1 = padding, last) sorted best first by (score desc, tie rank asc)."""
    ties = rows if tie_rank is None else tie_rank[rows.clamp(min=0)]
    key = torch.where(rows >= 0, keys(scores, ties), _PAD)
    perm = torch.sort(key, dim=1, descending=True).indices
    return scores.gather(1, perm), rows.gather(1, perm)


def top_k_with_ties(scores: torch.Tensor, k: int, tie_rank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (values, column indices) per row of ``scores``, ordered by (score desc, tie_rank asc)."""
    values, idx = select(scores, k, tie_rank)
    return order(values, idx, tie_rank)


def merge(scores: torch.Tensor, rows: torch.Tensor, k: int, tie_rank: torch.Tensor | None) -> tuple[
        torch.Tensor, torch.Tensor]:
    """The top-k set of candidate lists laid side by side (``rows`` -1 = padding, score -inf), unordered
    among equal scores: call ``order`` on the final lists."""
    ties = rows if tie_rank is None else tie_rank[rows.clamp(min=0)]
    ties = torch.where(rows >= 0, ties, _LOW)  # padding loses every tie, even against a real -inf
    values, idx = select(scores, k, ties)
    return values, rows.gather(1, idx)


def gather_merge(scores: torch.Tensor, rows: torch.Tensor, k: int, tie_rank: torch.Tensor | None,
                 world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's (n, k) candidates for the same queries, merged and ordered: the same on every rank."""
    if world > 1:
        all_scores = ranks.all_gather_array(scores.cpu().numpy())
        all_rows = ranks.all_gather_array(rows.cpu().numpy())
        scores, rows = merge(torch.from_numpy(np.concatenate(all_scores, axis=1)).to(scores.device),
                             torch.from_numpy(np.concatenate(all_rows, axis=1)).to(rows.device), k, tie_rank)
    return order(scores, rows, tie_rank)


def truncate(block: np.ndarray, dim: int | None, normalize: bool) -> np.ndarray:
    """Matryoshka truncation: the first ``dim`` coordinates, re-normalised when the encoder normalises (as
    Encoder.encode does); ``cache.truncate`` is this function."""
    if dim is None or dim >= block.shape[1]:
        return block
    out = np.ascontiguousarray(block[:, :dim])
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, 1e-12)
    return out.astype(np.float32, copy=False)


def check_request(queries: np.ndarray, store: EmbeddingStore, k: int, tie_rank: np.ndarray | None,
                  dim: int | None) -> int:
    """Validate a search; returns the effective k (at most the store's rows)."""
    if k <= 0:
        raise EmbforgeError(f"k must be a positive integer, got {k}")
    if store.n_rows == 0:
        raise EmbforgeError(f"{store.root}: the store is empty: nothing to search")
    if queries.ndim != 2 or queries.shape[1] != store.dim:
        raise EmbforgeError(f"queries of shape {tuple(queries.shape)}: expected (n, {store.dim}), the store's dim")
    if dim is not None and dim <= 0:
        raise EmbforgeError(f"dim must be a positive integer, got {dim}")
    if tie_rank is not None and tie_rank.shape != (store.n_rows,):
        raise EmbforgeError(f"tie_rank has shape {tie_rank.shape}, expected ({store.n_rows},): one per store row")
    if store.n_rows > _LOW:
        raise EmbforgeError(f"{store.root}: {store.n_rows} rows; search supports at most {_LOW}")
    return min(k, store.n_rows)


def search(queries: np.ndarray, store: EmbeddingStore, k: int, *, tie_rank: np.ndarray | None = None,
           dim: int | None = None, normalize: bool = False, query_block: int = 1024, doc_block: int = 65536,
           show_progress: bool = False, local: bool = False, device: str | torch.device = "cpu") -> TopK:
    """The exact top ``k`` store rows by inner product for each query row, best first.

    ``k`` larger than the store is cut to ``store.n_rows``. ``tie_rank`` (one distinct integer in
    ``[0, 2**32)`` per store row; default the row itself) orders equal scores, lowest first. ``dim``
    truncates queries and every doc block to their first ``dim`` coordinates (re-normalised when
    ``normalize``), so each Matryoshka dim is searched without a truncated copy of the corpus.

    Under torchrun (world > 1) every rank must call this with the same queries; each searches the shards
    it owns and all return the same TopK. ``local=True`` searches every shard here with no collective,
    for a caller that runs on one rank only. ``device`` runs the matmuls there (e.g. "cuda").
    """
    queries = np.asarray(queries)
    k = check_request(queries, store, k, tie_rank, dim)
    rank, world = (0, 1) if local else ranks.join()
    owned = store.owned(rank, world) if world > 1 else None
    dev = torch.device(device)
    ties = None if tie_rank is None else torch.as_tensor(np.asarray(tie_rank, dtype=np.int64), device=dev)
    n_blocks = sum(-(-store.shards[i].rows // doc_block) for i in (owned if owned is not None
                                                                    else range(len(store.shards))))
    out_scores = np.empty((queries.shape[0], k), dtype=np.float32)
    out_rows = np.empty((queries.shape[0], k), dtype=np.int64)
    bar = tqdm(total=-(-queries.shape[0] // query_block) * n_blocks, desc="search", unit="block",
               disable=not show_progress or rank != 0)
    with torch.inference_mode():
        for qs in range(0, queries.shape[0], query_block):
            q = torch.from_numpy(np.array(truncate(np.asarray(queries[qs:qs + query_block], dtype=np.float32),
                                                   dim, normalize))).to(dev)
            best_s = torch.full((q.shape[0], k), -torch.inf, device=dev)
            best_r = torch.full((q.shape[0], k), -1, dtype=torch.int64, device=dev)
            for start, block in store.blocks(doc_block, owned):
                d = torch.from_numpy(np.require(truncate(block, dim, normalize), requirements=["C", "W"])).to(dev)
                scores = q @ d.T
                block_ties = (torch.arange(start, start + d.shape[0], device=dev) if ties is None
                              else ties[start:start + d.shape[0]])
                s, i = select(scores, min(k, d.shape[0]), block_ties)
                best_s, best_r = merge(torch.cat([best_s, s], 1), torch.cat([best_r, i + start], 1), k, ties)
                bar.update()
            best_s, best_r = gather_merge(best_s, best_r, k, ties, world)
            out_scores[qs:qs + q.shape[0]] = best_s.cpu().numpy()
            out_rows[qs:qs + q.shape[0]] = best_r.cpu().numpy()
    bar.close()
    return TopK(out_scores, out_rows)
