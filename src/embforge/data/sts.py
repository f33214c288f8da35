"""Scored sentence pairs from the STS Benchmark and SICK files."""

from __future__ import annotations

from pathlib import Path

from ..errors import EmbforgeError, where
from .records import ScoredPair


def _score(value: str, path: Path, n: int, name: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise EmbforgeError(f"{where(path, n)}: {name} must be a number, got {value!r}") from exc


def read_stsb(path: str | Path) -> list[ScoredPair]:
    """STS-B layout: tab-separated ``genre file year id score s1 s2 [sources...]``.

    Fields are taken by position and never csv-unquoted: sentences contain quote characters, and
    some rows carry extra licence columns after the two sentences.
    """
    path = Path(path)
    if not path.is_file():
        raise EmbforgeError(f"{path}: STS file not found")
    pairs: list[ScoredPair] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) < 7:
                raise EmbforgeError(f"{where(path, n)}: expected at least 7 tab-separated fields "
                                    f"(genre, file, year, id, score, sentence1, sentence2), got {len(cols)}")
            pairs.append(ScoredPair(cols[5], cols[6], _score(cols[4], path, n, "score"), where(path, n)))
    if not pairs:
        raise EmbforgeError(f"{path}: no pairs")
    return pairs


def read_sick(path: str | Path, split: str | None = "TEST") -> list[ScoredPair]:
    """SICK.txt: header row, tab-separated; relatedness_score (1-5) as the score.

    ``split`` keeps rows whose SemEval_set matches (TRAIN, TRIAL, TEST); None keeps all.
    """
    path = Path(path)
    if not path.is_file():
        raise EmbforgeError(f"{path}: SICK file not found")
    pairs: list[ScoredPair] = []
    with path.open(encoding="utf-8", newline="") as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
        need = ("sentence_A", "sentence_B", "relatedness_score", "SemEval_set")
        missing = [c for c in need if c not in header]
        if missing:
            raise EmbforgeError(f"{where(path, 1)}: header lacks column(s) {', '.join(missing)}")
        col = {name: header.index(name) for name in need}
        for n, line in enumerate(fh, 2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) < len(header):
                raise EmbforgeError(f"{where(path, n)}: expected {len(header)} fields, got {len(cols)}")
            if split is not None and cols[col["SemEval_set"]].upper() != split.upper():
                continue
            pairs.append(ScoredPair(cols[col["sentence_A"]], cols[col["sentence_B"]],
                                    _score(cols[col["relatedness_score"]], path, n, "relatedness_score"),
                                    where(path, n)))
    if not pairs:
        raise EmbforgeError(f"{path}: no pairs for split {split!r}")
    return pairs
