"""Figures of the CSR code, drawn with the package's shared matplotlib helpers."""

from __future__ import annotations

from ..figures import pyplot, save_png

__all__ = ["pyplot", "save_png"]
