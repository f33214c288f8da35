"""Retrieval with CSR sparse codes, against dense search at the same number of active dimensions.

Documents become an inverted index: the transposed (latents x docs) CSR matrix, whose row j is the
posting list of latent j. A query with k active latents touches only those k posting lists, so its
cost grows with how many documents share its latents, not with the corpus size times the dims.
The comparison point is Matryoshka truncation of the same dense embeddings to k dims: k numbers
per vector on both sides.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..cache import encode_cached, model_fingerprint, truncate
from ..csr.model import CSRModel
from ..csr.sparse import SparseCodes, encode_dense
from ..errors import EmbforgeError
from ..protocols import EncoderLike, encode_texts
from .config import EvalConfig
from .metrics import check_ks, retrieval_metrics
from .retrieval import RetrievalTask, check_qrels
from .search import exact_search, top_k_with_ties

if TYPE_CHECKING:  # pragma: no cover
    from ..data.records import RetrievalRecord, ScoredPair
    from ..model.encoder import Encoder


class InvertedIndex:
    """Posting lists of sparse document codes; scores are sparse dot products."""

    def __init__(self, docs: SparseCodes, doc_ids: Sequence[str]):
        if len(doc_ids) != len(docs):
            raise ValueError("doc_ids and docs differ in length")
        self.doc_ids = list(doc_ids)
        self.hidden_size = docs.hidden_size
        self.postings = docs.to_scipy().T.tocsr()  # (hidden, n_docs)
        order = sorted(range(len(doc_ids)), key=self.doc_ids.__getitem__)
        self.tie_rank = torch.empty(len(doc_ids), dtype=torch.long)
        self.tie_rank[torch.as_tensor(order, dtype=torch.long)] = torch.arange(len(doc_ids))

    def scores(self, queries: SparseCodes) -> np.ndarray:
        """(n_queries, n_docs) dense score matrix, for evaluating many queries at once."""
        if queries.hidden_size != self.hidden_size:
            raise EmbforgeError(f"query codes have {queries.hidden_size} latents, the index {self.hidden_size}")
        return np.asarray((queries.to_scipy() @ self.postings).todense(), dtype=np.float32)

    def search(self, queries: SparseCodes, k: int, chunk: int = 256) -> list[list[tuple[str, float]]]:
        """Top ``k`` (doc id, score) per query, ties broken by doc id like the dense search."""
        k = min(k, len(self.doc_ids))
        out: list[list[tuple[str, float]]] = []
        for s in range(0, len(queries), chunk):
            part = SparseCodes(queries.indices[s:s + chunk], queries.values[s:s + chunk], queries.hidden_size)
            values, idx = top_k_with_ties(torch.from_numpy(self.scores(part)), k, self.tie_rank)
            rank = self.tie_rank.tolist()
            for vals, ids in zip(values.tolist(), idx.tolist()):
                hits = sorted(zip(vals, ids), key=lambda t: (-t[0], rank[t[1]]))
                out.append([(self.doc_ids[j], float(v)) for v, j in hits])
        return out

    def query_one(self, indices: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
        """Doc rows of the top ``k`` for one query, touching only its posting lists (latency path)."""
        keep = values > 0
        idx, val = indices[keep], values[keep]
        start, end = self.postings.indptr[idx], self.postings.indptr[idx + 1]
        lengths = end - start
        total = int(lengths.sum())
        if total == 0:
            return np.empty(0, dtype=np.int64)
        # positions of every posting of the query's latents, without a Python loop
        take = np.arange(total) + np.repeat(start - (np.cumsum(lengths) - lengths), lengths)
        docs = self.postings.indices[take]
        contrib = self.postings.data[take] * np.repeat(val, lengths)
        scores = np.bincount(docs, weights=contrib, minlength=self.postings.shape[1])
        top = min(k, scores.shape[0])
        part = np.argpartition(-scores, top - 1)[:top]
        return part[np.argsort(-scores[part], kind="stable")]


def dense_query_one(docs: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    scores = docs @ query
    top = min(k, scores.shape[0])
    part = np.argpartition(-scores, top - 1)[:top]
    return part[np.argsort(-scores[part], kind="stable")]


def _dense_query_at(docs: np.ndarray, queries: np.ndarray, k: int, i: int) -> np.ndarray:
    return dense_query_one(docs, queries[i], k)


def _one_blas_thread() -> Any:
    """Single-query latency is measured on one BLAS thread: a lone matrix-vector product gains little
    from threads, and on a busy machine waking them dominates (and blurs) the timing."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def latency_ms(fn: Callable[[int], object], n_queries: int, limit: int = 200, repeats: int = 3) -> dict[str, float]:
    """Median and p95 wall time of one single-query search, best of ``repeats`` passes per query."""
    times = []
    with _one_blas_thread():
        for i in range(min(n_queries, limit)):
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                fn(i)
                best = min(best, time.perf_counter() - t)
            times.append(best * 1000)
    arr = np.asarray(times)
    return {"median_ms": float(np.median(arr)), "p95_ms": float(np.percentile(arr, 95)), "queries": len(times)}


