"""``embforge score``: binds the command line to :mod:`embforge.scoring`."""

from __future__ import annotations

from ..scoring import ScoreConfig as Config
from ..scoring import score as run

HELP = "Write teacher scores (pos_scores / neg_scores) into query/pos/neg JSONL with a cross- or bi-encoder."

__all__ = ["HELP", "Config", "run"]
