"""FlagEmbedding query/pos/neg JSONL as raw dicts, for mining and evaluation.

Mining must write every record back with all of its fields untouched (prompt, type, scores and any
custom keys, in their original order), so this reader keeps the parsed objects as they are and only
validates the three fields mining and evaluation use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import EmbforgeError, where
from .jsonl import iter_dicts


def _string_list(obj: dict[str, Any], key: str, path: Path, n: int, required: bool) -> list[str]:
    value = obj.get(key)
    if value is None:
        if required:
            raise EmbforgeError(f"{where(path, n)}: missing field {key!r} (expected a list of strings)")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EmbforgeError(f"{where(path, n)}: field {key!r} must be a list of strings")
    return value


def read_query_jsonl(path: str | Path, need_pos: bool = True) -> list[dict[str, Any]]:
    """Records ``{"query": str, "pos": [str], "neg": [str], ...}``; ``pos``/``neg`` are normalised to lists."""
    path = Path(path)
    if path.is_dir():  # "not found" would send the user looking for a folder that is right there
        have = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())[:5]) or "nothing"
        raise EmbforgeError(f"{path}: the folder exists but is not a BEIR folder (expected corpus.jsonl, "
                            f"queries.jsonl and qrels/; it holds {have}); or give a query/pos JSONL file")
    if not path.is_file():
        raise EmbforgeError(f"{path}: input file not found")
    records: list[dict[str, Any]] = []
    for n, obj in iter_dicts(path, expected="a JSON object with query, pos and neg"):
        if not isinstance(obj.get("query"), str):
            raise EmbforgeError(f"{where(path, n)}: missing field 'query' (expected a string)")
        obj["pos"] = _string_list(obj, "pos", path, n, required=need_pos)
        if need_pos and not obj["pos"]:
            raise EmbforgeError(f"{where(path, n)}: 'pos' is empty (expected at least one positive text)")
        if "neg" in obj:
            obj["neg"] = _string_list(obj, "neg", path, n, required=False)
        records.append(obj)
    if not records:
        raise EmbforgeError(f"{path}: no records (expected JSONL lines with query, pos and neg)")
    return records


class CandidatePool:
    """Pool texts read in a stream, each pass from the top: JSONL ``{"text": ...}`` lines (FlagEmbedding
    pretrain data) or plain text lines; blank lines are skipped. A pool of millions of passages is never
    held in memory: the store encodes it shard by shard and mining fetches only the texts it keeps."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise EmbforgeError(f"{self.path}: candidate pool not found")

    def __iter__(self) -> Iterator[str]:
        empty = True
        with self.path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                empty = False
                if line.lstrip().startswith("{"):
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise EmbforgeError(f"{where(self.path, n)}: invalid JSON: {exc.msg}") from exc
                    text = obj.get("text") if isinstance(obj, dict) else None
                    if not isinstance(text, str):
                        raise EmbforgeError(f"{where(self.path, n)}: expected {{\"text\": str}} or a plain text line")
                    yield text
                else:
                    yield line
        if empty:
            raise EmbforgeError(f"{self.path}: the candidate pool is empty (expected at least one text)")


def read_candidate_pool(path: str | Path) -> list[str]:
    """Every pool text in memory (small pools; :class:`CandidatePool` streams)."""
    return list(CandidatePool(path))
