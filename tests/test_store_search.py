"""The store's exact search against brute force, its tie rule, Matryoshka truncation, stores on disk, and
the FAISS index path with its recall."""

from __future__ import annotations

import numpy as np
import pytest

from embforge.errors import EmbforgeError
from embforge.store import EmbeddingStore, Shard
from embforge.store.index import estimate_recall, index_search, recall_at_k
from embforge.store.search import TopK, search

RNG = np.random.default_rng(0)
# small integers: every dot product is exact in float32 whatever the blocking, and ties are everywhere
DOCS = RNG.integers(-2, 3, size=(97, 6)).astype(np.float32)
QUERIES = RNG.integers(-2, 3, size=(23, 6)).astype(np.float32)
TIE = RNG.permutation(97)


def brute(queries, docs, k, tie):
    scores = (queries.astype(np.float64) @ docs.T.astype(np.float64))
    return np.stack([np.lexsort((tie, -row))[:min(k, docs.shape[0])] for row in scores])


@pytest.mark.parametrize("query_block,doc_block,shard_rows,k", [
    (5, 13, 40, 10), (1, 1, 1, 4), (1024, 65536, None, 97), (7, 30, 17, 200), (23, 97, 97, 1), (4, 16, 33, 96)])
def test_search_equals_brute_force_with_the_tie_rule(query_block, doc_block, shard_rows, k):
    store = EmbeddingStore.from_array(DOCS, shard_rows)
    for tie in (TIE, None):
        got = search(QUERIES, store, k, tie_rank=tie, query_block=query_block, doc_block=doc_block)
        want = brute(QUERIES, DOCS, k, np.arange(97) if tie is None else tie)
        assert got.rows.shape == (23, min(k, 97)) and got.rows.dtype == np.int64
        np.testing.assert_array_equal(got.rows, want)
        np.testing.assert_array_equal(got.scores, np.take_along_axis(QUERIES @ DOCS.T, want, 1))


def test_boundary_ties_between_duplicates_go_to_the_lowest_tie_rank():
    docs = np.array([[1, 0]] * 6 + [[2, 0], [0, 1]], dtype=np.float32)  # rows 0-5 tie for second place
    tie = np.array([5, 3, 4, 0, 2, 1, 7, 6])
    for doc_block, shard_rows in ((1, 1), (2, 3), (8, None), (3, 5)):
        got = search(np.array([[1.0, 0.0]], np.float32), EmbeddingStore.from_array(docs, shard_rows), 3,
                     tie_rank=tie, doc_block=doc_block)
        assert got.rows.tolist() == [[6, 3, 5]] and got.scores.tolist() == [[2.0, 1.0, 1.0]]


def test_dim_truncation_equals_searching_a_truncated_renormalised_copy():
    rng = np.random.default_rng(1)
    docs, queries = rng.standard_normal((150, 16)).astype(np.float32), rng.standard_normal((9, 16)).astype(np.float32)

    def cut(x):
        x = np.ascontiguousarray(x[:, :8])
        return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    got = search(queries, EmbeddingStore.from_array(docs, 40), 12, dim=8, normalize=True, doc_block=25)
    want = search(cut(queries), EmbeddingStore.from_array(cut(docs), 40), 12, doc_block=25)
    np.testing.assert_array_equal(got.rows, want.rows)
    np.testing.assert_array_equal(got.scores, want.scores)
    assert np.abs(want.scores).max() <= 1.0 + 1e-6


def test_memmapped_store_on_disk_equals_the_in_memory_one(tmp_path):
    shards, start = [], 0
    for i, rows in enumerate((30, 1, 50, 16)):
        np.save(tmp_path / f"s{i}.npy", DOCS[start:start + rows])
        shards.append(Shard(start, rows, tmp_path / f"s{i}.npy", f"s{i}"))
        start += rows
    disk = EmbeddingStore(tmp_path, tuple(shards), 6)
    got = search(QUERIES, disk, 15, tie_rank=TIE, doc_block=20)
    want = search(QUERIES, EmbeddingStore.from_array(DOCS), 15, tie_rank=TIE)
    np.testing.assert_array_equal(got.rows, want.rows)
    np.testing.assert_array_equal(got.scores, want.scores)


def test_bad_requests_are_user_errors():
    with pytest.raises(EmbforgeError, match="k must be a positive integer"):
        search(QUERIES, EmbeddingStore.from_array(DOCS), 0)
    with pytest.raises(EmbforgeError, match="store is empty"):
        search(QUERIES, EmbeddingStore.from_array(np.zeros((0, 6), np.float32)), 3)


def clustered(n, seed):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, 32)).astype(np.float32)
    x = centers[rng.integers(0, 64, n)] + 0.4 * rng.standard_normal((n, 32))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # unit vectors, as embeddings are


DENSE, DENSE_Q = clustered(3000, 2), clustered(60, 3)


def test_flat_index_equals_exact_search_across_blocks_and_shards():
    store = EmbeddingStore.from_array(DENSE, 700)
    exact = search(DENSE_Q, store, 20)
    got = index_search(DENSE_Q, store, 20, "Flat", add_block=256)
    np.testing.assert_array_equal(got.rows, exact.rows)
    np.testing.assert_allclose(got.scores, exact.scores, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("factory,nprobe,ef", [("HNSW32", None, 256), ("IVF16,Flat", 16, None)])
def test_approximate_indexes_recall_exact_search(factory, nprobe, ef):
    store = EmbeddingStore.from_array(DENSE, 1000)
    exact = search(DENSE_Q, store, 20)
    got = index_search(DENSE_Q, store, 20, factory, nprobe=nprobe, ef_search=ef)
    assert recall_at_k(got, exact) >= 0.99
    assert estimate_recall(DENSE_Q, store, 20, got, sample=25) >= 0.99
    # the setting is what gives the recall: one list of sixteen, or a narrow walk, misses neighbours
    assert recall_at_k(index_search(DENSE_Q, store, 20, factory, nprobe=nprobe and 1, ef_search=ef and 4),
                       exact) < 0.9


def test_recall_at_k_by_hand():
    exact = TopK(np.zeros((2, 3), np.float32), np.array([[1, 2, 3], [4, 5, 6]]))
    approx = TopK(np.zeros((2, 3), np.float32), np.array([[3, 1, 9], [6, -1, -1]]))
    assert recall_at_k(approx, exact) == pytest.approx((2 / 3 + 1 / 3) / 2)
    queries = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], np.float32)  # exact: rows 0-2, rows 3-5
    store = EmbeddingStore.from_array(np.eye(6, dtype=np.float32))
    found = TopK(np.ones((2, 3), np.float32), np.array([[2, 0, 1], [0, 1, 2]]))  # right, then all wrong
    assert estimate_recall(queries, store, 3, found, sample=2) == 0.5
    one = estimate_recall(queries, store, 3, found, sample=1, seed=4)
    assert one in (0.0, 1.0) and estimate_recall(queries, store, 3, found, sample=1, seed=4) == one


def test_bad_factory_and_too_few_rows_to_train_are_user_errors():
    store = EmbeddingStore.from_array(DENSE[:100])
    with pytest.raises(EmbforgeError, match=r"'IVF16,Blat'.*IVF4096,Flat"):
        index_search(DENSE_Q, store, 5, "IVF16,Blat")
    with pytest.raises(EmbforgeError, match=r"'IVF256,Flat' needs at least 256 rows to train, the store has 100"):
        index_search(DENSE_Q, store, 5, "IVF256,Flat")
