"""Shared bits of the benchmark scripts: data loading and a fair timer."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO / "examples" / "data" / "scifact"


def scifact_docs(n: int) -> list[str]:
    docs = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line, _ in zip(fh, range(n)):
            obj = json.loads(line)
            docs.append(f"{obj['title']} {obj['text']}".strip())
    return docs


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` runs: the least disturbed by other work on a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
