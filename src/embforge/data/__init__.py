"""Files -> records. Readers stream records and never touch a model."""

from .records import RetrievalRecord, ScoredPair

__all__ = ["RetrievalRecord", "ScoredPair"]
