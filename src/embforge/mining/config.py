"""The typed config of the mining engine (``embforge mine``)."""

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
class MineConfig:
    model_name_or_path: str | None = option(None, "Model folder; default: the embedded all-MiniLM-L6-v2.",
                                            aliases=("model", "encoder"))
    input_file: str | None = option(None, "FlagEmbedding JSONL {query, pos, neg} or a BEIR folder (queries + "
                                          "qrels of --split; the corpus is the pool).", aliases=("input", "data"))
    output_file: str | None = option(None, "Where to write the JSONL with mined negatives (atomically).",
                                     aliases=("output",))
    range_for_sampling: str = option("2-200", "Rank band LO-HI of the raw ranking (0-based slice) to sample from.")
    negative_number: int = option(15, "Negatives per query.")
    candidate_pool: str | None = option(None, "Pool to search: JSONL {\"text\": ...} lines or plain text lines; "
                                              "default: every pos and neg text of the input.")
    use_gpu_for_searching: bool = option(False, "Search on the GPU when present (torch for exact search, "
                                                "faiss-gpu for --index).")
    query_instruction_for_retrieval: str | None = option(None, "Instruction prepended to queries (default: the "
                                                               "model's own).", aliases=("query_instruction",))
    false_negative_margin: float | None = option(None, "Drop candidates scoring within this margin of the "
                                                       "query's weakest positive (likely false negatives).")
    reranker: str | None = option(None, "A cross-encoder folder (e.g. from train --task rerank) that judges the "
                                        "false-negative test instead of the embedder: a band candidate is dropped "
                                        "when the reranker scores it within --false_negative_margin (default 0) "
                                        "of the query's weakest positive.", aliases=("reranker_model",))
    reranker_dtype: str = cross_dtype_option()
    seed: int = option(0, "Random seed for sampling.")
    sampling: str = option("random", "random: sample from the band (reference); top: keep its best-ranked.",
                           choices=("random", "top"))
    split: str = option("train", "qrels split when --input_file is a BEIR folder.")
    batch_size: int = option(256, "Texts per forward pass.")
    max_length: int | None = option(None, "Override the model's max tokens per text.", aliases=("max_len",))
    max_tokens: int | None = max_tokens_option()
    no_cache: bool = option(False, "Do not read or write the embedding cache ($EMBFORGE_CACHE).")
    shard_size: int = shard_size_option()
    store_dir: str | None = store_dir_option()
    index: str | None = index_option()
    nprobe: int | None = nprobe_option()
    quantize: str | None = quantize_option()
    dtype: str | None = dtype_option()
