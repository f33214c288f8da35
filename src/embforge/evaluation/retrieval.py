"""Retrieval evaluation: a corpus, queries and qrels -> metrics at each Matryoshka dim.

Inputs are plain dicts (id -> text, qid -> {docid: grade}), so BEIR folders and FlagEmbedding
query/pos JSONL reduce to the same task. The corpus is encoded once at full dimension (through the
embedding cache) and truncated per dim, which is what Matryoshka truncation means.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cache import encode_cached, model_fingerprint, truncate
from ..errors import EmbforgeError
from ..protocols import EncoderLike
from .metrics import check_ks, msmarco_metrics, retrieval_metrics
from .search import exact_search

logger = logging.getLogger(__name__)


@dataclass
class RetrievalTask:
    """What to evaluate: id -> text maps plus graded qrels, and where they came from."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    source: str = "data"
    kind: str = "beir"  # "beir" or "jsonl" (the latter also reports the MSMARCO-style block)
    notes: list[str] = field(default_factory=list)


def check_qrels(task: RetrievalTask, strict: bool = False) -> RetrievalTask:
    """Drop qrels that name unknown queries or documents; warn with counts, or fail under ``strict``."""
    if not task.corpus:
        raise EmbforgeError(f"{task.source}: the corpus is empty (expected at least one document)")
    missing_q = [q for q in task.qrels if q not in task.queries]
    missing_d = sorted({d for rel in task.qrels.values() for d in rel if d not in task.corpus})
    if missing_q or missing_d:
        what = []
        if missing_q:
            what.append(f"{len(missing_q)} query id(s) not in the queries (e.g. {missing_q[0]!r})")
        if missing_d:
            what.append(f"{len(missing_d)} document id(s) not in the corpus (e.g. {missing_d[0]!r})")
        message = f"{task.source}: qrels name {' and '.join(what)}"
        if strict:
            raise EmbforgeError(f"{message}; expected every qrels id to exist (drop --strict to skip them)")
        logger.info("%s; skipping them", message)  # the caller reports ``notes`` (the CLI on stderr)
        task.notes.append(message + "; skipped")
    missing_d_set = set(missing_d)
    qrels = {}
    for q, rel in task.qrels.items():
        if q not in task.queries:
            continue
        kept = {d: g for d, g in rel.items() if d not in missing_d_set}
        if any(g > 0 for g in kept.values()):
            qrels[q] = kept
    if not qrels:
        raise EmbforgeError(f"{task.source}: no query has a relevant document in the corpus; nothing to evaluate")
    task.qrels = qrels
    task.queries = {q: task.queries[q] for q in qrels}
    return task


def check_dims(dims: Sequence[int] | None, full: int) -> list[int | None]:
    """Matryoshka dims to evaluate (None = full); each must be 1..full."""
    if not dims:
        return [None]
    out: list[int | None] = []
    for d in sorted(set(int(x) for x in dims)):
        if not 0 < d <= full:
            raise EmbforgeError(f"dims: {d} is outside 1..{full} (the model's embedding size)")
        out.append(None if d == full else d)
    return out


def evaluate_retrieval(encoder: EncoderLike, task: RetrievalTask, ks: Iterable[int] = (1, 10, 100),
                       dims: Sequence[int] | None = None, batch_size: int = 64, use_cache: bool = True,
                       strict: bool = False) -> dict[str, Any]:
    """Metrics per dim: ``{"dims": {"384": {...}, "64": {...}}, "timings": {...}, ...}``."""
    ks = check_ks(ks)
    full = int(encoder.embedding_dim)
    dim_list = check_dims(dims, full)
    task = check_qrels(task, strict)
    normalize = bool(getattr(encoder.config, "normalize", True))
    fingerprint = model_fingerprint(encoder) if use_cache else None
    doc_ids = list(task.corpus)
    qids = list(task.queries)
    t0 = time.perf_counter()
    doc_emb, corpus_hit = encode_cached(encoder, [task.corpus[d] for d in doc_ids], is_query=False,
                                        batch_size=batch_size, use_cache=use_cache, show_progress=True,
                                        fingerprint=fingerprint)
    t1 = time.perf_counter()
    # queries are cheap and usually change with instructions, so they bypass the cache
    q_emb = encoder.encode([task.queries[q] for q in qids], batch_size=batch_size, is_query=True)
    t2 = time.perf_counter()
    per_dim: dict[str, dict[str, float]] = {}
    for dim in dim_list:
        ranked = exact_search(truncate(q_emb, dim, normalize), truncate(doc_emb, dim, normalize), doc_ids,
                              max(ks), show_progress=len(qids) > 1000)
        metrics = retrieval_metrics(dict(zip(qids, ranked)), task.qrels, ks)
        if task.kind == "jsonl":
            metrics["msmarco"] = msmarco_metrics(metrics)  # type: ignore[assignment]
        per_dim[str(dim or full)] = metrics
    t3 = time.perf_counter()
    return {
        "task": "retrieval",
        "corpus_size": len(doc_ids),
        "queries": len(qids),
        "ks": ks,
        "dims": per_dim,
        "corpus_from_cache": corpus_hit,
        "timings": {"encode_corpus_s": t1 - t0, "encode_queries_s": t2 - t1, "search_and_metrics_s": t3 - t2},
        "notes": task.notes,
    }
