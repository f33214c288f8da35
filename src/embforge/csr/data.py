"""Training data for CSR: the embeddings npz, read memory-mapped, plus optional labels and pairs.

npz keys (embforge's ``csr embed`` writes them; other names are accepted, see data/npz.py):

* ``embeddings`` (N, d) float — or the reference's ``data``;
* ``labels`` (N,) ints or strings — optional, for the label-contrastive term;
* ``ids`` (N,) — optional, carried into ``csr encode``'s output;
* ``queries`` (Q, d) + ``pair_index`` (Q,) — optional pairs: query q is relevant to row
  ``pair_index[q]`` (the contrastive term's positives);
* ``pair_embeddings`` (N, d) — optional pairs aligned with the rows (row i's positive).

Batches gather their rows from the memory map one batch at a time, so a 1M x 768 float32 file
(3 GB) trains with the file plus one batch in memory, never a second copy of the matrix.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.npz import EmbeddingSet, load_npz, mapped_member
from ..errors import EmbforgeError


@dataclass
class PairSet:
    """Query embeddings and, for each, the row of its relevant document in the main matrix."""

    queries: np.ndarray
    doc_rows: np.ndarray

    def __len__(self) -> int:
        return int(self.queries.shape[0])


@dataclass
class TrainData:
    embeddings: EmbeddingSet
    labels: np.ndarray | None  # int64 class ids, or None
    pairs: PairSet | None

    @property
    def dim(self) -> int:
        return self.embeddings.dim

    def __len__(self) -> int:
        return len(self.embeddings)


def _member(path: Path, key: str) -> np.ndarray:
    with zipfile.ZipFile(path) as zf:
        mapped = mapped_member(path, zf, f"{key}.npy")
    if mapped is not None:
        return mapped
    with np.load(path, allow_pickle=False) as archive:
        return np.asarray(archive[key])


def load_train_data(path: str | Path) -> TrainData:
    """Read and check everything before a step runs; errors name the file and the key."""
    path = Path(path)
    emb = load_npz(path)
    labels = None
    if emb.labels is not None:
        lab = np.asarray(emb.labels)
        if lab.ndim != 1:
            raise EmbforgeError(f"{path}: 'labels' must be 1-D (one label per row), got shape {lab.shape}")
        _, labels = np.unique(lab, return_inverse=True)
        labels = labels.astype(np.int64)
    pairs = None
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
        n = len(emb)
        if "queries" in keys or "pair_index" in keys:
            if not {"queries", "pair_index"} <= keys:
                raise EmbforgeError(f"{path}: pairs need both 'queries' and 'pair_index' (found only one)")
            queries = _member(path, "queries")
            index = np.asarray(_member(path, "pair_index")).astype(np.int64)
            if queries.ndim != 2 or queries.shape[1] != emb.dim:
                raise EmbforgeError(f"{path}: 'queries' must be (Q, {emb.dim}), got shape {queries.shape}")
            if index.shape != (queries.shape[0],) or (index.size and (index.min() < 0 or index.max() >= n)):
                raise EmbforgeError(f"{path}: 'pair_index' must hold one row number in 0..{n - 1} per query")
            pairs = PairSet(queries, index)
        elif "pair_embeddings" in keys:
            partner = _member(path, "pair_embeddings")
            if partner.shape != (n, emb.dim):
                raise EmbforgeError(f"{path}: 'pair_embeddings' must have the shape of the embeddings "
                                    f"({n}, {emb.dim}), got {partner.shape}")
            pairs = PairSet(partner, np.arange(n))
    return TrainData(emb, labels, pairs)


def rows(matrix: np.ndarray, index: np.ndarray) -> np.ndarray:
    """float32 copy of the given rows only; sorted reads keep memory-mapped access sequential."""
    order = np.argsort(index, kind="stable")
    out = np.empty((len(index), matrix.shape[1]), dtype=np.float32)
    out[order] = matrix[index[order]]
    return out


def batches(n: int, batch_size: int, rng: np.random.Generator, drop_last: bool = False) -> Iterator[np.ndarray]:
    perm = rng.permutation(n)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield perm[start:start + batch_size]
