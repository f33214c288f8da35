"""SNLI-style NLI (InferSent layout: s1.<split>, s2.<split>, labels.<split>) -> AllNLI-style triplets.

Each premise becomes one record: the premise as the query, its entailed hypotheses as positives
and its contradicted ones as hard negatives; neutral hypotheses are neither. Only premises with at
least one of each are kept, because a triplet loss needs both. Grouping by premise needs the whole
split in memory (the SNLI splits are a few MB); the three files are still read line by line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from ..errors import EmbforgeError, where
from .problems import BadRecord, BadRecords
from .records import RetrievalRecord

logger = logging.getLogger("embforge.data")
LABELS = ("entailment", "neutral", "contradiction")
PARTS = ("s1", "s2", "labels")


def nli_splits(folder: Path) -> list[str]:
    """Splits for which all three files exist, e.g. ['dev', 'test']."""
    return sorted(p.suffix[1:] for p in folder.glob("s1.*")
                  if all((folder / f"{part}{p.suffix}").is_file() for part in PARTS))


def is_nli_folder(path: Path) -> bool:
    return path.is_dir() and bool(nli_splits(path))


def resolve(path: str | Path, split: str | None) -> tuple[Path, str]:
    """Accept the folder or any one of its three files; default split: train, then dev, then test."""
    path = Path(path)
    if path.is_file() and path.stem in PARTS:
        split = split or path.suffix[1:]
        path = path.parent
    have = nli_splits(path) if path.is_dir() else []
    if not have:
        raise EmbforgeError(f"{path}: not an NLI folder (expected s1.<split>, s2.<split>, labels.<split>)")
    if split is None:
        split = next((s for s in ("train", "dev", "test") if s in have), have[0])
    if split not in have:
        raise EmbforgeError(f"{path}: no NLI split {split!r} (available: {', '.join(have)})")
    return path, split


def _strip(line: str) -> str:
    # The InferSent files are space-tokenised with a trailing space; a text's identity is its words.
    return line.rstrip("\r\n").strip()


def iter_nli_triplets(path: str | Path, split: str | None = None, bad: BadRecords | None = None
                      ) -> Iterator[RetrievalRecord]:
    """Triplet records in order of each premise's first appearance; ``source`` is that s1 line."""
    bad = bad if bad is not None else BadRecords()
    folder, split = resolve(path, split)
    files = [folder / f"{part}.{split}" for part in PARTS]
    groups: dict[str, dict[str, list[str]]] = {}
    first: dict[str, int] = {}
    handles = [f.open(encoding="utf-8", newline="") for f in files]
    try:
        n = 0
        while True:
            n += 1
            lines = [h.readline() for h in handles]
            ended = [not line for line in lines]
            if all(ended):
                break
            if any(ended):
                short = files[ended.index(True)]
                raise EmbforgeError(f"{where(short, n)}: file ends here but "
                                    f"{files[ended.index(False)].name} goes on (the three files must align)")
            premise, hypothesis, label = (_strip(line) for line in lines)
            if not premise and not hypothesis and not label:
                continue
            try:
                if label not in LABELS:
                    raise BadRecord(where(files[2], n), f"field 'label' must be one of {', '.join(LABELS)}, "
                                    f"got {label!r}", "label")
                for f, text, name in ((files[0], premise, "premise"), (files[1], hypothesis, "hypothesis")):
                    if not text:
                        raise BadRecord(where(f, n), f"field {name!r} is an empty text", name)
            except BadRecord as problem:
                bad.handle(problem)
                continue
            first.setdefault(premise, n)
            groups.setdefault(premise, {}).setdefault(label, []).append(hypothesis)
    finally:
        for h in handles:
            h.close()
    kept = 0
    for premise, by_label in groups.items():
        pos, neg = by_label.get("entailment", []), by_label.get("contradiction", [])
        if pos and neg:
            kept += 1
            yield RetrievalRecord(query=premise, pos=pos, neg=neg, source=where(files[0], first[premise]))
    logger.info("%s: %d of %d premises have both an entailment and a contradiction", files[0], kept, len(groups))
