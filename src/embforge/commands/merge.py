"""``embforge merge``: binds the command line to :mod:`embforge.merging`."""

from __future__ import annotations

from ..merging import MergeConfig as Config
from ..merging import merge as run

HELP = ("Merge models of one architecture by a weighted average of their weights, e.g. a fine-tuned model "
        "with its base (--base) to keep most of the task gain and the base's general ability.")

__all__ = ["HELP", "Config", "run"]
