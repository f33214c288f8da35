"""Line-by-line JSONL: constant memory however large the file, and every problem has a line number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import EmbforgeError, where
from .problems import BadRecord, BadRecords


def open_checked(path: Path) -> BinaryIO:
    """Open for binary reading, turning OS errors into one readable line."""
    if not path.exists():
        raise EmbforgeError(f"{path}: file not found")
    try:
        return path.open("rb")
    except OSError as exc:
        raise EmbforgeError(f"{path}: cannot read: {exc.strerror}") from exc


def iter_lines(path: Path, bad: BadRecords) -> Iterator[tuple[int, str]]:
    """(line number, text) for non-blank lines; bytes are decoded per line so one bad byte costs one line."""
    with open_checked(path) as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                bad.handle(BadRecord(where(path, n), f"not valid UTF-8 ({exc.reason})"))
                continue
            if line.strip():
                yield n, line


def iter_objects(path: Path, bad: BadRecords) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value); malformed JSON goes to ``bad`` with its line."""
    for n, line in iter_lines(path, bad):
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            bad.handle(BadRecord(where(path, n), f"invalid JSON: {exc.msg} (column {exc.colno})"))


def iter_dicts(path: Path, expected: str = "a JSON object") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; the first malformed line is an error."""
    for n, obj in iter_objects(path, BadRecords(skip=False)):
        if not isinstance(obj, dict):
            raise EmbforgeError(f"{where(path, n)}: expected {expected}")
        yield n, obj


def first_object(path: Path) -> Any:
    """The first parseable line, for format detection; None when the file has none."""
    with open_checked(path) as fh:
        for raw in fh:
            text = raw.decode("utf-8-sig", errors="replace").strip()
            if not text:
                continue
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                continue
    return None
