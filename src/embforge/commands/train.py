"""``embforge train``: binds the command line to the training engine.

The config is :class:`embforge.training.config.TrainConfig` (``transformers.TrainingArguments`` plus
the reference systems' fields); the engine is :func:`embforge.training.run.train`.
"""

from __future__ import annotations

from ..training.config import TrainConfig as Config
from ..training.run import train as run

HELP = ("Fine-tune an embedding model: InfoNCE, CoSENT, cosine, AnglE, Matryoshka, ESE, multi-TopK, distillation; "
        "--recipe flag|angle|sgpt|mrl|topk-lora.")

__all__ = ["HELP", "Config", "run"]
