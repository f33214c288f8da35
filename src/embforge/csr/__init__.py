"""CSR: sparse autoencoders over embeddings (CSR / CSRv2), from npz to sparse codes and retrieval.

Python API (each function takes the same typed config as its ``embforge csr`` subcommand)::

    from embforge import csr
    csr.embed(csr.EmbedConfig(data="examples/data/scifact", output="emb.npz"))          # -> Path
    result = csr.train(csr.TrainConfig(pretrained_emb="emb.npz", topk=32, output_dir="out"))  # -> TrainResult
    codes = csr.encode(csr.EncodeConfig(csr_model="out", input="emb.npz", output="codes.npz"))  # -> SparseCodes

Torch is imported on first use, so ``embforge --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import EmbedConfig, EncodeConfig, TrainConfig

_LAZY = {
    "CSRModel": "embforge.csr.model",
    "CSRSettings": "embforge.csr.model",
    "SparseCodes": "embforge.csr.sparse",
    "encode_dense": "embforge.csr.sparse",
    "TrainResult": "embforge.csr.training",
    "load_train_data": "embforge.csr.data",
    "save_stacked": "embforge.csr.head",
    "load_stacked": "embforge.csr.head",
    "SparseTextEncoder": "embforge.csr.head",
    "to_sparse_encoder": "embforge.csr.head",
    "k_at": "embforge.csr.schedule",
}

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import DataclassInstance

    from ..protocols import EncoderLike
    from .data import load_train_data
    from .head import SparseTextEncoder, load_stacked, save_stacked, to_sparse_encoder
    from .model import CSRModel, CSRSettings
    from .schedule import k_at
    from .sparse import SparseCodes, encode_dense
    from .training import TrainResult

_C = TypeVar("_C", bound="DataclassInstance")


def _config(cls: type[_C], config: _C | str | os.PathLike[str] | Mapping[str, Any] | None,
            kwargs: dict[str, Any]) -> _C:
    """The same config building as the rest of the API: aliases, YAML paths, did-you-mean on typos,
    keyword arguments on top of a given config."""
    from ..config import build_config

    return build_config(cls, config, kwargs)


def embed(config: EmbedConfig | str | dict[str, Any] | None = None, encoder: EncoderLike | None = None,
          **kwargs: Any) -> Path:
    """Precompute embeddings into an npz; returns its path. ``encoder``: an already loaded Encoder
    to use instead of loading ``model``."""
    from .embedding import embed as _embed

    return _embed(_config(EmbedConfig, config, kwargs), encoder=encoder)


def train(config: TrainConfig | str | dict[str, Any] | None = None, show_progress: bool = True,
          **kwargs: Any) -> TrainResult:
    """Train a CSR model; returns a TrainResult (output_dir, model, report)."""
    from .training import train as _train

    return _train(_config(TrainConfig, config, kwargs), show_progress=show_progress)


def encode(config: EncodeConfig | str | dict[str, Any] | None = None, **kwargs: Any) -> SparseCodes:
    """Sparse codes of dense embeddings (or of texts, with a stacked folder); returns SparseCodes."""
    from .encoding import encode as _encode

    return _encode(_config(EncodeConfig, config, kwargs))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embforge.csr' has no attribute {name!r}")


__all__ = ["EmbedConfig", "EncodeConfig", "TrainConfig", "embed", "encode", "train", "CSRModel", "CSRSettings",
           "SparseCodes", "encode_dense", "TrainResult", "load_train_data", "save_stacked", "load_stacked",
           "SparseTextEncoder", "to_sparse_encoder", "k_at"]
