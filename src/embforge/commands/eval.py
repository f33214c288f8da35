"""``embforge eval``: binds the command line to :mod:`embforge.evaluation`."""

from __future__ import annotations

from ..evaluation.config import EvalConfig as Config
from ..evaluation.run import evaluate as run

HELP = "Evaluate a model: nDCG/MRR/Recall/MAP@k on BEIR or JSONL, Spearman/Pearson on STS-B or SICK-R."


__all__ = ["HELP", "Config", "run"]
