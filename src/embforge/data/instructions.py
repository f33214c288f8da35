"""Query and passage instructions, applied as plain prefixes as FlagEmbedding does.

A record's own ``prompt`` (FlagEmbedding's per-line instruction) wins over the run's global query
instruction, so a mixture of tasks can carry one instruction per task. SGPT-style brackets are the
encoder's job, not the data layer's.
"""

from __future__ import annotations

from .records import RetrievalRecord


def query_text(record: RetrievalRecord | str, query_instruction: str | None = None) -> str:
    """The query as the encoder should see it: the record's prompt, else the global instruction, + query."""
    if isinstance(record, str):
        return f"{query_instruction or ''}{record}"
    prefix = record.prompt if record.prompt is not None else query_instruction
    return f"{prefix or ''}{record.query}"


def passage_text(text: str, passage_instruction: str | None = None) -> str:
    return f"{passage_instruction or ''}{text}"
