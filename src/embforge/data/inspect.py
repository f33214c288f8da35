"""Inspecting a data source or a mixture YAML before spending GPU hours on it (``embforge data``).

It reads everything the way training will (same readers, same validation, same mixture plan) and
prints what it found as JSON, so a typo at line 80,000 or a ratio that does not add up shows here
and not mid-run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import option
from ..errors import EmbforgeError

if TYPE_CHECKING:  # pragma: no cover
    from .formats import Record

_T = TypeVar("_T")


@dataclass
class DataConfig:
    source: str | None = option(None, "Data file or folder (JSONL, BEIR, STS-B, SICK, NLI, HF, parquet, csv, npz) "
                                "or a dataset mixture YAML.")
    format: str | None = option(None, "Format name, when auto-detection guesses wrong (flag, angle-a, angle-b, "
                                "angle-c, beir, stsb, sick, nli, hf-disk, parquet, csv, hf-jsonl, npz, mixture).")
    split: str | None = option(None, "Split: BEIR qrels (default train), STS-B file, SICK SemEval_set, NLI or HF split.")
    load_from_disk: bool = option(False, "SOURCE is a datasets save_to_disk folder (same as --format hf-disk).")
    sample: int = option(0, "Also print this many records, chosen at random with --seed, as JSON lines.")
    seed: int = option(42, "Seed for the mixture's sampling and for --sample.")
    strict: bool = option(False, "Treat suspicious records (e.g. a negative equal to a positive) as errors.")
    skip_bad_records: bool = option(False, "Skip malformed records (count and first 5 locations are reported) "
                                    "instead of stopping at the first.")


def _record_json(record: Record) -> dict[str, Any]:
    from .records import ScoredPair

    if isinstance(record, ScoredPair):
        return {"text1": record.text1, "text2": record.text2, "label": record.score}
    return record.to_json()


def _reservoir(stream: Iterable[_T], k: int, seed: int) -> tuple[int, list[_T]]:
    """(count, k records chosen uniformly) in one pass, so a huge file is never held whole."""
    import random

    rng = random.Random(seed)
    kept: list[tuple[int, _T]] = []
    n = 0
    for n, rec in enumerate(stream, 1):
        if len(kept) < k:
            kept.append((n, rec))
        else:
            j = rng.randrange(n)
            if j < k:
                kept[j] = (n, rec)
    return n, [rec for _, rec in sorted(kept, key=lambda pair: pair[0])]


def _noting_kinds(stream: Iterable[Record], kinds: set[str]) -> Iterator[Record]:
    for record in stream:
        kinds.add(type(record).__name__)
        yield record


def _npz_report(path: Path) -> dict[str, Any]:
    from .npz import load_npz

    s = load_npz(path)
    return {"source": str(path), "format": "npz", "count": len(s), "dim": s.dim,
            "labels": s.labels is not None, "ids": s.ids is not None, "memory_mapped": s.memory_mapped}


def inspect(cfg: DataConfig) -> dict[str, Any]:
    from . import BadRecords, detect_format, iter_records

    if not cfg.source:
        raise EmbforgeError("data needs a SOURCE: a data file or folder, or a mixture YAML")
    if cfg.sample < 0:
        raise EmbforgeError(f"--sample must be >= 0, got {cfg.sample}")
    path = Path(cfg.source)
    fmt = cfg.format or ("hf-disk" if cfg.load_from_disk else detect_format(path))
    sample: list[Record] = []
    if fmt == "npz":
        report = _npz_report(path)
    elif fmt == "mixture":
        import random

        from .mixture import build_mixture, load_mixture_config

        records, report = build_mixture(load_mixture_config(path), seed=cfg.seed, strict=cfg.strict,
                                        skip_bad_records=cfg.skip_bad_records)
        if cfg.sample:
            picks = sorted(random.Random(cfg.seed).sample(range(len(records)), min(cfg.sample, len(records))))
            sample = [records[i] for i in picks]
    else:
        bad = BadRecords(skip=cfg.skip_bad_records)
        stream = iter_records(path, format=fmt, split=cfg.split, strict=cfg.strict, bad_records=bad)
        seen: set[str] = set()
        count, sample = _reservoir(_noting_kinds(stream, seen), cfg.sample, cfg.seed)
        kinds = sorted(seen)
        report = {"source": str(path), "format": fmt, "split": cfg.split, "count": count,
                  "kind": ", ".join(kinds) or None, "bad_records": bad.as_dict()}
    if cfg.sample:
        print(json.dumps(report, ensure_ascii=False))
        for rec in sample:
            print(json.dumps(_record_json(rec), ensure_ascii=False))
    else:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    return report
