"""``embforge encode``: binds the command line to :mod:`embforge.encoding`."""

from __future__ import annotations

from ..encoding import EncodeConfig as Config
from ..encoding import encode_file as run

HELP = "Embed a text file (one text per line) or a JSONL field into .npy / .npz."

__all__ = ["HELP", "Config", "run"]
