"""Scored sentence pairs from the STS Benchmark and SICK files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import EmbforgeError, where
from .jsonl import iter_lines
from .problems import BadRecord, BadRecords
from .records import ScoredPair


def _score(value: str, path: Path, n: int, name: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise BadRecord(where(path, n), f"field {name!r} must be a number, got {value!r}", name) from exc


def _lines(path: Path, what: str, bad: BadRecords) -> Iterator[tuple[int, str]]:
    """Non-blank lines, decoded one at a time: an undecodable byte is a bad line, not a crash of the file."""
    if not path.is_file():
        raise EmbforgeError(f"{path}: {what} file not found")
    for n, line in iter_lines(path, bad):
        yield n, line.rstrip("\r\n")


def iter_stsb(path: str | Path, bad: BadRecords | None = None) -> Iterator[ScoredPair]:
    """STS-B layout: tab-separated ``genre file year id score s1 s2 [sources...]``.

    Fields are taken by position and never csv-unquoted: sentences contain quote characters, and
    some rows carry extra licence columns after the two sentences.
    """
    path, bad = Path(path), bad if bad is not None else BadRecords()
    for n, line in _lines(path, "STS", bad):
        cols = line.split("\t")
        try:
            if len(cols) < 7:
                raise BadRecord(where(path, n), f"expected at least 7 tab-separated fields "
                                f"(genre, file, year, id, score, sentence1, sentence2), got {len(cols)}")
            yield ScoredPair(cols[5], cols[6], _score(cols[4], path, n, "score"), where(path, n))
        except BadRecord as problem:
            bad.handle(problem)


def read_stsb(path: str | Path) -> list[ScoredPair]:
    pairs = list(iter_stsb(path))
    if not pairs:
        raise EmbforgeError(f"{path}: no pairs")
    return pairs


SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score", "SemEval_set")


def iter_sick(path: str | Path, split: str | None = "TEST", bad: BadRecords | None = None) -> Iterator[ScoredPair]:
    """SICK.txt: header row, tab-separated; relatedness_score (1-5) as the score.

    ``split`` keeps rows whose SemEval_set matches (TRAIN, TRIAL, TEST); None keeps all.
    """
    path, bad = Path(path), bad if bad is not None else BadRecords()
    lines = _lines(path, "SICK", bad)
    first = next(lines, None)
    header = first[1].split("\t") if first else []
    missing = [c for c in SICK_COLUMNS if c not in header]
    if missing:
        raise EmbforgeError(f"{where(path, 1)}: header lacks column(s) {', '.join(missing)}")
    col = {name: header.index(name) for name in SICK_COLUMNS}
    for n, line in lines:
        cols = line.split("\t")
        try:
            if len(cols) < len(header):
                raise BadRecord(where(path, n), f"expected {len(header)} fields, got {len(cols)}")
            if split is not None and cols[col["SemEval_set"]].upper() != split.upper():
                continue
            yield ScoredPair(cols[col["sentence_A"]], cols[col["sentence_B"]],
                             _score(cols[col["relatedness_score"]], path, n, "relatedness_score"), where(path, n))
        except BadRecord as problem:
            bad.handle(problem)


def read_sick(path: str | Path, split: str | None = "TEST") -> list[ScoredPair]:
    pairs = list(iter_sick(path, split))
    if not pairs:
        raise EmbforgeError(f"{path}: no pairs for split {split!r}")
    return pairs
