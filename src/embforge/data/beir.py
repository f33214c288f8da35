"""BEIR folders: corpus.jsonl, queries.jsonl and qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import EmbforgeError, where


@dataclass
class BeirSplit:
    """One split of a BEIR folder, restricted to queries that have qrels in that split."""

    corpus: dict[str, str]          # doc id -> "title text"
    queries: dict[str, str]         # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise EmbforgeError(f"{path}: file not found")
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EmbforgeError(f"{where(path, n)}: invalid JSON: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise EmbforgeError(f"{where(path, n)}: expected a JSON object")
            yield n, obj


def _field(obj: dict, key: str, path: Path, n: int, default: str | None = None) -> str:
    value = obj.get(key, default)
    if value is None:
        raise EmbforgeError(f"{where(path, n)}: missing field {key!r}")
    if not isinstance(value, (str, int)):
        raise EmbforgeError(f"{where(path, n)}: field {key!r} must be a string, got {type(value).__name__}")
    return str(value)


def read_corpus(path: Path) -> dict[str, str]:
    """Doc id -> ``title + " " + text`` (the convention of BEIR and MTEB)."""
    corpus: dict[str, str] = {}
    for n, obj in _jsonl(path):
        title = _field(obj, "title", path, n, default="")
        text = _field(obj, "text", path, n)
        corpus[_field(obj, "_id", path, n)] = f"{title} {text}".strip() if title else text
    if not corpus:
        raise EmbforgeError(f"{path}: the corpus is empty")
    return corpus


def read_queries(path: Path) -> dict[str, str]:
    return {_field(obj, "_id", path, n): _field(obj, "text", path, n) for n, obj in _jsonl(path)}


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Query id -> {doc id: relevance}; tolerates CRLF line ends and a header row."""
    if not path.is_file():
        raise EmbforgeError(f"{path}: qrels file not found")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for n, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
            row = [c.strip() for c in row]
            if not row or not any(row):
                continue
            if n == 1 and not row[-1].lstrip("-").isdigit():
                continue  # header
            if len(row) == 4:  # TREC layout: qid 0 docid rel
                row = [row[0], row[2], row[3]]
            if len(row) != 3:
                raise EmbforgeError(f"{where(path, n)}: expected 3 tab-separated columns (query-id, corpus-id, score)")
            try:
                score = int(float(row[2]))
            except ValueError as exc:
                raise EmbforgeError(f"{where(path, n)}: score must be a number, got {row[2]!r}") from exc
            qrels.setdefault(row[0], {})[row[1]] = score
    return qrels


def is_beir_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "corpus.jsonl").is_file() and (p / "qrels").is_dir()


def load_beir(folder: str | Path, split: str = "test") -> BeirSplit:
    """Load one split; qrels naming unknown ids are dropped with a warning by the caller's choice."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmbforgeError(f"{folder}: BEIR folder not found")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise EmbforgeError(f"{qrels_path}: no qrels for split {split!r} (available: {', '.join(have) or 'none'})")
    qrels = read_qrels(qrels_path)
    queries = read_queries(folder / "queries.jsonl")
    corpus = read_corpus(folder / "corpus.jsonl")
    return BeirSplit(corpus=corpus, queries={q: queries[q] for q in qrels if q in queries}, qrels=qrels)
