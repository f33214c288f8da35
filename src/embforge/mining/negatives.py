"""Hard-negative mining: for each query, negatives sampled from a band of its nearest pool texts.

Semantics follow the reference (FlagEmbedding ``hn_mine``): ``range_for_sampling = lo-hi`` is a
slice ``[lo:hi]`` of the raw ranking (0-based, before anything is removed), so ``2-200`` skips the
two nearest texts, which are often unlabelled positives. From that band every positive, every
text identical to a positive and the query itself are removed; then ``negative_number`` are
sampled (or the first ones taken, ``sampling="top"``). When the band is too small the rest is
filled with random pool texts, as the reference does, and counted.

Beyond the reference: ``false_negative_margin`` drops candidates whose score is within ``m`` of the
query's (weakest) positive, because such texts are more often unlabelled positives than
negatives; with a ``reranker`` (a cross-encoder) that test uses the reranker's scores of the band's
candidates and of the positives instead of the embedder's (margin 0 when none is given); ``seed`` makes sampling reproducible; and the pool and query embeddings go through the
embedding store, so trying another range costs only the search, and a killed run resumes.

The pool may be a stream of millions of texts: it is encoded shard by shard into the store, searched
over the memmapped shards, compared with positives through per-row text hashes, and read once more at
the end for the texts actually kept. Only the records, the query vectors, one hash per pool row and
the top-k lists are in memory.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ..cache import model_fingerprint
from ..errors import EmbforgeError
from ..protocols import EncoderLike
from ..store import EmbeddingStore
from ..store.encode import encode_store, private_root
from ..store.fingerprint import text_hashes
from ..store.index import estimate_recall, index_search
from ..store.search import TopK, search

if TYPE_CHECKING:  # pragma: no cover
    from ..model.cross_encoder import CrossEncoder

logger = logging.getLogger(__name__)


@dataclass
class MineStats:
    """What mining did, for the user and the report."""

    records: int = 0
    pool_size: int = 0
    margin_dropped: int = 0
    padded_records: int = 0
    padded_negatives: int = 0
    cache_hits: dict[str, bool] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    index: str = "exact"
    recall: float | None = None  # of --index against exact search, on a sample of queries
    encoded_shards: int = 0
    reused_shards: int = 0


def parse_range(value: str | Sequence[int]) -> tuple[int, int]:
    """``"2-200"`` -> (2, 200); requires 0 <= lo < hi."""
    if isinstance(value, str):
        parts = value.replace(",", "-").split("-")
        try:
            lo, hi = (int(p) for p in parts)
        except ValueError as exc:
            raise EmbforgeError(f"range_for_sampling: expected LO-HI such as 2-200, got {value!r}") from exc
    else:
        if len(value) != 2:
            raise EmbforgeError(f"range_for_sampling: expected two numbers, got {value!r}")
        lo, hi = int(value[0]), int(value[1])
    if lo < 0 or hi <= lo:
        raise EmbforgeError(f"range_for_sampling: expected 0 <= LO < HI, got {lo}-{hi}")
    return lo, hi


def text_hash(text: str) -> int:
    """The store's per-row text hash, for one text."""
    return int(text_hashes([text])[0])


