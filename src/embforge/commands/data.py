"""``embforge data``: binds the command line to :mod:`embforge.data.inspect`."""

from __future__ import annotations

from ..data.inspect import DataConfig as Config
from ..data.inspect import inspect as run

HELP = ("Inspect a data file, folder or mixture YAML: format, record count, mixture plan as JSON; "
        "--sample N also prints N records as JSON lines.")

__all__ = ["HELP", "Config", "run"]
