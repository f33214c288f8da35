"""Retrieval/STS metrics against values worked out by hand, and exact search against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embforge.errors import EmbforgeError
from embforge.evaluation.metrics import msmarco_metrics, retrieval_metrics, sts_metrics
from embforge.evaluation.search import exact_search

# q1: relevant a (grade 1) and c (grade 2), ranked a, b, c, d.  q2: relevant x, ranked third.
RANKED = {
    "q1": [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.1)],
    "q2": [("x", 0.3), ("y", 0.5), ("z", 0.4)],  # unsorted on purpose: the metric sorts
}
QRELS = {"q1": {"a": 1, "c": 2, "d": 0}, "q2": {"x": 1}}


def test_metrics_match_hand_computation():
    m = retrieval_metrics(RANKED, QRELS, ks=[1, 3])
    inv_log3 = 1 / math.log2(3)
    # q1 @1: DCG 1, IDCG 2 -> 0.5.  q2 @1: 0.
    assert m["nDCG@1"] == pytest.approx((0.5 + 0.0) / 2)
    # q1 @3: DCG 1 + 0 + 2/log2(4) = 2, IDCG 2 + 1/log2(3).  q2 @3: DCG 1/log2(4) = 0.5, IDCG 1.
    assert m["nDCG@3"] == pytest.approx((2 / (2 + inv_log3) + 0.5) / 2)
    assert m["MRR@1"] == pytest.approx(0.5)
    assert m["MRR@3"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["Recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["Recall@3"] == pytest.approx(1.0)
    # MAP@k divides by min(k, #relevant): q1 @3 (1/1 + 2/3) / 2; q2 @3 (1/3) / 1.
    assert m["MAP@1"] == pytest.approx(0.5)
    assert m["MAP@3"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 3) / 2)
    assert m["queries"] == 2


def test_ties_break_by_doc_id_and_missing_rankings_score_zero():
    qrels = {"q": {"a": 1}, "lost": {"a": 1}, "nothing": {"a": 0}}
    m = retrieval_metrics({"q": [("b", 0.5), ("a", 0.5)]}, qrels, ks=[1])
    # "a" < "b" wins the tie; "lost" has no ranking (0); "nothing" has no relevant doc (skipped)
    assert m["MRR@1"] == pytest.approx(0.5)
    assert m["queries"] == 2


def test_msmarco_block_has_reference_keys():
    m = retrieval_metrics(RANKED, QRELS, ks=[1, 10, 100])
    assert list(msmarco_metrics(m)) == ["MRR@1", "MRR@10", "MRR@100", "Recall@1", "Recall@10", "Recall@100"]


@pytest.mark.parametrize("ks", [[0], [-3, 10], []])
def test_bad_k_is_a_clear_error(ks):
    with pytest.raises(EmbforgeError, match="k"):
        retrieval_metrics(RANKED, QRELS, ks=ks)


def test_sts_metrics():
    out = sts_metrics([0.1, 0.4, 0.35, 0.8], [1, 2, 3, 4])
    assert out["spearman"] == pytest.approx(0.8)  # one swapped pair: 1 - 6*2/(4*15)
    assert out["pearson"] == pytest.approx(np.corrcoef([0.1, 0.4, 0.35, 0.8], [1, 2, 3, 4])[0, 1])


def test_exact_search_matches_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(257, 8)).astype(np.float32)
    queries = rng.normal(size=(19, 8)).astype(np.float32)
    ids = [f"d{i:03d}" for i in range(257)]
    got = exact_search(queries, docs, ids, k=10, query_chunk=4, doc_chunk=50)
    scores = queries @ docs.T
    for row, hits in zip(scores, got):
        assert [h[0] for h in hits] == [ids[j] for j in np.argsort(-row)[:10]]
        assert [h[1] for h in hits] == pytest.approx(sorted(row, reverse=True)[:10], rel=1e-5)


def test_exact_search_ties_are_deterministic():
    docs = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]], dtype=np.float32)
    ids = ["e", "c", "a", "d", "b", "z"]
    for chunk in (1, 2, 6):
        hits = exact_search(np.array([[1.0, 0.0]], dtype=np.float32), docs, ids, k=3, doc_chunk=chunk)[0]
        assert [h[0] for h in hits] == ["a", "b", "c"]


def test_exact_search_rejects_empty_corpus_and_bad_k():
    with pytest.raises(EmbforgeError, match="empty"):
        exact_search(np.zeros((1, 2), np.float32), np.zeros((0, 2), np.float32), [], k=1)
    with pytest.raises(EmbforgeError, match="positive"):
        exact_search(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32), ["a"], k=0)
