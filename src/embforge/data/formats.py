"""One entry point for every single data source: detect its format, then stream its records.

Detection looks at what is on disk (folder layout, suffix, the first line's keys) rather than at
names the user chose, so a renamed file still loads; ``format=`` overrides it when the guess is
wrong or the file is ambiguous.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import EmbforgeError, where
from . import beir, hf, jsonl, nli, sts
from .fields import REQUIRED, format_of, rename_fields, to_record
from .memory import InMemoryData, describe, is_in_memory, iter_memory
from .problems import BadRecord, BadRecords
from .records import RetrievalRecord, ScoredPair

Record = RetrievalRecord | ScoredPair

FORMATS = ("flag", "angle-a", "angle-b", "angle-c", "beir", "stsb", "sick", "nli", "hf-disk", "npz",
           "parquet", "csv", "hf-jsonl", "mixture")
JSON_FORMATS = ("flag", "angle-a", "angle-b", "angle-c")
ROW_FORMATS = ("hf-disk", "parquet", "csv", "hf-jsonl")
NLI_SUFFIXES = (".train", ".dev", ".test")


def _expected_keys() -> str:
    return "; ".join(f"{name}: {', '.join(keys)}" for name, keys in REQUIRED.items())


def _looks_like_stsb(path: Path) -> bool:
    with jsonl.open_checked(path) as fh:
        first = fh.readline().decode("utf-8", errors="replace").rstrip("\r\n").split("\t")
    if len(first) < 7:
        return False
    try:
        float(first[4])
    except ValueError:
        return False
    return True


def _looks_like_sick(path: Path) -> bool:
    with jsonl.open_checked(path) as fh:
        header = fh.readline().decode("utf-8", errors="replace").split("\t")
    return all(c in header for c in ("pair_ID", "sentence_A", "sentence_B"))


def detect_format(path: str | Path, field_map: Mapping[str, str] | None = None) -> str:
    """The format name of a file or folder (one of :data:`FORMATS`); an EmbforgeError when unknown."""
    p = Path(path)
    if not p.exists():
        raise EmbforgeError(f"{p}: no such file or folder")
    if p.is_dir():
        if beir.is_beir_folder(p):
            return "beir"
        if hf.is_hf_disk_folder(p):
            return "hf-disk"
        if nli.is_nli_folder(p):
            return "nli"
        if any((p / f"sts-{s}.csv").is_file() for s in ("train", "dev", "test")):
            return "stsb"
        raise EmbforgeError(f"{p}: unknown folder layout (expected a BEIR folder with corpus.jsonl and qrels/, "
                            "an HF save_to_disk folder, an NLI folder with s1/s2/labels files, or an STS-B folder)")
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "mixture"
    if suffix in (".npz", ".npy"):
        return "npz"
    if suffix == ".parquet":
        return "parquet"
    if p.stem in nli.PARTS and suffix in NLI_SUFFIXES:
        return "nli"
    if suffix in (".csv", ".tsv", ".txt"):
        if _looks_like_sick(p):
            return "sick"
        if _looks_like_stsb(p):
            return "stsb"
        if suffix == ".csv":
            return "csv"
    if suffix in (".jsonl", ".json"):
        obj = jsonl.first_object(p)
        if obj is None:
            raise EmbforgeError(f"{p}: no JSON object to detect the format from (empty file?)")
        fmt = format_of(rename_fields(obj, field_map)) if isinstance(obj, dict) else None
        if fmt is None:
            keys = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
            raise EmbforgeError(f"{p}: cannot tell the format from the first record's keys ({keys}); "
                                f"expected {_expected_keys()} (or pass --format / a field map)")
        return fmt
    raise EmbforgeError(f"{p}: unknown file type {suffix or '(no suffix)'!r}; pass --format "
                        f"({', '.join(FORMATS)})")


def _json_records(path: Path, fmt: str, bad: BadRecords, strict: bool,
                  field_map: Mapping[str, str] | None) -> Iterator[Record]:
    for n, obj in jsonl.iter_objects(path, bad):
        try:
            row = rename_fields(obj, field_map) if isinstance(obj, dict) else obj
            yield to_record(row, fmt, where(path, n), strict)
        except BadRecord as problem:
            bad.handle(problem)


def _row_records(path: Path, fmt: str, split: str | None, bad: BadRecords, strict: bool,
                 field_map: Mapping[str, str] | None) -> Iterator[Record]:
    row_fmt: str | None = None
    for loc, row in hf.iter_rows(path, fmt, split):
        row = rename_fields(row, field_map)
        if row_fmt is None:
            row_fmt = format_of(row)
            if row_fmt is None:
                raise EmbforgeError(f"{path}: columns {', '.join(row)} match no record format; expected "
                                    f"{_expected_keys()} (map yours with field_map)")
        try:
            yield to_record(row, row_fmt, loc, strict)
        except BadRecord as problem:
            bad.handle(problem)


def _stsb_file(path: Path, split: str | None) -> Path:
    return path / f"sts-{split or 'train'}.csv" if path.is_dir() else path


def _dispatch(path: Path, fmt: str, split: str | None, bad: BadRecords, strict: bool,
              field_map: Mapping[str, str] | None) -> Iterator[Record]:
    if fmt in JSON_FORMATS:
        return _json_records(path, fmt, bad, strict, field_map)
    if fmt in ROW_FORMATS:
        return _row_records(path, fmt, split, bad, strict, field_map)
    if fmt == "beir":
        return beir.iter_training_records(path, split or "train", bad)
    if fmt == "stsb":
        return sts.iter_stsb(_stsb_file(path, split), bad)
    if fmt == "sick":
        return sts.iter_sick(path, split, bad)
    if fmt == "nli":
        return nli.iter_nli_triplets(path, split, bad)
    if fmt == "npz":
        raise EmbforgeError(f"{path}: an .npz holds embeddings, not text records; use embforge.data.npz.load_npz")
    if fmt == "mixture":
        raise EmbforgeError(f"{path}: a mixture YAML is several sources; use load_records or build_mixture")
    raise EmbforgeError(f"{path}: unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def iter_records(source: str | Path | InMemoryData | Any, *, format: str | None = None, split: str | None = None,
                 strict: bool = False, skip_bad_records: bool = False,
                 field_map: Mapping[str, str] | None = None,
                 bad_records: BadRecords | None = None) -> Iterator[Record]:
    """Stream the records of one source (file or folder).

    Bad records raise an EmbforgeError naming file:line and field, unless ``skip_bad_records``;
    then they are counted in ``bad_records`` (pass your own :class:`BadRecords` to read the count)
    and summarised in one logged warning when the stream ends. ``split`` picks the BEIR qrels
    (default train), the STS-B file, the SICK SemEval_set (default: all rows), the NLI split or the
    HF dataset split. ``source`` may also be in-memory data (see :mod:`embforge.data.memory`): a list of
    records or dicts, a ``datasets.Dataset`` or a pandas DataFrame.
    """
    bad = bad_records if bad_records is not None else BadRecords()
    bad.skip = bad.skip or skip_bad_records
    if is_in_memory(source):
        label: object = describe(source)
        records = iter_memory(source, format=format, split=split, strict=strict, field_map=field_map, bad=bad)
    else:
        label = path = Path(source)
        records = _dispatch(path, format or detect_format(path, field_map), split, bad, strict, field_map)
    try:
        yield from records
    finally:
        bad.log_summary(label)


def count_records(source: str | Path, **kwargs: Any) -> int:
    """Valid records in one streaming pass (memory stays constant for JSONL and row formats)."""
    return sum(1 for _ in iter_records(source, **kwargs))
