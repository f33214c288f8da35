"""Hard-negative mining: for each query, negatives sampled from a band of its nearest pool texts.

Semantics follow the reference (FlagEmbedding ``hn_mine``): ``range_for_sampling = lo-hi`` is a
slice ``[lo:hi]`` of the raw ranking (0-based, before anything is removed), so ``2-200`` skips the
two nearest texts, which are often unlabelled positives. From that band every positive, every
text identical to a positive and the query itself are removed; then ``negative_number`` are
sampled (or the first ones taken, ``sampling="top"``). When the band is too small the rest is
filled with random pool texts, as the reference does, and counted.

Beyond the reference: ``false_negative_margin`` drops candidates whose score is within ``m`` of the
query's (weakest) positive, because such texts are more often unlabelled positives than
negatives; ``seed`` makes sampling reproducible; and the pool and query embeddings go through the
on-disk cache, so trying another range costs only the search.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cache import encode_cached, model_fingerprint
from ..errors import EmbforgeError
from ..protocols import EncoderLike
from ..store import EmbeddingStore
from ..store.search import search

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


def default_pool(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every pos and neg text of the input, de-duplicated in first-seen order."""
    return list(dict.fromkeys(t for r in records for key in ("pos", "neg") for t in r.get(key) or ()))


def search_device(use_gpu: bool) -> str:
    """Where the exact search runs: a CUDA device when asked and torch sees one, else the CPU."""
    if use_gpu and not torch.cuda.is_available():
        logger.warning("use_gpu_for_searching: torch sees no GPU; searching on the CPU")
    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


def mine_negatives(encoder: EncoderLike, records: Sequence[dict[str, Any]], pool: Sequence[str] | None = None,
                   range_for_sampling: str | Sequence[int] = (2, 200), negative_number: int = 15,
                   false_negative_margin: float | None = None, seed: int | None = 0,
                   sampling: str = "random", use_gpu: bool = False, batch_size: int = 64,
                   use_cache: bool = True) -> tuple[list[dict[str, Any]], MineStats]:
    """Return new records (all fields kept, ``neg`` replaced) and the statistics of the run."""
    lo, hi = parse_range(range_for_sampling)
    if negative_number <= 0:
        raise EmbforgeError(f"negative_number must be a positive integer, got {negative_number}")
    if false_negative_margin is not None and false_negative_margin < 0:
        raise EmbforgeError(f"false_negative_margin must be >= 0, got {false_negative_margin}")
    if sampling not in ("random", "top"):
        raise EmbforgeError(f"sampling must be 'random' or 'top', got {sampling!r}")
    if not records:
        raise EmbforgeError("mining: no input records")
    pool = list(dict.fromkeys(pool if pool is not None else default_pool(records)))
    if not pool:
        raise EmbforgeError("mining: the candidate pool is empty (the input has no pos/neg texts and no "
                            "--candidate_pool was given)")
    stats = MineStats(records=len(records), pool_size=len(pool))
    fingerprint = model_fingerprint(encoder) if use_cache else None
    queries = list(dict.fromkeys(r["query"] for r in records))

    t0 = time.perf_counter()
    pool_emb, stats.cache_hits["pool"] = encode_cached(encoder, pool, is_query=False, batch_size=batch_size,
                                                       use_cache=use_cache, show_progress=True,
                                                       fingerprint=fingerprint)
    q_emb, stats.cache_hits["queries"] = encode_cached(encoder, queries, is_query=True, batch_size=batch_size,
                                                       use_cache=use_cache, show_progress=True,
                                                       fingerprint=fingerprint)
    pool_index = {t: i for i, t in enumerate(pool)}
    extra_pos: list[str] = []
    if false_negative_margin is not None:
        extra_pos = list(dict.fromkeys(p for r in records for p in r["pos"] if p not in pool_index))
    extra_emb = None
    if extra_pos:
        extra_emb, stats.cache_hits["positives"] = encode_cached(
            encoder, extra_pos, is_query=False, batch_size=batch_size, use_cache=use_cache,
            fingerprint=fingerprint)
    t1 = time.perf_counter()

    k = min(hi, len(pool))
    stats.device = search_device(use_gpu)
    # exact, ties by pool order; local: mining runs in one process for now
    top = search(q_emb, EmbeddingStore.from_array(pool_emb), k, local=True, device=stats.device,
                 show_progress=q_emb.shape[0] > 4096)
    scores, ids = top.scores, top.rows
    t2 = time.perf_counter()

    rng = random.Random(seed)
    q_row = {q: i for i, q in enumerate(queries)}
    extra_index = {t: i for i, t in enumerate(extra_pos)}
    out: list[dict[str, Any]] = []
    for record in tqdm(records, desc="sample", unit="query", disable=len(records) < 10000):
        row = q_row[record["query"]]
        positives = set(record["pos"])
        banned = positives | {record["query"]}
        band = [(int(i), float(s)) for i, s in zip(ids[row, lo:k], scores[row, lo:k])
                if i >= 0 and pool[i] not in banned]
        threshold = None
        if false_negative_margin is not None and record["pos"]:
            pos_vecs = [pool_emb[pool_index[p]] if p in pool_index else extra_emb[extra_index[p]]  # type: ignore[index]
                        for p in record["pos"]]
            threshold = float(np.min(np.stack(pos_vecs) @ q_emb[row])) - false_negative_margin
            kept = [(i, s) for i, s in band if s < threshold]
            stats.margin_dropped += len(band) - len(kept)
            band = kept
        if len(band) > negative_number:
            chosen = band[:negative_number] if sampling == "top" else rng.sample(band, negative_number)
        else:
            chosen = band
        chosen_idx = [i for i, _ in chosen]
        if len(chosen_idx) < negative_number:
            allowed = None if threshold is None else pool_emb @ q_emb[row] < threshold  # padding obeys the margin
            chosen_idx += _pad(rng, pool, banned | {pool[i] for i in chosen_idx}, negative_number - len(chosen_idx),
                               allowed)
            if len(chosen_idx) > len(chosen):
                stats.padded_records += 1
                stats.padded_negatives += len(chosen_idx) - len(chosen)
        new = dict(record)
        new["neg"] = [pool[i] for i in chosen_idx]
        if "neg_scores" in new:  # the old scores described the old negatives
            new["neg_scores"] = [float(pool_emb[i] @ q_emb[row]) for i in chosen_idx]
        out.append(new)
    stats.timings = {"encode_s": t1 - t0, "search_s": t2 - t1, "sample_s": time.perf_counter() - t2}
    return out, stats


def _pad(rng: random.Random, pool: Sequence[str], banned: set[str], n: int,
         allowed: np.ndarray | None = None) -> list[int]:
    """Up to ``n`` random pool indices whose texts are not banned (the reference's fallback).

    ``allowed`` (a boolean mask over the pool) restricts the choice further, e.g. to the margin.
    """
    if allowed is not None or len(pool) < 4 * (n + len(banned)):  # sample from the explicit allowed list
        candidates = np.flatnonzero(allowed).tolist() if allowed is not None else range(len(pool))
        choices = [i for i in candidates if pool[i] not in banned]
        return rng.sample(choices, min(n, len(choices)))
    picked: list[int] = []
    seen: set[int] = set()
    while len(picked) < n:  # large pool: rejection sampling, most draws are allowed
        i = rng.randrange(len(pool))
        if i not in seen and pool[i] not in banned:
            seen.add(i)
            picked.append(i)
    return picked
