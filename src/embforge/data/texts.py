"""Plain text inputs for encoding, read as streams: one text per line (.txt), one field of a JSONL/JSON
file, or a BEIR corpus.

The readers are re-iterable: each ``for`` reads the file again from the top, one line at a time, so a
corpus of millions of lines is never all in memory and the embedding store can read it once per rank.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import EmbforgeError, where
from .beir import _field
from .jsonl import iter_dicts, open_checked


class TextFile:
    """The texts of ``path``: every line of a .txt file, or field ``field`` of each line of a .jsonl/.json
    file (``'title+text'`` joins a BEIR corpus's title and text as BEIR does)."""

    def __init__(self, path: str | Path, field: str = "text") -> None:
        self.path, self.field = Path(path), field
        if not self.path.is_file():
            raise EmbforgeError(f"{self.path}: input file not found")
        self.jsonl = self.path.suffix.lower() in (".jsonl", ".json")

    def __iter__(self) -> Iterator[str]:
        return (text for text, _ in self.records())

    def ids(self) -> list[str] | None:
        """``_id``/``id`` of every line in order (one more pass), or None when a line lacks one."""
        ids: list[str] = []
        if self.jsonl:
            for _, doc_id in self.records():
                if doc_id is None:
                    return None
                ids.append(doc_id)
        return ids or None

    def records(self) -> Iterator[tuple[str, str | None]]:
        """(text, id or None) per line; a problem stops the stream with its file:line."""
        empty = True
        for record in self._jsonl() if self.jsonl else self._lines():
            empty = False
            yield record
        if empty:
            raise EmbforgeError(f"{self.path}: the input is empty (expected at least one text)")

    def _lines(self) -> Iterator[tuple[str, str | None]]:
        with open_checked(self.path) as fh:
            for n, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise EmbforgeError(f"{where(self.path, n)}: not valid UTF-8 ({exc.reason})") from exc
                yield line.rstrip("\r\n"), None

    def _jsonl(self) -> Iterator[tuple[str, str | None]]:
        field, path = self.field, self.path
        for n, obj in iter_dicts(path, expected=f"a JSON object with field {field!r}"):
            if field == "title+text":
                title, text = obj.get("title") or "", obj.get("text")
                value = f"{title} {text}".strip() if title and isinstance(text, str) else text
            else:
                value = obj.get(field)
            if value is None:
                raise EmbforgeError(f"{where(path, n)}: missing field {field!r} (use --field to pick another)")
            if not isinstance(value, str):
                raise EmbforgeError(f"{where(path, n)}: field {field!r} must be a string, got {type(value).__name__}")
            doc_id = obj.get("_id", obj.get("id"))
            yield value, None if doc_id is None else str(doc_id)


class BeirCorpus:
    """A BEIR corpus (a folder with corpus.jsonl, or the file) as a stream of ``"title text"`` strings,
    the convention of BEIR and MTEB; every line needs an ``_id``, and no two lines the same one."""

    def __init__(self, source: str | Path) -> None:
        source = Path(source)
        self.path = source / "corpus.jsonl" if source.is_dir() else source
        if not self.path.is_file():
            raise EmbforgeError(f"{self.path}: file not found")

    def __iter__(self) -> Iterator[str]:
        return (text for _, text in self.records())

    def ids(self) -> list[str]:
        return [doc_id for doc_id, _ in self.records()]

    def records(self) -> Iterator[tuple[str, str]]:
        """(id, "title text") per line, checked as :func:`embforge.data.beir.read_corpus` checks them."""
        path, seen = self.path, dict[str, int]()
        for n, obj in iter_dicts(path):
            title = _field(obj, "title", path, n, default="")
            text = _field(obj, "text", path, n)
            key = _field(obj, "_id", path, n)
            if key in seen:
                raise EmbforgeError(f"{where(path, n)}: duplicate _id {key!r} (first seen at {where(path, seen[key])})")
            seen[key] = n
            yield key, f"{title} {text}".strip() if title else text
        if not seen:
            raise EmbforgeError(f"{path}: the corpus is empty")


def read_texts(path: str | Path, field: str = "text") -> tuple[list[str], list[str] | None]:
    """Return (texts, ids) in memory. ``ids`` come from ``_id``/``id`` in JSONL when every line has one."""
    texts: list[str] = []
    ids: list[str | None] = []
    for text, doc_id in TextFile(path, field).records():
        texts.append(text)
        ids.append(doc_id)
    return texts, (None if any(i is None for i in ids) else [i for i in ids if i is not None])
