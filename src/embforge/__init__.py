"""embforge: train, fine-tune, compress, evaluate and ship embedding models.

Every CLI command has a Python twin taking the same typed config (see :mod:`embforge.api`)::

    import embforge
    final = embforge.train(train_data=[{"query": "q", "pos": ["p"]}], output_dir="out", max_steps=10)
    report = embforge.evaluate(model=final, data="scifact", split="test")

Heavy names (torch-backed) are imported on first use, so ``import embforge`` and the CLI's
``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import EmbforgeError

__version__ = "0.1.0"

# name -> (module, attribute in it)
_LAZY: dict[str, tuple[str, str]] = {
    "Encoder": ("embforge.api", "Encoder"),
    "EncoderConfig": ("embforge.model.encoder", "EncoderConfig"),
    "train": ("embforge.api", "train"),
    "evaluate": ("embforge.api", "evaluate"),
    "mine": ("embforge.api", "mine"),
    "score": ("embforge.api", "score"),
    "encode": ("embforge.api", "encode"),
    "inspect_data": ("embforge.api", "inspect_data"),
    "load_data": ("embforge.api", "load_data"),
    "command": ("embforge.api", "command"),
    "merge": ("embforge.api", "merge"),
    "export": ("embforge.api", "export"),
    "run": ("embforge.api", "run"),
    "TrainConfig": ("embforge.training.config", "TrainConfig"),
    "EvalConfig": ("embforge.evaluation.config", "EvalConfig"),
    "MineConfig": ("embforge.mining.config", "MineConfig"),
    "ScoreConfig": ("embforge.scoring", "ScoreConfig"),
    "EncodeConfig": ("embforge.encoding", "EncodeConfig"),
    "DataConfig": ("embforge.data.inspect", "DataConfig"),
    "MergeConfig": ("embforge.merging", "MergeConfig"),
    "ExportConfig": ("embforge.exporting", "ExportConfig"),
    "RunConfig": ("embforge.pipeline.config", "RunConfig"),
}

# Subpackages reachable as attributes without an import of their own.
_SUBPACKAGES: tuple[str, ...] = ("data", "csr")

if TYPE_CHECKING:  # pragma: no cover
    from . import csr, data
    from .api import (
        Encoder,
        command,
        encode,
        evaluate,
        export,
        inspect_data,
        load_data,
        merge,
        mine,
        run,
        score,
        train,
    )
    from .data.inspect import DataConfig
    from .encoding import EncodeConfig
    from .evaluation.config import EvalConfig
    from .exporting import ExportConfig
    from .merging import MergeConfig
    from .mining.config import MineConfig
    from .model.encoder import EncoderConfig
    from .pipeline.config import RunConfig
    from .scoring import ScoreConfig
    from .training.config import TrainConfig



def _api(name: str) -> Any:
    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(module), attribute)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return _api(name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'embforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


__all__ = [
    "EmbforgeError", "__version__", "Encoder", "EncoderConfig",
    "train", "evaluate", "mine", "score", "encode", "inspect_data", "load_data", "command", "merge", "export", "run",
    "TrainConfig", "EvalConfig", "MineConfig", "ScoreConfig", "EncodeConfig", "DataConfig", "MergeConfig", "ExportConfig",
    "RunConfig", "csr", "data",
]
