"""STS evaluation: cosine of each pair's embeddings against the gold scores (STS-B, SICK-R)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import encode_cached, model_fingerprint, truncate
from ..data.records import ScoredPair
from ..data.sts import read_sick, read_stsb
from ..errors import EmbforgeError
from ..protocols import EncoderLike
from .metrics import sts_metrics
from .retrieval import check_dims


def detect_sts(path: str | Path, split: str = "test") -> tuple[str, Path] | None:
    """("stsb"|"sick", file) when ``path`` is an STS-B csv/folder or SICK.txt, else None.

    Detection reads the first line: SICK has a header naming sentence_A; STS-B rows have at least 7
    tab-separated fields with a number in the 5th.
    """
    p = Path(path)
    if p.is_dir():
        candidate = p / f"sts-{split}.csv"
        if candidate.is_file():
            return "stsb", candidate
        if (p / "SICK.txt").is_file():
            return "sick", p / "SICK.txt"
        return None
    if not p.is_file() or p.suffix.lower() in (".jsonl", ".json"):
        return None
    with p.open(encoding="utf-8", errors="replace") as fh:
        first = fh.readline().rstrip("\r\n").split("\t")
    if "sentence_A" in first and "relatedness_score" in first:
        return "sick", p
    if len(first) >= 7:
        try:
            float(first[4])
            return "stsb", p
        except ValueError:
            return None
    return None


def load_sts(kind: str, path: Path, split: str = "test") -> list[ScoredPair]:
    if kind == "sick":
        return read_sick(path, split={"dev": "TRIAL", "validation": "TRIAL"}.get(split.lower(), split.upper()))
    return read_stsb(path)


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.asarray((a.astype(np.float64) * b.astype(np.float64)).sum(axis=1))


def evaluate_sts(encoder: EncoderLike, pairs: Sequence[ScoredPair], dims: Sequence[int] | None = None,
                 batch_size: int = 64, use_cache: bool = True, max_tokens: int | None = None) -> dict[str, Any]:
    """Spearman and Pearson of cosine similarity vs gold, per Matryoshka dim.

    Each distinct sentence is encoded once; both sides use the passage settings (symmetric task).
    """
    if not pairs:
        raise EmbforgeError("sts: no pairs to evaluate")
    dim_list = check_dims(dims, int(encoder.embedding_dim))
    texts = list(dict.fromkeys(t for p in pairs for t in (p.text1, p.text2)))
    index = {t: i for i, t in enumerate(texts)}
    t0 = time.perf_counter()
    emb, hit = encode_cached(encoder, texts, batch_size=batch_size, use_cache=use_cache, show_progress=True,
                             fingerprint=model_fingerprint(encoder) if use_cache else None, max_tokens=max_tokens)
    t1 = time.perf_counter()
    left = np.array([index[p.text1] for p in pairs])
    right = np.array([index[p.text2] for p in pairs])
    gold = [p.score for p in pairs]
    normalize = bool(getattr(encoder.config, "normalize", True))
    per_dim = {}
    for dim in dim_list:
        e = truncate(emb, dim, normalize)
        per_dim[str(dim or encoder.embedding_dim)] = sts_metrics(cosine_pairs(e[left], e[right]), gold)
    return {"task": "sts", "pairs": len(pairs), "dims": per_dim, "encodings_from_cache": hit,
            "timings": {"encode_s": t1 - t0, "metrics_s": time.perf_counter() - t1}}
