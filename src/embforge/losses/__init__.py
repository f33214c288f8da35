"""Losses: pure functions over embeddings, one per module. None of them touches files or models."""

from .infonce import info_nce

__all__ = ["info_nce"]
