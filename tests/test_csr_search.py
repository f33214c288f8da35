"""Sparse retrieval: the inverted index returns what brute-force dot products over dense codes return."""

import numpy as np

from embforge.csr.sparse import SparseCodes
from embforge.evaluation.sparse import InvertedIndex


def random_codes(n, hidden, k, seed):
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(hidden, k, replace=False) for _ in range(n)]).astype(np.int32)
    val = rng.random((n, k)).astype(np.float32)
    val[:, -1] = 0.0  # a selected latent that ReLU zeroed: kept in the arrays, absent from the index
    return SparseCodes(idx, val, hidden)


def test_inverted_index_matches_brute_force():
    docs, queries = random_codes(500, 120, 6, 0), random_codes(25, 120, 6, 1)
    ids = [f"d{i:04d}" for i in range(500)]
    index = InvertedIndex(docs, ids)
    assert index.postings.nnz == 500 * 5
    scores = queries.dense() @ docs.dense().T
    np.testing.assert_allclose(index.scores(queries), scores, rtol=1e-5, atol=1e-6)
    ranked = index.search(queries, 10)
    for q in range(25):
        order = sorted(range(500), key=lambda j: (-scores[q, j], ids[j]))[:10]
        assert [d for d, _ in ranked[q]] == [ids[j] for j in order]
        fast = index.query_one(queries.indices[q], queries.values[q], 10)
        np.testing.assert_allclose(scores[q, fast], scores[q, order], rtol=1e-5)


def test_codes_round_trip_through_npz(tmp_path):
    codes = random_codes(7, 50, 3, 2)
    codes.ids = np.asarray([f"x{i}" for i in range(7)])
    loaded = SparseCodes.load(codes.save(tmp_path / "c.npz"))
    np.testing.assert_array_equal(loaded.indices, codes.indices)
    np.testing.assert_array_equal(loaded.values, codes.values)
    assert loaded.hidden_size == 50 and loaded.ids.tolist() == codes.ids.tolist()
