"""Plain text inputs for encoding: one text per line (.txt) or one field of a JSONL/JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EmbforgeError, where


def read_texts(path: str | Path, field: str = "text") -> tuple[list[str], list[str] | None]:
    """Return (texts, ids). ``ids`` come from ``_id``/``id`` in JSONL when every line has one.

    For a BEIR corpus (title + text), ``field='title+text'`` joins the two as BEIR does.
    """
    path = Path(path)
    if not path.is_file():
        raise EmbforgeError(f"{path}: input file not found")
    texts: list[str] = []
    ids: list[str] = []
    is_jsonl = path.suffix.lower() in (".jsonl", ".json")
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not is_jsonl:
                texts.append(line)
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EmbforgeError(f"{where(path, n)}: invalid JSON: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise EmbforgeError(f"{where(path, n)}: expected a JSON object with field {field!r}")
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
    if not texts:
        raise EmbforgeError(f"{path}: the input is empty (expected at least one text)")
    return texts, (ids if len(ids) == len(texts) else None)
