"""``embforge run``: binds the command line to :mod:`embforge.pipeline`."""

from __future__ import annotations

from ..pipeline import RunConfig as Config
from ..pipeline import run

HELP = ("Run a pipeline YAML: mine hard negatives, train, evaluate before and after, merge with the base, "
        "evaluate again; train a reranker, score, distil, evaluate with and without the reranker; report. "
        "Resumable: finished steps whose inputs are unchanged are skipped.")

__all__ = ["HELP", "Config", "run"]
