"""The record kinds every reader produces and every consumer (collate, mine, eval) accepts.

``source`` is "file:line" so that an error found later (at collate or training time) can still
point at the line the record came from.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class RetrievalRecord:
    """A query with positives and (optionally) negatives: FlagEmbedding JSONL, AnglE B/C, BEIR, NLI."""

    query: str
    pos: list[str]
    neg: list[str] = dataclasses.field(default_factory=list)
    prompt: str | None = None
    pos_scores: list[float] | None = None
    neg_scores: list[float] | None = None
    type: str | None = None
    source: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The FlagEmbedding JSONL layout, keeping any extra fields the input had."""
        out: dict[str, Any] = {"query": self.query, "pos": self.pos, "neg": self.neg}
        for key in ("prompt", "pos_scores", "neg_scores", "type"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out.update(self.extra)
        return out


@dataclasses.dataclass
class ScoredPair:
    """Two texts and a similarity label: AnglE format A, STS-B, SICK-R."""

    text1: str
    text2: str
    score: float
    source: str | None = None
