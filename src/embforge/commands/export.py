"""``embforge export``: binds the command line to :mod:`embforge.exporting`."""

from __future__ import annotations

from ..exporting import ExportConfig as Config
from ..exporting import export as run

HELP = ("Export a model: --format onnx (encoder + pooling + normalisation in one graph, checked against "
        "embforge's vectors under onnxruntime) or sentence-transformers.")

__all__ = ["HELP", "Config", "run"]
