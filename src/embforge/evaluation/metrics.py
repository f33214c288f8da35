"""Retrieval and STS metrics as pure functions: rankings and labels in, numbers out.

Conventions (chosen so the numbers equal sentence-transformers' InformationRetrievalEvaluator and,
for graded qrels, pytrec_eval/BEIR):

* a document is relevant when its qrels grade is > 0; queries without any relevant document are
  skipped (they have no defined recall or nDCG), queries with qrels but no ranking score 0;
* rankings are ordered by score descending, ties by document id ascending, so equal scores never
  make results depend on corpus order;
* nDCG uses linear gain (grade / log2(rank + 1)), as pytrec_eval does; with binary grades it is
  the usual binary nDCG;
* MAP@k divides by min(k, number of relevant documents), as sentence-transformers does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..errors import EmbforgeError

Ranking = Sequence[tuple[str, float]]
METRIC_NAMES = ("nDCG", "MRR", "Recall", "MAP")


def check_ks(ks: Iterable[int]) -> list[int]:
    ks = sorted(set(int(k) for k in ks))
    if not ks:
        raise EmbforgeError("k: expected at least one cut-off, e.g. 1,10,100")
    if ks[0] <= 0:
        raise EmbforgeError(f"k: every cut-off must be a positive integer, got {ks[0]}")
    return ks


def order(ranking: Ranking) -> list[tuple[str, float]]:
    """Score descending, then doc id ascending: the deterministic tie-break every metric uses."""
    return sorted(ranking, key=lambda hit: (-hit[1], hit[0]))


def dcg(gains: Sequence[float]) -> float:
    return float(sum(g / math.log2(i + 2) for i, g in enumerate(gains)))


def query_metrics(ranking: Ranking, relevant: Mapping[str, int], ks: Sequence[int]) -> dict[str, float]:
    """Every metric at every k for one query; ``relevant`` maps doc id -> grade (> 0 is relevant)."""
    grades = {d: g for d, g in relevant.items() if g > 0}
    n_rel = len(grades)
    if n_rel == 0:
        raise ValueError("a query needs at least one relevant document")
    ids = [d for d, _ in order(ranking)]
    ideal = sorted(grades.values(), reverse=True)
    out: dict[str, float] = {}
    for k in ks:
        top = ids[:k]
        hits = [grades.get(d, 0) for d in top]
        first = next((i for i, g in enumerate(hits) if g > 0), None)
        found = sum(1 for g in hits if g > 0)
        precision_sum, seen = 0.0, 0
        for i, g in enumerate(hits):
            if g > 0:
                seen += 1
                precision_sum += seen / (i + 1)
        out[f"nDCG@{k}"] = dcg(hits) / dcg(ideal[:k])
        out[f"MRR@{k}"] = 0.0 if first is None else 1.0 / (first + 1)
        out[f"Recall@{k}"] = found / n_rel
        out[f"MAP@{k}"] = precision_sum / min(k, n_rel)
    return out


def retrieval_metrics(ranked: Mapping[str, Ranking], qrels: Mapping[str, Mapping[str, int]],
                      ks: Iterable[int] = (1, 10, 100)) -> dict[str, float]:
    """Mean of each metric over the queries in ``qrels`` that have a relevant document.

    ``ranked`` maps query id -> [(doc id, score), ...] (any order; it is sorted here). Keys of the
    result look like ``"nDCG@10"``; ``"queries"`` holds how many queries were averaged.
    """
    ks = check_ks(ks)
    totals: dict[str, float] = {f"{m}@{k}": 0.0 for m in METRIC_NAMES for k in ks}
    n = 0
    for qid, relevant in qrels.items():
        if not any(g > 0 for g in relevant.values()):
            continue
        n += 1
        for name, value in query_metrics(ranked.get(qid, ()), relevant, ks).items():
            totals[name] += value
    if n == 0:
        raise EmbforgeError("qrels: no query has a relevant document (grade > 0)")
    out = {name: value / n for name, value in totals.items()}
    out["queries"] = n
    return out


def msmarco_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The reference's eval_msmarco output: MRR@1/10/100 and Recall@1/10/100 (those present)."""
    return {f"{m}@{k}": metrics[f"{m}@{k}"] for m in ("MRR", "Recall") for k in (1, 10, 100)
            if f"{m}@{k}" in metrics}


def sts_metrics(predicted: Sequence[float] | np.ndarray, gold: Sequence[float]) -> dict[str, float]:
    """Spearman and Pearson correlation between predicted similarities and gold scores."""
    from scipy.stats import pearsonr, spearmanr

    pred = np.asarray(predicted, dtype=np.float64)
    gold_arr = np.asarray(gold, dtype=np.float64)
    if pred.shape != gold_arr.shape or pred.ndim != 1:
        raise EmbforgeError(f"sts: expected two equal-length score lists, got {pred.shape} and {gold_arr.shape}")
    if len(pred) < 2:
        raise EmbforgeError("sts: need at least two pairs to correlate")
    return {"spearman": float(spearmanr(pred, gold_arr)[0]), "pearson": float(pearsonr(pred, gold_arr)[0])}
