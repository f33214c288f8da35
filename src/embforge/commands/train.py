"""``embforge train``: binds the command line to the training engine's config.

The config is :class:`embforge.training.config.TrainConfig` (``transformers.TrainingArguments`` plus
the reference systems' fields); the engine is :func:`embforge.training.run.train`.
"""

from __future__ import annotations

from pathlib import Path

from ..training.config import TrainConfig as Config

HELP = ("Fine-tune an embedding model: InfoNCE, CoSENT, cosine, AnglE, Matryoshka, ESE, multi-TopK, distillation; "
        "--recipe flag|angle|sgpt|mrl|topk-lora.")


def run(cfg: Config) -> Path:
    from ..training.run import train

    return train(cfg)


__all__ = ["HELP", "Config", "run"]
