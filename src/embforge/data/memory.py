"""Records given from Python: a list of records or dicts, a ``datasets.Dataset``, a pandas DataFrame.

The rows go through the same field rules as JSONL lines and parquet rows (``fields.py``), so a
column called ``pos`` means the same everywhere and a bad row gets the same message, located as
``DataFrame[3]`` (the index a Python user would type) instead of ``file:line``. Neither
``datasets`` nor ``pandas`` is imported here: objects are recognised by their methods.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import EmbforgeError
from .fields import REQUIRED, format_of, rename_fields, to_record
from .problems import BadRecord, BadRecords
from .records import RetrievalRecord, ScoredPair

ROW_FORMATS = tuple(REQUIRED)  # flag, angle-a, angle-b, angle-c


class InMemoryData(str):
    """In-memory data held in a config field that otherwise names a file (``train_data``).

    The value is a string, the data's description (``in-memory DataFrame (120 rows)``), so code
    that treats the field as a path string keeps working: reports and logs, JSON dumps of the
    config (TensorBoard's), truth value (a DataFrame's would be an error), and pickles of the
    config (the Trainer's ``training_args.bin`` in every checkpoint), which keep the description
    and not a copy of the data set. :func:`embforge.data.load_records` reads ``.data``.
    """

    data: Any

    def __new__(cls, data: Any) -> InMemoryData:
        data = data.data if isinstance(data, InMemoryData) else data
        self = super().__new__(cls, describe(data))
        self.data = data
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> InMemoryData:
        return self  # configs are deep-copied (dataclasses.asdict); the data itself is never edited

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return str, (str(self),)


def is_in_memory(source: Any) -> bool:
    """True for anything that is not a path: those are read by :func:`iter_memory`."""
    return isinstance(source, InMemoryData) or not isinstance(source, (str, os.PathLike))


def _kind(data: Any) -> str:
    name = type(data).__name__
    return "records" if isinstance(data, (list, tuple)) else name


def describe(data: Any) -> str:
    """A short label for reports: ``in-memory DataFrame (120 rows)``."""
    if isinstance(data, InMemoryData):
        data = data.data
    try:
        size = f" ({len(data)} rows)"
    except TypeError:
        size = ""
    return f"in-memory {_kind(data)}{size}"


def _is_a(data: Any, *names: str) -> bool:
    return any(cls.__name__ in names for cls in type(data).__mro__)


def _dataset_rows(data: Any, split: str | None) -> Any:
    """A DatasetDict -> one of its splits (train by default), as a save_to_disk folder is read."""
    if _is_a(data, "DatasetDict", "IterableDatasetDict"):
        names = list(data.keys())
        if split is None:
            split = "train" if "train" in names else names[0] if len(names) == 1 else None
        if split not in names:
            raise EmbforgeError(f"{describe(data)}: choose a split (available: {', '.join(names)})")
        return data[split]
    return data


def _rows(data: Any, split: str | None) -> Iterator[Any]:
    """Plain rows of any supported container."""
    if _is_a(data, "DataFrame"):  # pandas
        yield from data.to_dict(orient="records")
        return
    data = _dataset_rows(data, split)
    if isinstance(data, (str, bytes, Mapping)) or not hasattr(data, "__iter__"):
        raise EmbforgeError(f"in-memory data must be a list of records or dicts, a datasets.Dataset or a pandas "
                            f"DataFrame, got {type(data).__name__}")
    yield from data


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (pandas and datasets hand them out) -> Python values the field rules check;
    NaN, a DataFrame's missing cell (a row without ``neg``), -> None, as a JSONL line without the key."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float) and value != value:
        return None
    return value


def iter_memory(data: Any, *, format: str | None = None, split: str | None = None, strict: bool = False,
                field_map: Mapping[str, str] | None = None,
                bad: BadRecords | None = None) -> Iterator[RetrievalRecord | ScoredPair]:
    """Records of an in-memory source; ready-made records pass through, mappings follow the field rules.

    The format comes from the first row's keys (FlagEmbedding query/pos/neg, AnglE A/B/C, and
    sentence-transformers' column names), or from ``format``.
    """
    if isinstance(data, InMemoryData):
        data = data.data
    if format is not None and format not in ROW_FORMATS:
        raise EmbforgeError(f"{describe(data)}: format {format!r} is a file format; in-memory rows take one of "
                            f"{', '.join(ROW_FORMATS)}")
    bad = bad if bad is not None else BadRecords()
    kind = _kind(_dataset_rows(data, split))
    row_format = format
    for i, row in enumerate(_rows(data, split)):
        loc = f"{kind}[{i}]"
        if isinstance(row, (RetrievalRecord, ScoredPair)):
            yield row
            continue
        try:
            if isinstance(row, Mapping):
                row = rename_fields({k: _plain(v) for k, v in row.items()}, field_map)
                if row_format is None:
                    row_format = format_of(row)
                    if row_format is None:
                        expected = "; ".join(f"{n}: {', '.join(k)}" for n, k in REQUIRED.items())
                        raise EmbforgeError(f"{loc}: keys {', '.join(map(str, row))} match no record format; "
                                            f"expected {expected} (or pass format= / field_map=)")
            else:
                raise BadRecord(loc, f"expected a dict or a RetrievalRecord / ScoredPair, got {type(row).__name__}")
            yield to_record(row, row_format, loc, strict)
        except BadRecord as problem:
            bad.handle(problem)

