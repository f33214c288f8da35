"""embforge: train, fine-tune, compress, evaluate and ship embedding models.

Heavy names (torch-backed) are imported on first use, so the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import EmbforgeError

__version__ = "0.1.0"

_LAZY = {
    "Encoder": "embforge.model.encoder",
    "EncoderConfig": "embforge.model.encoder",
}

if TYPE_CHECKING:  # pragma: no cover
    from .model.encoder import Encoder, EncoderConfig


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embforge' has no attribute {name!r}")


__all__ = ["Encoder", "EncoderConfig", "EmbforgeError", "__version__"]
