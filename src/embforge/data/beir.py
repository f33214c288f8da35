"""BEIR folders: corpus.jsonl, queries.jsonl and qrels/<split>.tsv."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EmbforgeError, where
from .jsonl import iter_dicts, iter_lines
from .problems import BadRecord, BadRecords
from .records import RetrievalRecord


@dataclass
class BeirSplit:
    """One split of a BEIR folder, restricted to queries that have qrels in that split."""

    corpus: dict[str, str]          # doc id -> "title text"
    queries: dict[str, str]         # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise EmbforgeError(f"{path}: file not found")
    return iter_dicts(path)


def _field(obj: dict[str, Any], key: str, path: Path, n: int, default: str | None = None) -> str:
    """A text field; ``_id`` may also be an integer (some exports write numeric ids), nothing else may."""
    value = obj.get(key, default)
    if value is None:
        raise EmbforgeError(f"{where(path, n)}: missing field {key!r}")
    allowed = (str, int) if key == "_id" else (str,)
    if isinstance(value, bool) or not isinstance(value, allowed):
        what = "a string or an integer" if key == "_id" else "a string"
        raise EmbforgeError(f"{where(path, n)}: field {key!r} must be {what}, got {type(value).__name__}")
    return str(value)


def _unique_id(obj: dict[str, Any], path: Path, n: int, seen: dict[str, int], bad: BadRecords | None) -> str | None:
    """The line's ``_id``, or None when an earlier line has it (reported through ``bad``).

    A dict would keep the last copy silently: a judged document vanishes and the counts lie, so a
    repeat is a bad record and, when skipped, the first copy is the one kept.
    """
    key = _field(obj, "_id", path, n)
    if key in seen:
        (bad or BadRecords()).handle(BadRecord(
            where(path, n), f"duplicate _id {key!r} (first seen at {where(path, seen[key])})", "_id"))
        return None
    seen[key] = n
    return key


def read_corpus(path: Path, bad: BadRecords | None = None) -> dict[str, str]:
    """Doc id -> ``title + " " + text`` (the convention of BEIR and MTEB)."""
    corpus: dict[str, str] = {}
    seen: dict[str, int] = {}
    for n, obj in _jsonl(path):
        title = _field(obj, "title", path, n, default="")
        text = _field(obj, "text", path, n)
        key = _unique_id(obj, path, n, seen, bad)
        if key is not None:
            corpus[key] = f"{title} {text}".strip() if title else text
    if not corpus:
        raise EmbforgeError(f"{path}: the corpus is empty")
    return corpus


def read_queries(path: Path, bad: BadRecords | None = None) -> dict[str, str]:
    queries: dict[str, str] = {}
    seen: dict[str, int] = {}
    for n, obj in _jsonl(path):
        text = _field(obj, "text", path, n)
        key = _unique_id(obj, path, n, seen, bad)
        if key is not None:
            queries[key] = text
    return queries


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def iter_qrels(path: Path, bad: BadRecords | None = None) -> Iterator[tuple[int, str, str, int]]:
    """(line, query id, doc id, relevance) per row; tolerates CRLF, a header row and TREC's 4 columns."""
    bad = bad if bad is not None else BadRecords()
    if not path.is_file():
        raise EmbforgeError(f"{path}: qrels file not found")
    # Split by hand, one decoded line at a time: csv's quoting would join lines at a stray quote (and
    # shift every later line number), and one undecodable byte would end the file with a traceback.
    for n, line in iter_lines(path, bad):
        row = [c.strip() for c in line.split("\t")]
        if not any(row):
            continue
        # A header has the data's columns with a name for the score; any other first row is data, so
        # a space-separated or short first row is reported instead of being skipped as a header.
        if n == 1 and len(row) in (3, 4) and not _is_number(row[-1]):
            continue
        if len(row) == 4:  # TREC layout: qid 0 docid rel
            row = [row[0], row[2], row[3]]
        if len(row) != 3:
            bad.handle(BadRecord(where(path, n), "expected 3 tab-separated columns (query-id, corpus-id, "
                                 f"score), got {len(row)}"))
            continue
        try:
            score = int(float(row[2]))
        except (ValueError, OverflowError):  # "inf" parses as a float but is no grade
            bad.handle(BadRecord(where(path, n), f"field 'score' must be a number, got {row[2]!r}", "score"))
            continue
        yield n, row[0], row[1], score


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Query id -> {doc id: relevance}; tolerates CRLF line ends and a header row."""
    qrels: dict[str, dict[str, int]] = {}
    for _, qid, did, score in iter_qrels(path):
        qrels.setdefault(qid, {})[did] = score
    return qrels


def is_beir_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "corpus.jsonl").is_file() and (p / "qrels").is_dir()


def qrels_split(folder: str | Path, split: str) -> dict[str, dict[str, int]]:
    """The qrels of one split of a BEIR folder, naming the splits there are when it is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmbforgeError(f"{folder}: BEIR folder not found")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise EmbforgeError(f"{qrels_path}: no qrels for split {split!r} (available: {', '.join(have) or 'none'})")
    return read_qrels(qrels_path)


def load_beir(folder: str | Path, split: str = "test") -> BeirSplit:
    """Load one split; qrels naming unknown ids are dropped with a warning by the caller's choice."""
    folder = Path(folder)
    qrels = qrels_split(folder, split)
    queries = read_queries(folder / "queries.jsonl")
    corpus = read_corpus(folder / "corpus.jsonl")
    return BeirSplit(corpus=corpus, queries={q: queries[q] for q in qrels if q in queries}, qrels=qrels)


def iter_training_records(folder: str | Path, split: str = "train", bad: BadRecords | None = None
                          ) -> Iterator[RetrievalRecord]:
    """One record per query of ``split``: its text and every doc with relevance > 0 as a positive.

    Queries come in qrels order; ``source`` is the qrels line of the query's first judgement. A
    qrels row naming an unknown query or doc is a bad record (BEIR ids are case-sensitive strings,
    so a mismatch usually means the wrong corpus). Rows with relevance <= 0 are judgements of
    non-relevance: they are not positives, and they are not reported as bad.
    """
    bad = bad if bad is not None else BadRecords()
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise EmbforgeError(f"{qrels_path}: no qrels for split {split!r} (available: {', '.join(have) or 'none'})")
    queries = read_queries(folder / "queries.jsonl", bad)
    corpus = read_corpus(folder / "corpus.jsonl", bad)
    positives: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for n, qid, did, score in iter_qrels(qrels_path, bad):
        if qid not in queries:
            bad.handle(BadRecord(where(qrels_path, n), f"field 'query-id' {qid!r} is not in queries.jsonl", "query-id"))
            continue
        if did not in corpus:
            bad.handle(BadRecord(where(qrels_path, n), f"field 'corpus-id' {did!r} is not in corpus.jsonl", "corpus-id"))
            continue
        first_line.setdefault(qid, n)
        if score > 0:
            positives.setdefault(qid, []).append(did)
    for qid, line in first_line.items():
        if qid in positives:
            yield RetrievalRecord(query=queries[qid], pos=[corpus[d] for d in positives[qid]],
                                  source=where(qrels_path, line), extra={"query_id": qid, "pos_ids": positives[qid]})
