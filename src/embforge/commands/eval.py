"""``embforge eval``: retrieval (BEIR folder or query/pos JSONL) or STS (STS-B csv, SICK.txt) metrics."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import option

HELP = "Evaluate a model: nDCG/MRR/Recall/MAP@k on BEIR or JSONL, Spearman/Pearson on STS-B or SICK-R."


@dataclass
class Config:
    model: str | None = option(None, "Model folder; default: the embedded all-MiniLM-L6-v2.",
                               aliases=("model_name_or_path", "encoder"))
    data: str | None = option(None, "A BEIR folder, a query/pos JSONL file, an STS-B csv (or its folder) or "
                                    "SICK.txt; the kind is detected.", aliases=("eval_data", "input_file"))
    split: str = option("test", "qrels split of a BEIR folder; STS-B file in a folder; SICK SemEval_set.")
    k: str = option("1,10,100", "Cut-offs for the retrieval metrics, comma-separated.", aliases=("ks",))
    dims: str | None = option(None, "Matryoshka dims to evaluate, comma-separated, e.g. 32,64,128,256,384.",
                              aliases=("mrl_dims",))
    report: str | None = option(None, "Write a JSON report here (and the quality-vs-dims PNG beside it).")
    batch_size: int = option(256, "Texts per forward pass.")
    max_length: int | None = option(None, "Override the model's max tokens per text.", aliases=("max_len",))
    query_instruction_for_retrieval: str | None = option(None, "Instruction prepended to queries (default: the "
                                                               "model's own).", aliases=("query_instruction",))
    no_cache: bool = option(False, "Do not read or write the embedding cache ($EMBFORGE_CACHE).")
    strict: bool = option(False, "Fail when qrels name queries or documents that do not exist.")
    sparse: str | None = option(None, "A CSR model folder (csr train's output) or a stacked encoder+CSR folder: "
                                      "evaluate its sparse codes against dense search at the same active dims, "
                                      "with query latency.", aliases=("csr_model",))
    sparse_k: int | None = option(None, "Active latents per sparse code (default: the CSR model's k).")


def parse_ints(value: Any, name: str) -> list[int] | None:
    """``"1,10,100"``, ``"1 10 100"`` or a list -> [1, 10, 100]; None/"" -> None."""
    from ..errors import EmbforgeError

    if value is None or value == "":
        return None
    items = value if isinstance(value, (list, tuple)) else re.split(r"[,\s\[\]]+", str(value).strip())
    out = []
    for item in items:
        if item == "":
            continue
        try:
            out.append(int(item))
        except (TypeError, ValueError) as exc:
            raise EmbforgeError(f"{name}: expected comma-separated integers, got {value!r}") from exc
    return out


def jsonl_task(path: Path):
    """Query/pos JSONL -> retrieval task: the corpus is every pos (and neg) text, relevance = the pos."""
    from ..retrieval_jsonl import read_query_jsonl

    return records_task(read_query_jsonl(path), str(path))


def records_task(records: Sequence[dict[str, Any]], source: str):
    """Query/pos dicts -> retrieval task, as :func:`jsonl_task` reads them from a file."""
    from ..evaluation.retrieval import RetrievalTask

    texts = list(dict.fromkeys(t for r in records for key in ("pos", "neg") for t in r.get(key) or ()))
    doc_id = {t: f"d{i}" for i, t in enumerate(texts)}
    query_id: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for r in records:
        qid = query_id.setdefault(r["query"], f"q{len(query_id)}")
        qrels.setdefault(qid, {}).update({doc_id[p]: 1 for p in r["pos"]})
    return RetrievalTask(corpus={d: t for t, d in doc_id.items()}, queries={q: t for t, q in query_id.items()},
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


def run(cfg: Config, encoder: Any = None, records: Sequence[Any] | None = None) -> dict[str, Any]:
    """Evaluate and return the report (``report["metrics"]`` holds the full-dim metrics).

    The Python API may pass an already loaded ``encoder`` (then ``cfg.model``, ``cfg.max_length`` and the
    instruction are the caller's to apply) and in-memory ``records`` instead of ``cfg.data``.
    """
    from ..data.beir import is_beir_folder, load_beir
    from ..errors import EmbforgeError
    from ..evaluation.metrics import check_ks
    from ..evaluation.report import format_table, plot_dims, write_json
    from ..evaluation.retrieval import RetrievalTask, evaluate_retrieval
    from ..evaluation.sts import detect_sts, evaluate_sts, load_sts
    from ..model import Encoder
    from ..paths import check_output_file

    if not cfg.data and records is None:
        raise EmbforgeError("eval needs --data (a BEIR folder, a query/pos JSONL, an STS-B csv or SICK.txt)")
    data = Path(cfg.data or "in-memory")
    if records is None and not data.exists():
        raise EmbforgeError(f"{data}: not found (expected a BEIR folder, a query/pos JSONL, an STS-B csv or SICK.txt)")
    ks = check_ks(parse_ints(cfg.k, "k") or [])
    dims = parse_ints(cfg.dims, "dims")
    if dims is not None and (not dims or min(dims) < 1):
        raise EmbforgeError(f"--dims: every dim must be a positive integer, got {cfg.dims!r}")
    for flag in ("batch_size", "max_length", "sparse_k"):
        value = getattr(cfg, flag)
        if value is not None and value < 1:
            raise EmbforgeError(f"--{flag} must be at least 1, got {value}")
    if cfg.report:
        check_output_file(cfg.report, "report file")  # not after the whole evaluation ran

    t_start = time.perf_counter()
    sts = None if records is not None else detect_sts(data, cfg.split)
    task = pairs = None
    if records is not None:
        task, pairs, label = in_memory_data(records)
        sts = None if pairs is None else ("records", data)
        data = Path(label)
    elif is_beir_folder(data):
        split = load_beir(data, cfg.split)
        task = RetrievalTask(split.corpus, split.queries, split.qrels, source=f"{data} ({cfg.split})")
    elif sts is not None:
        pairs = load_sts(sts[0], sts[1], cfg.split)
    elif data.is_file() and data.suffix.lower() in (".jsonl", ".json"):
        task = jsonl_task(data)
    else:
        raise EmbforgeError(f"{data}: unrecognised data (expected a BEIR folder with corpus.jsonl and qrels/, a "
                            "query/pos .jsonl, an STS-B .csv of tab-separated genre, file, year, id, score, "
                            "sentence1, sentence2, or SICK.txt with a header naming sentence_A, sentence_B and "
                            "relatedness_score)")
    t_data = time.perf_counter()

    overrides: dict[str, Any] = {"query_instruction": cfg.query_instruction_for_retrieval}
    if cfg.max_length:
        overrides.update(query_max_len=cfg.max_length, passage_max_len=cfg.max_length)
    if cfg.sparse:  # CSR codes vs dense search at equal active dims; see evaluate/sparse.py
        from ..evaluation.sparse import run_sparse_eval

        return run_sparse_eval(cfg, task, data, encoder, overrides, ks)
    if encoder is None:
        encoder = Encoder.from_pretrained(cfg.model, **overrides)
    t_model = time.perf_counter()
    if task is not None:
        result = evaluate_retrieval(encoder, task, ks=ks, dims=dims, batch_size=cfg.batch_size,
                                    use_cache=not cfg.no_cache, strict=cfg.strict)
    else:
        result = evaluate_sts(encoder, pairs, dims=dims, batch_size=cfg.batch_size,  # type: ignore[arg-type]
                              use_cache=not cfg.no_cache)
        result["format"] = sts[0]  # type: ignore[index]
    result["timings"] = {"load_data_s": t_data - t_start, "load_model_s": t_model - t_data, **result["timings"],
                         "total_s": time.perf_counter() - t_start}
    report = {"model": getattr(encoder, "name_or_path", cfg.model), "data": str(data), "split": cfg.split,
              "metrics": result["dims"][max(result["dims"], key=int)], **result}
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
