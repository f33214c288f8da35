"""The embedding cache, as the engines use it: a whole matrix for a list of texts, encoded only if missing.

Encoding a corpus dominates the cost of both mining and evaluation, while the settings a user
iterates on (the sampling range, k, Matryoshka dims) do not change the vectors. The vectors live in
the embedding store (:mod:`embforge.store`): shards named by the model's identity (a hash of the
weights in memory and the settings that shape the vectors) and the digest of their texts, each with a
checksum. Any change to the model (re-trained weights, another max length or instruction) misses,
one edited document re-encodes its shard only, and a shard damaged on disk is re-encoded instead of
read as vectors.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .protocols import EncoderLike
from .store.encode import encode_store, private_root
from .store.fingerprint import model_fingerprint, parameters_digest, store_root, texts_digest
from .store.search import truncate  # Matryoshka truncation, one implementation for cache users and search

__all__ = ["cache_dir", "encode_cached", "model_fingerprint", "parameters_digest",
           "texts_digest", "truncate"]
logger = logging.getLogger(__name__)
cache_dir = store_root  # the older name


def encode_cached(encoder: EncoderLike, texts: Sequence[str], *, is_query: bool = False, batch_size: int = 64,
                  use_cache: bool = True, show_progress: bool | None = None,
                  fingerprint: str | None = None, max_tokens: int | None = None) -> tuple[np.ndarray, bool]:
    """Full-dimension float32 embeddings of ``texts`` and whether they all came from the cache.

    Matryoshka truncation is applied by the caller (see :func:`truncate`), so one cached matrix
    serves every ``--dims`` value. Without the cache (``use_cache=False``, or a cache folder that
    cannot be written) the same store code runs in a private folder removed afterwards.
    """
    texts = texts if isinstance(texts, (list, tuple)) else list(texts)
    if use_cache and not _writable(store_root()):
        logger.warning("%s: the embedding cache is not writable; encoding without it", store_root())
        use_cache = False
    with contextlib.ExitStack() as stack:
        root = None if use_cache else stack.enter_context(private_root())
        # a private folder needs no model identity: nothing else reads it, and hashing 7B weights takes seconds
        fp = fingerprint if use_cache else (fingerprint or "private")
        store, stats = encode_store(encoder, texts, is_query=is_query, batch_size=batch_size, root=root,
                                    fingerprint=fp, show_progress=show_progress, max_tokens=max_tokens)
        return store.to_array(), use_cache and stats.encoded == 0


def _writable(root: Path) -> bool:
    """Whether ``root`` (or its nearest existing ancestor, where it would be made) takes new files."""
    while not root.exists() and root != root.parent:
        root = root.parent
    return root.is_dir() and os.access(root, os.W_OK | os.X_OK)
