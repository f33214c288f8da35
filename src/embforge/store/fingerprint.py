"""What names a vector: the identity of the model that produced it and the digest of the texts it came from.

The model's identity is a hash of the weights in memory, not of the folder they came from, so an
encoder changed in place (training, merging, a user's edit) never meets the vectors of its old weights;
its settings that shape the vectors (max length, instruction, pooling) are part of it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..protocols import EncoderLike


def store_root() -> Path:
    """``$EMBFORGE_CACHE`` if set, else ``~/.cache/embforge/embeddings``: where stores live by default."""
    env = os.environ.get("EMBFORGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "embforge" / "embeddings"


def parameters_digest(module: Any) -> str:
    """Hash of the weights in memory (every entry of the state dict, bytes as stored).

    xxh3 reads about 10 GB/s, so the 22M parameters of the default model cost a few milliseconds,
    far less than encoding one batch; a 7B model costs a few seconds, still small beside its corpus.
    A quantised Linear keeps (int8 weight, bias) and its dtype as non-tensor entries: they are hashed
    too, the int8 values with their scales.
    """
    import xxhash

    h = xxhash.xxh3_128()
    for name, value in module.state_dict().items():
        _hash_entry(h, name, value)
    return h.hexdigest()


def _hash_entry(h: Any, name: str, value: Any) -> None:
    import torch

    if isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            _hash_entry(h, f"{name}.{i}", item)
        return
    if not isinstance(value, torch.Tensor):
        h.update(f"{name}={value!r}".encode())
        return
    t = value.detach()
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
    if t.is_quantized:
        if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            h.update(f"{t.q_scale()!r}:{t.q_zero_point()}".encode())
        else:
            _hash_entry(h, f"{name}.scales", t.q_per_channel_scales())
            _hash_entry(h, f"{name}.zero_points", t.q_per_channel_zero_points())
        t = t.int_repr()
    if t.numel():
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def model_fingerprint(encoder: EncoderLike) -> str:
    """Identity of what produces the vectors: the weights in memory (their dtype included), the encoder
    config, and, when there are any, the quantised modules that compute with them."""
    weights = {"parameters": parameters_digest(encoder)}
    config = _changed_fields(encoder.config) if dataclasses.is_dataclass(encoder.config) else repr(encoder.config)
    key: dict[str, Any] = {"weights": weights, "config": config, "class": type(encoder).__name__}
    quantized = _quantized_modules(encoder)
    if quantized:  # absent for float models, so their keys stay what they were
        key["quantized"] = quantized
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _quantized_modules(encoder: EncoderLike) -> list[str]:
    """Classes of the quantised modules (torch.ao's dynamic Linear, ...): their kernels shape the vectors."""
    modules = getattr(encoder, "modules", None)
    if modules is None:
        return []
    return sorted({f"{type(m).__module__}.{type(m).__name__}" for m in modules()
                   if ".quantized" in type(m).__module__})


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


class TextsDigest:
    """The running form of :func:`texts_digest`, for texts that arrive one at a time (a stream)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, text: str) -> None:
        b = text.encode("utf-8")
        self._h.update(len(b).to_bytes(8, "little"))
        self._h.update(b)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def texts_digest(texts: Iterable[str]) -> str:
    """Order-sensitive hash of a list of texts (length-prefixed, so boundaries are unambiguous)."""
    h = TextsDigest()
    for t in texts:
        h.update(t)
    return h.hexdigest()


def text_hashes(texts: Iterable[str]) -> np.ndarray:
    """xxh3-64 of each text's UTF-8 bytes as uint64: what a store keeps per row, so mining can tell a
    candidate equal to a positive (hash the positive with this) without the candidate's text."""
    import xxhash

    return np.fromiter((xxhash.xxh3_64_intdigest(t.encode("utf-8")) for t in texts), dtype=np.uint64)
