"""The store's options, declared once: encode, mine and eval take the same flags with the same help."""

from __future__ import annotations

from typing import Any

from ..config import option


def shard_size_option() -> Any:
    return option(16384, "Texts per shard of the embedding store: the unit of work shared out among ranks under "
                         "torchrun and redone after a crash.")


def max_tokens_option() -> Any:
    return option(None, "Padded tokens per forward pass: sorts the texts by length and fills each batch up to this "
                        "budget (wide batches of short texts, narrow ones of long texts); the same vectors, and the "
                        "same store. Default: off (--batch_size texts per pass).")


def store_dir_option() -> Any:
    return option(None, "Where the embedding store lives (the cache a rerun or a killed run resumes from); default: "
                        "$EMBFORGE_CACHE or ~/.cache/embforge/embeddings. Under torchrun on several nodes it must "
                        "be a folder every node sees.")


def index_option() -> Any:
    return option(None, "FAISS factory string for approximate search (IVF4096,Flat, HNSW32, IVF4096,PQ64); its "
                        "recall against exact search is reported. Default: exact.")


def nprobe_option() -> Any:
    return option(None, "IVF lists searched per query (--index IVF...); default: FAISS's.")
