"""An on-disk cache of embedding matrices, so re-running eval or mining with other settings is cheap.

Encoding a corpus dominates the cost of both mining and evaluation, while the settings a user
iterates on (the sampling range, k, Matryoshka dims) do not change the vectors. A matrix is stored
under a key made of the model's identity and the exact list of texts, so any change to either
(re-trained weights, another max length or instruction, one edited document) misses the cache
instead of returning stale vectors. The model's identity is a hash of the weights in memory, not of
the folder they came from, so an encoder changed in place (training, merging, a user's edit) never
meets the vectors of its old weights. Each file carries a checksum of its bytes, so a file damaged on
disk is recomputed instead of read as vectors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .paths import atomic_write_bytes
from .protocols import EncoderLike

MAGIC = b"EMBFORGE-CACHE-1\n"  # then the xxh3-128 digest of the rest (16 bytes), then an .npy file
logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$EMBFORGE_CACHE`` if set, else ``~/.cache/embforge/embeddings``."""
    env = os.environ.get("EMBFORGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "embforge" / "embeddings"


def parameters_digest(module: Any) -> str:
    """Hash of the weights in memory (every tensor of the state dict, bytes as stored).

    xxh3 reads about 10 GB/s, so the 22M parameters of the default model cost a few milliseconds,
    far less than encoding one batch; a 7B model costs a few seconds, still small beside its corpus.
    """
    import torch
    import xxhash

    h = xxhash.xxh3_128()
    for name, tensor in module.state_dict().items():
        t = tensor.detach()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def model_fingerprint(encoder: EncoderLike) -> str:
    """Identity of what produces the vectors: the weights in memory and the encoder config."""
    weights = {"parameters": parameters_digest(encoder)}
    config = _changed_fields(encoder.config) if dataclasses.is_dataclass(encoder.config) else repr(encoder.config)
    blob = json.dumps({"weights": weights, "config": config, "class": type(encoder).__name__}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _changed_fields(config: Any) -> dict[str, Any]:
    """The config fields that differ from their defaults: a new field added with a default that keeps
    the old behaviour then leaves every existing cache key valid."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if value != default:
            out[f.name] = value
    return out


def texts_digest(texts: Sequence[str]) -> str:
    """Order-sensitive hash of a list of texts (length-prefixed, so boundaries are unambiguous)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def cache_key(fingerprint: str, texts: Sequence[str], is_query: bool) -> str:
    side = "q" if is_query else "p"
    return hashlib.sha256(f"{fingerprint}:{side}:{texts_digest(texts)}".encode()).hexdigest()[:40]


def _digest(payload: bytes | memoryview) -> bytes:
    import xxhash

    return xxhash.xxh3_128(payload).digest()


def load(key: str, n_rows: int) -> np.ndarray | None:
    """The cached matrix for ``key``, or None when absent, damaged or of another shape (then it is
    recomputed, and a damaged file is reported)."""
    path = cache_dir() / f"{key}.emb"
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(MAGIC) + 16
    payload = memoryview(data)[head:]
    if not data.startswith(MAGIC) or data[len(MAGIC):head] != _digest(payload):
        logger.warning("%s: the cached embeddings fail their checksum (damaged on disk); recomputing", path)
        return None
    try:
        arr = np.load(io.BytesIO(payload), allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr if arr.ndim == 2 and arr.shape[0] == n_rows else None


def save(key: str, matrix: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(matrix, dtype=np.float32))
    payload = buf.getvalue()
    try:
        atomic_write_bytes(cache_dir() / f"{key}.emb", MAGIC + _digest(payload) + payload)
    except OSError:  # a read-only or full cache only costs speed, never the result
        pass


def encode_cached(encoder: EncoderLike, texts: Sequence[str], *, is_query: bool = False, batch_size: int = 64,
                  use_cache: bool = True, show_progress: bool | None = None,
                  fingerprint: str | None = None) -> tuple[np.ndarray, bool]:
    """Full-dimension embeddings of ``texts`` and whether they came from the cache.

    Matryoshka truncation is applied by the caller (see :func:`truncate`), so one cached matrix
    serves every ``--dims`` value.
    """
    texts = list(texts)
    key = None
    if use_cache:
        key = cache_key(fingerprint or model_fingerprint(encoder), texts, is_query)
        hit = load(key, len(texts))
        if hit is not None:
            return hit, True
    emb = encoder.encode(texts, batch_size=batch_size, is_query=is_query, show_progress=show_progress)
    if key is not None:
        save(key, emb)
    return emb, False


def truncate(emb: np.ndarray, dim: int | None, normalize: bool) -> np.ndarray:
    """The first ``dim`` coordinates, re-normalised when the encoder normalises (as Encoder.encode does)."""
    if dim is None or dim >= emb.shape[1]:
        return emb
    out = np.ascontiguousarray(emb[:, :dim])
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, 1e-12)
    return out.astype(np.float32, copy=False)
