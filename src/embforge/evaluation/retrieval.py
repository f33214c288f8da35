"""Retrieval evaluation: a corpus, queries and qrels -> metrics at each Matryoshka dim.

Inputs are document ids with their texts (a list, or a stream such as a BEIR corpus file read from the
top each time), queries and graded qrels, so BEIR folders and FlagEmbedding query/pos JSONL reduce to
the same task. The corpus is encoded once at full dimension into the embedding store and searched
shard by shard, truncated per dim inside the search (Matryoshka): only the ids, the queries and the
top-k lists are in memory, never the corpus's texts or vectors. Under ``torchrun`` the ranks share the
encoding and the search and every rank computes the same metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache import model_fingerprint
from ..errors import EmbforgeError
from ..protocols import EncoderLike, encode_texts
from ..store.encode import encode_store, private_root
from ..store.index import estimate_recall, index_search
from ..store.search import search
from .metrics import check_ks, msmarco_metrics, retrieval_metrics
from .rerank import rerank_rows
from .search import id_tie_rank

if TYPE_CHECKING:  # pragma: no cover
    from ..model.cross_encoder import CrossEncoder

logger = logging.getLogger(__name__)


@dataclass
class RetrievalTask:
    """What to evaluate: document ids with their texts (aligned; ``doc_texts`` re-iterable), query id ->
    text, graded qrels, and where they came from."""

    doc_ids: list[str]
    doc_texts: Iterable[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    source: str = "data"
    kind: str = "beir"  # "beir" or "jsonl" (the latter also reports the MSMARCO-style block)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_corpus(cls, corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]],
                    **kwargs: Any) -> RetrievalTask:
        """A task over an in-memory id -> text corpus."""
        return cls(list(corpus), list(corpus.values()), queries, qrels, **kwargs)


def check_qrels(task: RetrievalTask, strict: bool = False) -> RetrievalTask:
    """Drop qrels that name unknown queries or documents; warn with counts, or fail under ``strict``."""
    if not task.doc_ids:
        raise EmbforgeError(f"{task.source}: the corpus is empty (expected at least one document)")
    known = set(task.doc_ids)
    missing_q = [q for q in task.qrels if q not in task.queries]
    missing_d = sorted({d for rel in task.qrels.values() for d in rel if d not in known})
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


@contextmanager
def store_root(use_cache: bool, store_dir: str | Path | None) -> Iterator[Path | None]:
    """The embedding cache (or ``store_dir``), or a private store removed afterwards when caching is off."""
    root = Path(store_dir) if store_dir else None
    if use_cache:
        with nullcontext(root) as cached:
            yield cached
    else:
        with private_root(root) as private:
            yield private


def _metrics(ranked: dict[str, list[tuple[str, float]]], task: RetrievalTask, ks: list[int]) -> dict[str, Any]:
    metrics: dict[str, Any] = retrieval_metrics(ranked, task.qrels, ks)
    if task.kind == "jsonl":
        metrics["msmarco"] = msmarco_metrics(metrics)
    return metrics


def evaluate_retrieval(encoder: EncoderLike, task: RetrievalTask, ks: Iterable[int] = (1, 10, 100),
                       dims: Sequence[int] | None = None, batch_size: int = 64, use_cache: bool = True,
                       strict: bool = False, *, shard_size: int = 16384, store_dir: str | Path | None = None,
                       index: str | None = None, nprobe: int | None = None,
                       reranker: CrossEncoder | None = None, rerank_top_k: int = 100,
                       max_tokens: int | None = None) -> dict[str, Any]:
    """Metrics per dim: ``{"dims": {"384": {...}, "64": {...}}, "timings": {...}, ...}``.

    ``index`` (a FAISS factory string) replaces exact search; the recall of its top-k against exact
    search, on a sample of queries, is reported beside the metrics it gives. ``reranker`` reorders each
    query's first ``rerank_top_k`` results of the largest dim; its metrics are ``result["rerank"]["metrics"]``.
    ``max_tokens`` batches documents and queries by a padded-token budget (the same vectors).
    """
    ks = check_ks(ks)
    full = int(encoder.embedding_dim)
    dim_list = check_dims(dims, full)
    task = check_qrels(task, strict)
    normalize = bool(getattr(encoder.config, "normalize", True))
    doc_ids = task.doc_ids
    qids = list(task.queries)
    tie_rank = id_tie_rank(doc_ids)
    recall: dict[str, float] = {}
    with store_root(use_cache, store_dir) as root:
        t0 = time.perf_counter()
        store, run = encode_store(encoder, task.doc_texts, is_query=False, batch_size=batch_size,
                                  shard_size=shard_size, root=root, fingerprint=model_fingerprint(encoder),
                                  show_progress=True, max_tokens=max_tokens)
        if store.n_rows != len(doc_ids):
            raise EmbforgeError(f"{task.source}: {store.n_rows} texts for {len(doc_ids)} document ids")
        t1 = time.perf_counter()
        # queries are cheap and usually change with instructions, so they bypass the cache
        q_emb = encode_texts(encoder, [task.queries[q] for q in qids], batch_size=batch_size, is_query=True,
                             max_tokens=max_tokens)
        t2 = time.perf_counter()
        per_dim: dict[str, dict[str, float]] = {}
        k = min(max(max(ks), rerank_top_k if reranker is not None else 0), store.n_rows)
        for dim in dim_list:
            if index:
                if dim is not None:
                    raise EmbforgeError("--index searches the full dimension; evaluate --dims with exact search")
                top = index_search(q_emb, store, k, index, nprobe=nprobe, show_progress=len(qids) > 1000)
                recall[str(full)] = estimate_recall(q_emb, store, k, top)
            else:
                top = search(q_emb, store, k, tie_rank=tie_rank, dim=dim, normalize=normalize,
                             show_progress=len(qids) > 1000)
            ranked = [[(doc_ids[r], float(s)) for r, s in zip(rows, scores) if r >= 0]
                      for rows, scores in zip(top.rows.tolist(), top.scores.tolist())]
            per_dim[str(dim or full)] = _metrics(dict(zip(qids, ranked)), task, ks)
        t3 = time.perf_counter()
        reranked = None
        if reranker is not None:  # the largest dim's lists (the last searched), second stage
            first = [[r for r in rows if r >= 0] for rows in top.rows.tolist()]
            orders = rerank_rows(reranker, [task.queries[q] for q in qids], first, task.doc_texts, rerank_top_k,
                                 batch_size=batch_size)
            # metrics sort by score: give each doc its place in the reranked order as its score
            reranked = _metrics({q: [(doc_ids[r], float(len(o) - j)) for j, r in enumerate(o)]
                                 for q, o in zip(qids, orders)}, task, ks)
        t4 = time.perf_counter()
    result: dict[str, Any] = {
        "task": "retrieval",
        "corpus_size": len(doc_ids),
        "queries": len(qids),
        "ks": ks,
        "dims": per_dim,
        "corpus_from_cache": run.encoded == 0,
        "store": {"shards": run.shards, "encoded": run.encoded, "reused": run.reused},
        "timings": {"encode_corpus_s": t1 - t0, "encode_queries_s": t2 - t1, "search_and_metrics_s": t3 - t2},
        "notes": task.notes,
    }
    if reranker is not None:
        result["rerank"] = {"model": reranker.name_or_path, "top_k": rerank_top_k, "dim": list(per_dim)[-1],
                            "dtype": str(reranker.hf_model.dtype).removeprefix("torch."), "metrics": reranked}
        result["timings"]["rerank_s"] = t4 - t3
    if index:
        result["index"] = {"factory": index, "nprobe": nprobe, f"recall@{k}_vs_exact": recall[str(full)]}
    return result
