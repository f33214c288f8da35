"""Encoder model: backbone + pooling + optional heads, and its on-disk layout."""

from .encoder import Encoder, EncoderConfig
from .pooling import POOLING_MODES, pool

__all__ = ["Encoder", "EncoderConfig", "POOLING_MODES", "pool"]