def evaluate_sparse_retrieval(encoder: EncoderLike, csr: CSRModel, task: RetrievalTask, ks: Sequence[int] = (1, 10, 100),
                              topk: int | None = None, batch_size: int = 64, use_cache: bool = True,
                              strict: bool = False, latency_queries: int = 200,
                              doc_emb: np.ndarray | None = None, query_emb: np.ndarray | None = None,
                              max_tokens: int | None = None) -> dict[str, Any]:
    """Metrics and single-query latency of CSR codes (k active) vs dense truncation to k dims and full dims.

    ``doc_emb``/``query_emb`` skip encoding when the caller already has the dense embeddings.
    """
    ks = check_ks(ks)
    task = check_qrels(task, strict)
    k_active = topk or csr.settings.topk
    doc_ids, qids = task.doc_ids, list(task.queries)
    t0 = time.perf_counter()
    if doc_emb is None:
        doc_emb, _ = encode_cached(encoder, list(task.doc_texts), is_query=False,
                                   batch_size=batch_size, use_cache=use_cache, show_progress=True,
                                   fingerprint=model_fingerprint(encoder) if use_cache else None,
                                   max_tokens=max_tokens)
    if query_emb is None:
        query_emb = encode_texts(encoder, [task.queries[q] for q in qids], batch_size=batch_size, is_query=True,
                                 max_tokens=max_tokens)
    if doc_emb.shape[1] != csr.settings.embed_dim:
        raise EmbforgeError(f"the CSR model expects {csr.settings.embed_dim}-d embeddings, the encoder gives "
                            f"{doc_emb.shape[1]}-d (was it trained on this model's embeddings?)")
    t1 = time.perf_counter()
    d_codes = encode_dense(csr, doc_emb, k_active)
    q_codes = encode_dense(csr, query_emb, k_active)
    index = InvertedIndex(d_codes, doc_ids)
    t2 = time.perf_counter()
    normalize = bool(getattr(getattr(encoder, "config", None), "normalize", True))
    full = doc_emb.shape[1]
    methods: dict[str, dict[str, Any]] = {}
    ranked = index.search(q_codes, max(ks))
    methods[f"csr k={k_active}"] = {"active_dims": k_active, **retrieval_metrics(dict(zip(qids, ranked)), task.qrels, ks),
                                    "latency": latency_ms(lambda i: index.query_one(q_codes.indices[i],
                                                                                    q_codes.values[i], max(ks)),
                                                          len(qids), latency_queries)}
    for dim in sorted({min(k_active, full), full}):
        dd, qq = truncate(doc_emb, dim, normalize), truncate(query_emb, dim, normalize)
        ranked = exact_search(qq, dd, doc_ids, max(ks))
        dd64 = np.ascontiguousarray(dd)
        name = f"dense {dim}" + (" (truncated)" if dim < full else " (full)")
        methods[name] = {"active_dims": dim, **retrieval_metrics(dict(zip(qids, ranked)), task.qrels, ks),
                         "latency": latency_ms(partial(_dense_query_at, dd64, qq, max(ks)), len(qids), latency_queries)}
    return {"task": "sparse_retrieval", "corpus_size": len(doc_ids), "queries": len(qids), "ks": ks,
            "hidden_size": csr.hidden_size, "methods": methods,
            "nonzeros_per_code": {side: {"mean": float((c.values > 0).sum(1).mean()),
                                         "empty_codes": int(((c.values > 0).sum(1) == 0).sum())}
                                  for side, c in (("documents", d_codes), ("queries", q_codes))},
            "index": {"postings_nnz": int(index.postings.nnz),
                      "mean_posting_length": float(index.postings.nnz / max(csr.hidden_size, 1))},
            "timings": {"embed_s": t1 - t0, "csr_encode_and_index_s": t2 - t1,
                        "search_metrics_latency_s": time.perf_counter() - t2},
            "notes": task.notes}


