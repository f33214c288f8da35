"""Plain text inputs for encoding: one text per line (.txt) or one field of a JSONL/JSON file."""

from __future__ import annotations

from pathlib import Path

from ..errors import EmbforgeError, where
from .jsonl import iter_dicts


def read_texts(path: str | Path, field: str = "text") -> tuple[list[str], list[str] | None]:
    """Return (texts, ids). ``ids`` come from ``_id``/``id`` in JSONL when every line has one.

    For a BEIR corpus (title + text), ``field='title+text'`` joins the two as BEIR does.
    """
    path = Path(path)
    if not path.is_file():
        raise EmbforgeError(f"{path}: input file not found")
    texts: list[str] = []
    ids: list[str] = []
    if path.suffix.lower() not in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as fh:
            texts = [line.rstrip("\r\n") for line in fh]
        return _nonempty(path, texts), None
    for n, obj in iter_dicts(path, expected=f"a JSON object with field {field!r}"):
        if field == "title+text":
            title, text = obj.get("title") or "", obj.get("text")
            value = f"{title} {text}".strip() if title else text
        else:
            value = obj.get(field)
        if value is None:
            raise EmbforgeError(f"{where(path, n)}: missing field {field!r} (use --field to pick another)")
        if not isinstance(value, str):
            raise EmbforgeError(f"{where(path, n)}: field {field!r} must be a string, got {type(value).__name__}")
        texts.append(value)
        doc_id = obj.get("_id", obj.get("id"))
        if doc_id is not None:
            ids.append(str(doc_id))
    return _nonempty(path, texts), (ids if len(ids) == len(texts) else None)


def _nonempty(path: Path, texts: list[str]) -> list[str]:
    if not texts:
        raise EmbforgeError(f"{path}: the input is empty (expected at least one text)")
    return texts
