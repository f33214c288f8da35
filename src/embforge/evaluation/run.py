"""The evaluation driver: a model and a BEIR folder, a query/pos JSONL, an STS-B csv or SICK.txt in; the
report (retrieval metrics at each cut-off and Matryoshka dim, or Spearman/Pearson) out."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.records import RetrievalRecord, ScoredPair
from .config import EvalConfig
from .retrieval import RetrievalTask

if TYPE_CHECKING:  # pragma: no cover
    from ..model.cross_encoder import CrossEncoder
    from ..model.encoder import Encoder


def jsonl_task(path: Path) -> RetrievalTask:
    """Query/pos JSONL -> retrieval task: the corpus is every pos (and neg) text, relevance = the pos."""
    from ..data.retrieval_jsonl import read_query_jsonl

    return records_task(read_query_jsonl(path), str(path))


def records_task(records: Sequence[dict[str, Any]], source: str) -> RetrievalTask:
    """Query/pos dicts -> retrieval task, as :func:`jsonl_task` reads them from a file."""
    from .retrieval import RetrievalTask

    texts = list(dict.fromkeys(t for r in records for key in ("pos", "neg") for t in r.get(key) or ()))
    doc_id = {t: f"d{i}" for i, t in enumerate(texts)}
    query_id: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for r in records:
        qid = query_id.setdefault(r["query"], f"q{len(query_id)}")
        qrels.setdefault(qid, {}).update({doc_id[p]: 1 for p in r["pos"]})
    return RetrievalTask(list(doc_id.values()), list(doc_id), queries={q: t for t, q in query_id.items()},
                         qrels=qrels, source=source, kind="jsonl")


def in_memory_data(records: Sequence[Any]) -> tuple[Any, Any, str]:
    """(retrieval task, STS pairs, label) for records given from Python: scored pairs are an STS task,
    query/positive records a retrieval task over all their texts (as a query/pos JSONL would be)."""
    from ..data.records import ScoredPair
    from ..errors import EmbforgeError

    label = f"in-memory data ({len(records)} records)"
    if not records:
        raise EmbforgeError("evaluate: no records to evaluate")
    if all(isinstance(r, ScoredPair) for r in records):
        return None, list(records), label
    if any(isinstance(r, ScoredPair) for r in records):
        raise EmbforgeError("evaluate: the records mix scored pairs and query/positive records; pass one kind")
    return records_task([r.to_json() for r in records], label), None, label


@dataclass(frozen=True)
class EvalData:
    """What an evaluation runs on: a retrieval task or STS pairs (with their format), and a label."""

    label: Path
    task: RetrievalTask | None = None
    pairs: list[ScoredPair] | None = None
    sts_format: str | None = None


def check(cfg: EvalConfig, has_records: bool = False) -> list[int]:
    """Everything that can be wrong with the options, before data or a model is loaded; the cut-offs."""
    from ..errors import EmbforgeError
    from ..model.precision import load_dtype
    from ..paths import check_output_file
    from .metrics import check_ks

    if not cfg.data and not has_records:
        raise EmbforgeError("eval needs --data (a BEIR folder, a query/pos JSONL, an STS-B csv or SICK.txt)")
    if not has_records and not Path(str(cfg.data)).exists():
        raise EmbforgeError(f"{cfg.data}: not found (expected a BEIR folder, a query/pos JSONL, an STS-B csv or "
                            "SICK.txt)")
    ks = check_ks(list(cfg.k))
    if cfg.dims is not None and (not cfg.dims or min(cfg.dims) < 1):
        raise EmbforgeError(f"--dims: every dim must be a positive integer, got {cfg.dims!r}")
    for flag in ("batch_size", "max_tokens", "max_length", "sparse_k", "shard_size", "nprobe", "rerank_top_k"):
        value = getattr(cfg, flag)
        if value is not None and value < 1:
            raise EmbforgeError(f"--{flag} must be at least 1, got {value}")
    if cfg.rerank:
        load_dtype(cfg.rerank_dtype, flag="--rerank_dtype")  # float16 on CPU: refused before any loading
    if cfg.report:
        check_output_file(cfg.report, "report file")  # not after the whole evaluation ran
    return ks


def beir_task(folder: Path, split: str) -> RetrievalTask:
    """A BEIR split whose corpus is read in a stream: the ids are read once, the texts only while encoding."""
    from ..data.beir import qrels_split, read_queries
    from ..data.texts import BeirCorpus

    qrels = qrels_split(folder, split)
    queries = read_queries(folder / "queries.jsonl")
    corpus = BeirCorpus(folder)
    return RetrievalTask(corpus.ids(), corpus, {q: queries[q] for q in qrels if q in queries}, qrels,
                         source=f"{folder} ({split})")


def load_data(cfg: EvalConfig, records: Sequence[RetrievalRecord | ScoredPair] | None = None) -> EvalData:
    """The retrieval task or STS pairs of ``cfg.data`` (or of in-memory ``records``), by detected kind."""
    from ..data.beir import is_beir_folder
    from ..errors import EmbforgeError
    from .sts import detect_sts, load_sts

    data = Path(str(cfg.data or "in-memory"))
    if records is not None:
        task, pairs, label = in_memory_data(records)
        return EvalData(Path(label), task, pairs, None if pairs is None else "records")
    if is_beir_folder(data):
        return EvalData(data, beir_task(data, cfg.split))
    sts = detect_sts(data, cfg.split)
    if sts is not None:
        return EvalData(data, pairs=load_sts(sts[0], sts[1], cfg.split), sts_format=sts[0])
    if data.is_file() and data.suffix.lower() in (".jsonl", ".json"):
        return EvalData(data, jsonl_task(data))
    raise EmbforgeError(f"{data}: unrecognised data (expected a BEIR folder with corpus.jsonl and qrels/, a "
                        "query/pos .jsonl, an STS-B .csv of tab-separated genre, file, year, id, score, "
                        "sentence1, sentence2, or SICK.txt with a header naming sentence_A, sentence_B and "
                        "relatedness_score)")


def encoder_overrides(cfg: EvalConfig) -> dict[str, Any]:
    """EncoderConfig settings that the eval options change for this run."""
    overrides: dict[str, Any] = {"query_instruction": cfg.query_instruction_for_retrieval}
    if cfg.max_length:
        overrides.update(query_max_len=cfg.max_length, passage_max_len=cfg.max_length)
    return overrides


def load_reranker(cfg: EvalConfig, loaded: EvalData) -> CrossEncoder | None:
    """The ``--rerank`` cross-encoder, for retrieval data only (STS pairs have no candidates to rerank)."""
    if not cfg.rerank:
        return None
    from ..errors import EmbforgeError
    from ..model.cross_encoder import CrossEncoder
    from ..model.precision import load_dtype

    if loaded.task is None:
        raise EmbforgeError(f"--rerank reranks retrieval results (a BEIR folder or a query/pos JSONL); {loaded.label} "
                            "is STS data (scored pairs), which has no candidates to rerank")
    # its own pair length and dtype: --max_length and --dtype are the embedder's
    return CrossEncoder.from_pretrained(cfg.rerank, dtype=load_dtype(cfg.rerank_dtype, flag="--rerank_dtype"))


def evaluate(cfg: EvalConfig, encoder: Encoder | None = None,
             records: Sequence[RetrievalRecord | ScoredPair] | None = None) -> dict[str, Any]:
    """Evaluate and return the report (``report["metrics"]`` holds the full-dim metrics).

    The Python API may pass an already loaded ``encoder`` (then ``cfg.model_name_or_path``, ``cfg.max_length`` and the
    instruction are the caller's to apply) and in-memory ``records`` instead of ``cfg.data``.
    """
    from ..store import ranks
    from .report import format_table, plot_dims, write_json
    from .retrieval import evaluate_retrieval
    from .sts import evaluate_sts

    if cfg.sparse:  # CSR codes against dense search at equal active dims
        if cfg.rerank:
            from ..errors import EmbforgeError

            raise EmbforgeError("--rerank reranks dense retrieval results; it does not combine with --sparse")
        from .sparse import evaluate_sparse

        return evaluate_sparse(cfg, encoder=encoder, records=records)
    ks = check(cfg, has_records=records is not None)
    ranks.join()
    dims = cfg.dims
    t_start = time.perf_counter()
    loaded = load_data(cfg, records)
    data, task, pairs = loaded.label, loaded.task, loaded.pairs
    reranker = load_reranker(cfg, loaded)
    t_data = time.perf_counter()
    if encoder is None:
        from ..model import Encoder
        from ..model.precision import apply_precision

        encoder = apply_precision(Encoder.from_pretrained(cfg.model_name_or_path, **encoder_overrides(cfg)),
                                  quantize=cfg.quantize, dtype=cfg.dtype)
    t_model = time.perf_counter()
    if task is not None:
        result = evaluate_retrieval(encoder, task, ks=ks, dims=dims, batch_size=cfg.batch_size,
                                    use_cache=not cfg.no_cache, strict=cfg.strict, shard_size=cfg.shard_size,
                                    store_dir=cfg.store_dir, index=cfg.index, nprobe=cfg.nprobe,
                                    reranker=reranker, rerank_top_k=cfg.rerank_top_k, max_tokens=cfg.max_tokens)
    else:
        assert pairs is not None
        result = evaluate_sts(encoder, pairs, dims=dims, batch_size=cfg.batch_size, use_cache=not cfg.no_cache,
                              max_tokens=cfg.max_tokens)
        result["format"] = loaded.sts_format
    result["timings"] = {"load_data_s": t_data - t_start, "load_model_s": t_model - t_data, **result["timings"],
                         "total_s": time.perf_counter() - t_start}
    report = {"model": getattr(encoder, "name_or_path", cfg.model_name_or_path), "data": str(data), "split": cfg.split,
              "metrics": result["dims"][max(result["dims"], key=int)], **result}
    if not ranks.is_main():  # under torchrun every rank has the same report; rank 0 speaks and writes
        return report
    for note in result.get("notes", ()):
        print(f"warning: {note}", file=sys.stderr)
    what = f"{result['queries']} queries, {result['corpus_size']} docs" if task is not None else \
        f"{result['pairs']} pairs"
    print(f"{data} [{cfg.split}] - {what} - {result['timings']['total_s']:.1f} s")
    print(format_table(result))
    if cfg.report:
        path = write_json(cfg.report, report)
        print(f"report: {path}")
        png = plot_dims(path.with_suffix(".png"), result, title=f"{data.name} ({cfg.split})")
        if png:
            print(f"plot: {png}")
    return report
