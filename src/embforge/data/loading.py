"""All records of a source or of a dataset-mixture YAML: the one entry point that knows both.

Single sources are read by :mod:`.formats`; a mixture (:mod:`.mixture`) is built from single sources.
Keeping this function apart lets the imports run one way: formats, then mixture, then loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import EmbforgeError
from .formats import detect_format, iter_records
from .memory import InMemoryData, describe, is_in_memory
from .mixture import build_mixture, load_mixture_config
from .problems import BadRecords
from .records import RetrievalRecord, ScoredPair


def load_records(source: str | Path | InMemoryData | Any, *, format: str | None = None, split: str | None = None,
                 strict: bool = False, skip_bad_records: bool = False, seed: int = 42,
                 field_map: Mapping[str, str] | None = None,
                 bad_records: BadRecords | None = None) -> list[RetrievalRecord] | list[ScoredPair]:
    """All records of a source or of a mixture YAML (``seed`` drives the mixture's sampling).

    ``source`` may be a path or in-memory data: a list of records or dicts (FlagEmbedding query/pos/neg
    or AnglE A/B/C keys), a ``datasets.Dataset`` / ``DatasetDict`` or a pandas DataFrame. An empty
    result is an error: training or evaluating on nothing is never what was meant.
    """
    fmt = format or (None if is_in_memory(source) else detect_format(source, field_map))
    if fmt == "mixture":
        records, _ = build_mixture(load_mixture_config(source), seed=seed, strict=strict,
                                   skip_bad_records=skip_bad_records, field_map=field_map)
    else:
        records = list(iter_records(source, format=fmt, split=split, strict=strict,
                                    skip_bad_records=skip_bad_records, field_map=field_map,
                                    bad_records=bad_records))
    if not records:
        raise EmbforgeError(f"{describe(source) if is_in_memory(source) else source}: no records")
    return records  # type: ignore[return-value]