def default_pool(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every pos and neg text of the input, de-duplicated in first-seen order."""
    return list(dict.fromkeys(t for r in records for key in ("pos", "neg") for t in r.get(key) or ()))


class UniqueTexts:
    """A re-iterable text stream with repeats dropped (first copy kept), without the texts in memory:
    one pass hashes every text, the following passes yield only first occurrences."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = texts
        hashes = text_hashes(texts)
        _, first = np.unique(hashes, return_index=True)
        self.keep = np.zeros(hashes.shape[0], dtype=bool)
        self.keep[first] = True
        self.dropped = int(hashes.shape[0] - first.shape[0])

    def __iter__(self) -> Iterator[str]:
        for keep, text in zip(self.keep, self.texts):
            if keep:
                yield text


def unique_pool(pool: Iterable[str]) -> Iterable[str]:
    """The pool without repeated texts: a list stays a list, a stream stays a stream."""
    if isinstance(pool, (list, tuple)):
        return list(dict.fromkeys(pool))
    return UniqueTexts(pool)


def fetch_texts(pool: Iterable[str], rows: Iterable[int]) -> dict[int, str]:
    """The texts at ``rows`` of the pool: indexed for a list, one streaming pass otherwise."""
    wanted = sorted(set(rows))
    if isinstance(pool, (list, tuple)):
        return {i: pool[i] for i in wanted}
    out: dict[int, str] = {}
    it = iter(wanted)
    target = next(it, None)
    for i, text in enumerate(pool):
        if target is None:
            break
        if i == target:
            out[i] = text
            target = next(it, None)
    return out


def _store_hashes(store: EmbeddingStore) -> np.ndarray:
    return np.concatenate([np.asarray(store.shard_hashes(i)) for i in range(len(store.shards))]) \
        if store.shards else np.empty(0, dtype=np.uint64)


def mine_negatives(encoder: EncoderLike, records: Sequence[dict[str, Any]], pool: Iterable[str] | None = None,
                   range_for_sampling: str | Sequence[int] = (2, 200), negative_number: int = 15,
                   false_negative_margin: float | None = None, seed: int | None = 0,
                   sampling: str = "random", use_gpu: bool = False, batch_size: int = 64,
                   use_cache: bool = True, *, shard_size: int = 16384, index: str | None = None,
                   nprobe: int | None = None, store_dir: str | Path | None = None,
                   reranker: CrossEncoder | None = None, max_tokens: int | None = None
                   ) -> tuple[list[dict[str, Any]], MineStats]:
    """Return new records (all fields kept, ``neg`` replaced) and the statistics of the run.

    ``pool`` is a list or a re-iterable stream of texts (default: every pos and neg of the records).
    ``index`` is a FAISS factory string for approximate search; its recall against exact search on a
    sample of queries is in the statistics. ``max_tokens`` batches the encoding by a padded-token budget
    (the same vectors, the same store). ``reranker`` judges the margin test (see the module's doc);
    only the band's candidates and the positives are scored by it. Under ``torchrun`` every rank calls this with the same
    arguments: the ranks share the encoding and the search, and every rank returns the same records.
    """
    lo, hi = parse_range(range_for_sampling)
    if negative_number <= 0:
        raise EmbforgeError(f"negative_number must be a positive integer, got {negative_number}")
    if false_negative_margin is not None and false_negative_margin < 0:
        raise EmbforgeError(f"false_negative_margin must be >= 0, got {false_negative_margin}")
    if sampling not in ("random", "top"):
        raise EmbforgeError(f"sampling must be 'random' or 'top', got {sampling!r}")
    if not records:
        raise EmbforgeError("mining: no input records")
    root = Path(store_dir) if store_dir else None
    if use_cache:
        return _mine(encoder, records, pool, lo, hi, negative_number, false_negative_margin, seed, sampling,
                     use_gpu, batch_size, shard_size, index, nprobe, root, reranker, max_tokens)
    with private_root(root) as private:  # the same code, on a store nobody else reads, removed afterwards
        return _mine(encoder, records, pool, lo, hi, negative_number, false_negative_margin, seed, sampling,
                     use_gpu, batch_size, shard_size, index, nprobe, private, reranker, max_tokens)


def _mine(encoder: EncoderLike, records: Sequence[dict[str, Any]], pool: Iterable[str] | None, lo: int, hi: int,
          negative_number: int, false_negative_margin: float | None, seed: int | None, sampling: str,
          use_gpu: bool, batch_size: int, shard_size: int, index: str | None, nprobe: int | None,
          root: Path | None, reranker: CrossEncoder | None, max_tokens: int | None
          ) -> tuple[list[dict[str, Any]], MineStats]:
    pool = unique_pool(pool if pool is not None else default_pool(records))
    fingerprint = model_fingerprint(encoder)
    queries = list(dict.fromkeys(r["query"] for r in records))
    store_args: dict[str, Any] = dict(batch_size=batch_size, shard_size=shard_size, fingerprint=fingerprint,
                                      root=root, max_tokens=max_tokens)

    t0 = time.perf_counter()
    pool_store, pool_run = encode_store(encoder, pool, is_query=False, show_progress=True, **store_args)
    if pool_store.n_rows == 0:
        raise EmbforgeError("mining: the candidate pool is empty (the input has no pos/neg texts and no "
                            "--candidate_pool was given)")
    q_store, q_run = encode_store(encoder, queries, is_query=True, **store_args)
    q_emb = q_store.to_array()
    stats = MineStats(records=len(records), pool_size=pool_store.n_rows, index=index or "exact",
                      cache_hits={"pool": pool_run.encoded == 0, "queries": q_run.encoded == 0},
                      encoded_shards=pool_run.encoded + q_run.encoded, reused_shards=pool_run.reused + q_run.reused)
    pool_hashes = _store_hashes(pool_store)
    by_hash = np.argsort(pool_hashes, kind="stable")
    rerank_margin = None if reranker is None else (false_negative_margin or 0.0)
    if reranker is not None:
        false_negative_margin = None  # the embedder's scores no longer judge the margin
    pos_rows = _positive_rows(records, pool_hashes, by_hash) if false_negative_margin is not None else {}
    extra_pos = list(dict.fromkeys(p for r in records for p in r["pos"] if p not in pos_rows)) \
        if false_negative_margin is not None else []
    extra_emb = None
    if extra_pos:
        extra_store, extra_run = encode_store(encoder, extra_pos, is_query=False, **store_args)
        extra_emb = extra_store.to_array()
        stats.cache_hits["positives"] = extra_run.encoded == 0
    t1 = time.perf_counter()

    k = min(hi, pool_store.n_rows)
    top = _search(q_emb, pool_store, k, index, nprobe, use_gpu, stats)
    t2 = time.perf_counter()

    rng = random.Random(seed)
    q_row = {q: i for i, q in enumerate(queries)}
    extra_index = {t: i for i, t in enumerate(extra_pos)}
    dropped: list[set[int]] = []
    if reranker is not None:
        bands = [_band(top, q_row[r["query"]], lo, k, pool_hashes, _banned(r)) for r in records]
        dropped = _reranker_drops(reranker, records, bands, pool, rerank_margin or 0.0, batch_size)
    chosen_rows: list[list[int]] = []
    for n, record in enumerate(tqdm(records, desc="sample", unit="query", disable=len(records) < 10000)):
        row = q_row[record["query"]]
        banned = _banned(record)
        band = _band(top, row, lo, k, pool_hashes, banned)
        if dropped:  # the reranker's false negatives: out of the band, and never back as padding
            kept = [(i, s) for i, s in band if i not in dropped[n]]
            stats.margin_dropped += len(band) - len(kept)
            band = kept
            banned |= {int(pool_hashes[i]) for i in dropped[n]}
        threshold = None
        if false_negative_margin is not None and record["pos"]:
            pos_vecs = [pool_store.rows(np.array([pos_rows[p]]))[0] if p in pos_rows
                        else extra_emb[extra_index[p]] for p in record["pos"]]  # type: ignore[index]
            threshold = float(np.min(np.stack(pos_vecs) @ q_emb[row])) - false_negative_margin
            kept = [(i, s) for i, s in band if s < threshold]
            stats.margin_dropped += len(band) - len(kept)
            band = kept
        if len(band) > negative_number:
            chosen = band[:negative_number] if sampling == "top" else rng.sample(band, negative_number)
        else:
            chosen = band
        picked = [i for i, _ in chosen]
        if len(picked) < negative_number:
            allowed = None if threshold is None else _below(pool_store, q_emb[row], threshold)  # padding obeys the margin
            picked += _pad(rng, pool_hashes, banned | {int(pool_hashes[i]) for i in picked},
                           negative_number - len(picked), allowed)
            if len(picked) > len(chosen):
                stats.padded_records += 1
                stats.padded_negatives += len(picked) - len(chosen)
        chosen_rows.append(picked)
    texts = fetch_texts(pool, (i for rows in chosen_rows for i in rows))
    out: list[dict[str, Any]] = []
    for record, picked in zip(records, chosen_rows):
        new = dict(record)
        new["neg"] = [texts[i] for i in picked]
        if "neg_scores" in new:  # the old scores described the old negatives
            q = q_emb[q_row[record["query"]]]
            new["neg_scores"] = [float(v @ q) for v in pool_store.rows(np.array(picked, dtype=np.int64))]
        out.append(new)
    stats.timings = {"encode_s": t1 - t0, "search_s": t2 - t1, "sample_s": time.perf_counter() - t2}
    return out, stats


def _banned(record: dict[str, Any]) -> set[int]:
    """Text hashes a record's negatives may never be: its positives and its query."""
    return {text_hash(t) for t in record["pos"]} | {text_hash(record["query"])}


def _band(top: TopK, row: int, lo: int, k: int, pool_hashes: np.ndarray, banned: set[int]) -> list[tuple[int, float]]:
    """(pool row, score) of the query's ranks ``lo:k``, without banned texts."""
    return [(int(i), float(s)) for i, s in zip(top.rows[row, lo:k], top.scores[row, lo:k])
            if i >= 0 and int(pool_hashes[i]) not in banned]


def _reranker_drops(reranker: CrossEncoder, records: Sequence[dict[str, Any]],
                    bands: Sequence[Sequence[tuple[int, float]]], pool: Iterable[str], margin: float,
                    batch_size: int) -> list[set[int]]:
    """Per record, the band rows the reranker scores at or above (its weakest positive's score - margin).

    The band's texts come from the pool in one pass; the positives' and the band's pairs are scored in
    one batched call, shared out among the ranks under torchrun.
    """
    from ..model.shared_predict import predict_shared

    texts = fetch_texts(pool, (i for band in bands for i, _ in band))
    pairs = [(r["query"], t) for r, band in zip(records, bands) for t in [*r["pos"], *(texts[i] for i, _ in band)]]
    scores = predict_shared(reranker, pairs, batch_size=batch_size, show_progress_bar=len(pairs) > 8 * batch_size)
    out: list[set[int]] = []
    at = 0
    for record, band in zip(records, bands):
        n_pos = len(record["pos"])
        pos, cand = scores[at:at + n_pos], scores[at + n_pos:at + n_pos + len(band)]
        at += n_pos + len(band)
        threshold = float(pos.min()) - margin if n_pos else float("inf")
        out.append({i for (i, _), s in zip(band, cand) if float(s) >= threshold})
    return out


def search_device(use_gpu: bool) -> str:
    """Where the exact search runs: a CUDA device when asked and torch sees one, else the CPU."""
    import torch

    if use_gpu and not torch.cuda.is_available():
        logger.warning("use_gpu_for_searching: torch sees no GPU; searching on the CPU")
    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


def _search(q_emb: np.ndarray, store: EmbeddingStore, k: int, index: str | None, nprobe: int | None,
            use_gpu: bool, stats: MineStats) -> TopK:
    """Exact blocked search, or a FAISS index with its recall against exact search measured on a sample."""
    if not index:
        stats.device = search_device(use_gpu)
        return search(q_emb, store, k, device=stats.device, show_progress=q_emb.shape[0] > 10000)
    top = index_search(q_emb, store, k, index, nprobe=nprobe, use_gpu=use_gpu, show_progress=True)
    stats.recall = estimate_recall(q_emb, store, k, top)
    return top


def _positive_rows(records: Sequence[dict[str, Any]], pool_hashes: np.ndarray, by_hash: np.ndarray) -> dict[str, int]:
    """Pool row of each positive text found in the pool (by text hash), so its vector is not encoded again."""
    out: dict[str, int] = {}
    sorted_hashes = pool_hashes[by_hash]
    for p in dict.fromkeys(p for r in records for p in r["pos"]):
        h = np.uint64(text_hash(p))
        j = int(np.searchsorted(sorted_hashes, h))
        if j < sorted_hashes.shape[0] and sorted_hashes[j] == h:
            out[p] = int(by_hash[j])
    return out


def _below(store: EmbeddingStore, query: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of pool rows scoring below ``threshold`` for ``query`` (block by block)."""
    mask = np.empty(store.n_rows, dtype=bool)
    for start, block in store.blocks():
        mask[start:start + block.shape[0]] = block @ query < threshold
    return mask


def _pad(rng: random.Random, pool_hashes: np.ndarray, banned: set[int], n: int,
         allowed: np.ndarray | None = None) -> list[int]:
    """Up to ``n`` random pool rows whose texts are not banned (the reference's fallback).

    ``allowed`` (a boolean mask over the pool) restricts the choice further, e.g. to the margin.
    """
    size = pool_hashes.shape[0]
    if allowed is not None or size < 4 * (n + len(banned)):  # sample from the explicit allowed list
        candidates = np.flatnonzero(allowed).tolist() if allowed is not None else range(size)
        choices = [i for i in candidates if int(pool_hashes[i]) not in banned]
        return rng.sample(choices, min(n, len(choices)))
    picked: list[int] = []
    seen: set[int] = set()
    while len(picked) < n:  # large pool: rejection sampling, most draws are allowed
        i = rng.randrange(size)
        if i not in seen and int(pool_hashes[i]) not in banned:
            seen.add(i)
            picked.append(i)
    return picked
