"""The typed config of the evaluation engine (``embforge eval``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option


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
    query_instruction_for_retrieval: str | None = option(None, "Instruction prepended to queries (default: the "
                                                               "model's own).", aliases=("query_instruction",))
    no_cache: bool = option(False, "Do not read or write the embedding cache ($EMBFORGE_CACHE).")
    strict: bool = option(False, "Fail when qrels name queries or documents that do not exist.")
    sparse: str | None = option(None, "A CSR model folder (csr train's output) or a stacked encoder+CSR folder: "
                                      "evaluate its sparse codes against dense search at the same active dims, "
                                      "with query latency.", aliases=("csr_model",))
    shard_size: int = option(16384, "Documents per shard of the embedding store: the unit of work split across "
                                    "ranks under torchrun and redone after a crash.")
    store_dir: str | None = option(None, "Where the embedding store lives (default: the embedding cache). On "
                                         "several nodes it must be a folder every node sees.")
    index: str | None = option(None, "FAISS factory string for approximate search (IVF4096,Flat, HNSW32, "
                                     "IVF4096,PQ64); its recall against exact search is reported. Default: exact.")
    nprobe: int | None = option(None, "IVF lists searched per query (--index IVF...); default: FAISS's.")
    rerank: str | None = option(None, "A cross-encoder reranker folder (e.g. from train --task rerank): rerank each "
                                      "query's top --rerank_top_k and report the metrics before and after.",
                                aliases=("reranker",))
    rerank_top_k: int = option(100, "First-stage results per query that --rerank reorders.")
    sparse_k: int | None = option(None, "Active latents per sparse code (default: the CSR model's k).")
    quantize: str | None = option(None, "int8: dynamic int8 quantisation of the Linear layers (CPU; faster, "
                                        "vectors move: cosine to float32 >= 0.88, SciFact nDCG@10 -0.004). "
                                        "Part of the cache key.", choices=("int8",))
    dtype: str | None = option(None, "Run the model in float16 or bfloat16 (float16 on GPU only; bfloat16 also on "
                                     "CPU, fast where it has AMX: SciFact nDCG@10 -0.001). Part of the cache key.",
                               choices=("float32", "float16", "bfloat16"))
