"""Rows from Hugging Face ``datasets``: ``save_to_disk`` folders and local parquet/csv/jsonl files.

``datasets`` is imported only here and only when such a source is read, so the CLI stays quick
for the other formats. Files are read with ``streaming=True``: rows arrive one at a time and no
Arrow cache is written next to the user's data or under ~/.cache. A csv row's location is its
file:line; elsewhere it is "file:row N", N counted from 1 over data rows (parquet has no lines).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EmbforgeError

if TYPE_CHECKING:  # pragma: no cover
    import datasets

BUILDERS = {"parquet": "parquet", "csv": "csv", "hf-jsonl": "json"}


def is_hf_disk_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file()
                              or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()))


def _from_disk(path: Path, split: str | None) -> datasets.Dataset:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for a damaged folder
        raise EmbforgeError(f"{path}: cannot load the save_to_disk folder: {exc}") from exc
    if isinstance(data, datasets.DatasetDict):
        names = list(data.keys())
        if split is None:
            split = "train" if "train" in names else names[0] if len(names) == 1 else None
        if split not in data:
            raise EmbforgeError(f"{path}: choose a split with --split (available: {', '.join(names)})")
        data = data[split]
    elif split not in (None, "train"):
        raise EmbforgeError(f"{path}: a single-split dataset has no split {split!r}")
    return data


def iter_rows(path: str | Path, fmt: str, split: str | None = None) -> Iterator[tuple[str, Any]]:
    """(location, row dict) for ``fmt`` in hf-disk, parquet, csv, hf-jsonl."""
    path = Path(path)
    if fmt == "hf-disk":
        data = _from_disk(path, split)
        label = f"{path}[{split}]" if split else str(path)
    else:
        import datasets

        if not path.is_file():
            raise EmbforgeError(f"{path}: file not found")
        try:
            data = datasets.load_dataset(BUILDERS[fmt], data_files=str(path), split="train", streaming=True)
        except Exception as exc:
            raise EmbforgeError(f"{path}: cannot read as {fmt}: {exc}") from exc
        label = str(path)
    rows = iter(data)
    n = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as exc:  # a parse error deep inside pyarrow / pandas
            raise EmbforgeError(f"{label}: cannot read row {n + 1}: {exc}") from exc
        n += 1
        # A csv row is a line after the header (quoted newlines aside), so editors can jump to it.
        yield (f"{label}:{n + 1}" if fmt == "csv" else f"{label}:row {n}"), row