def format_sparse_table(result: dict[str, Any], metric_keys: Sequence[str] = ("nDCG@10", "MRR@10", "Recall@100")
                        ) -> str:
    """A markdown table: one row per method, quality columns then query latency."""
    keys = [m for m in metric_keys if m in next(iter(result["methods"].values()))]
    head = ["method", "active dims", *keys, "query latency median (ms)", "p95 (ms)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, m in result["methods"].items():
        cells = [name, str(m["active_dims"]), *(f"{m[k]:.4f}" for k in keys),
                 f"{m['latency']['median_ms']:.3f}", f"{m['latency']['p95_ms']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sparse(path: Any, result: dict[str, Any], metric: str = "nDCG@10", title: str = "") -> Any:
    """Quality and latency side by side for each method."""
    from ..csr.plots import pyplot, save_png

    plt = pyplot()
    names = list(result["methods"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(names, [result["methods"][n][metric] for n in names], color="tab:blue")
    a.set_ylabel(metric)
    b.bar(names, [result["methods"][n]["latency"]["median_ms"] for n in names], color="tab:orange")
    b.set_ylabel("median single-query latency (ms)")
    for ax in (a, b):
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title or "sparse (CSR) vs dense retrieval")
    return save_png(fig, path)


def evaluate_sparse(cfg: EvalConfig, encoder: Encoder | None = None,
                    records: Sequence[RetrievalRecord | ScoredPair] | None = None) -> dict[str, Any]:
    """``embforge eval --sparse CSR``: load the encoder (the stacked folder's own when --model is not
    given) and the CSR head, evaluate, print a table, write the JSON report and a PNG."""
    from pathlib import Path

    from ..csr.head import CSR_SUBFOLDER, is_stacked
    from ..model import Encoder
    from .report import write_json
    from .run import check, encoder_overrides, load_data

    ks = check(cfg, has_records=records is not None)
    loaded = load_data(cfg, records)
    task, data = loaded.task, loaded.label
    if task is None:
        raise EmbforgeError("--sparse evaluates retrieval; give a BEIR folder or a query/pos JSONL as --data")
    if not cfg.sparse:
        raise EmbforgeError("evaluate_sparse needs cfg.sparse: a CSR model folder")
    folder = Path(cfg.sparse)
    if not folder.is_dir():
        raise EmbforgeError(f"--sparse {folder}: CSR model folder not found")
    stacked = is_stacked(folder)
    csr = CSRModel.load(folder / CSR_SUBFOLDER if stacked else folder)
    if encoder is None:
        encoder = Encoder.from_pretrained(cfg.model_name_or_path or (str(folder) if stacked else None), **encoder_overrides(cfg))
    t0 = time.perf_counter()
    result = evaluate_sparse_retrieval(encoder, csr, task, ks=ks, topk=cfg.sparse_k, batch_size=cfg.batch_size,
                                       use_cache=not cfg.no_cache, strict=cfg.strict, max_tokens=cfg.max_tokens)
    report = {"model": getattr(encoder, "name_or_path", cfg.model_name_or_path), "csr_model": str(folder), "data": str(data),
              "split": cfg.split, **result, "total_s": time.perf_counter() - t0}
    import sys

    for note in result.get("notes", ()):
        print(f"warning: {note}", file=sys.stderr)
    print(f"{data} [{cfg.split}] - {result['queries']} queries, {result['corpus_size']} docs - sparse codes of "
          f"{result['hidden_size']} latents")
    print(format_sparse_table(result, [f"nDCG@{k}" for k in ks if k >= 10][:1] + [f"Recall@{max(ks)}"]))
    if cfg.report:
        path = write_json(cfg.report, report)
        print(f"report: {path}")
        metric = f"nDCG@{10 if 10 in ks else max(ks)}"
        print(f"plot: {plot_sparse(path.with_suffix('.png'), result, metric, title=f'{Path(str(data)).name} ({cfg.split})')}")
    return report
