"""``embforge mine``: binds the command line to :mod:`embforge.mining`."""

from __future__ import annotations

from ..mining.config import MineConfig as Config
from ..mining.run import mine as run

HELP = "Mine hard negatives with faiss: sample from a rank band of each query's nearest pool texts."

__all__ = ["HELP", "Config", "run"]
