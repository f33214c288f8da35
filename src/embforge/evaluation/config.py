"""The typed config of the evaluation engine (``embforge eval``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from ..model.precision import cross_dtype_option, dtype_option, quantize_option
from ..store.options import (
    index_option,
    max_tokens_option,
    nprobe_option,
    shard_size_option,
    store_dir_option,
)


@dataclass
class EvalConfig:
    model_name_or_path: str | None = option(None, "Model folder; default: the embedded all-MiniLM-L6-v2.",
                                            aliases=("model", "encoder"))
    data: str | None = option(None, "A BEIR folder, a query/pos JSONL file, an STS-B csv (or its folder) or "
                                    "SICK.txt; the kind is detected.", aliases=("eval_data", "input_file"))
    split: str = option("test", "qrels split of a BEIR folder; STS-B file in a folder; SICK SemEval_set.")
    k: list[int] = option(help="Cut-offs for the retrieval metrics, e.g. 1,10,100.", aliases=("ks",),
                          default_factory=lambda: [1, 10, 100])
    dims: list[int] | None = option(None, "Matryoshka dims to evaluate, e.g. 32,64,128,256,384.",
                                    aliases=("mrl_dims",))
    report: str | None = option(None, "Write a JSON report here (and the quality-vs-dims PNG beside it).")
    batch_size: int = option(256, "Texts per forward pass.")
    max_length: int | None = option(None, "Override the model's max tokens per text.", aliases=("max_len",))
    max_tokens: int | None = max_tokens_option()
    query_instruction_for_retrieval: str | None = option(None, "Instruction prepended to queries (default: the "
                                                               "model's own).", aliases=("query_instruction",))
    no_cache: bool = option(False, "Do not read or write the embedding cache ($EMBFORGE_CACHE).")
    strict: bool = option(False, "Fail when qrels name queries or documents that do not exist.")
    sparse: str | None = option(None, "A CSR model folder (csr train's output) or a stacked encoder+CSR folder: "
                                      "evaluate its sparse codes against dense search at the same active dims, "
                                      "with query latency.", aliases=("csr_model",))
    shard_size: int = shard_size_option()
    store_dir: str | None = store_dir_option()
    index: str | None = index_option()
    nprobe: int | None = nprobe_option()
    rerank: str | None = option(None, "A cross-encoder reranker folder (e.g. from train --task rerank): rerank each "
                                      "query's top --rerank_top_k and report the metrics before and after.",
                                aliases=("reranker",))
    rerank_top_k: int = option(100, "First-stage results per query that --rerank reorders.")
    rerank_dtype: str = cross_dtype_option()
    sparse_k: int | None = option(None, "Active latents per sparse code (default: the CSR model's k).")
    quantize: str | None = quantize_option()
    dtype: str | None = dtype_option()
