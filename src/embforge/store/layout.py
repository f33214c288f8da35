"""What a finished store is: an ordered list of shards, each a read-only float memmap of its rows.

A shard's vectors live in ``<digest>.npy``; a sidecar ``<digest>.json`` written after it (atomically)
says the shard is complete and carries the checksum that verifies it. A store object is only ever built
from shards that exist, so every reader (search, mining, the encode command's output) sees complete
shards only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Shard:
    """Rows ``start .. start + rows`` of the store, held in ``path`` (an .npy file).

    ``digest`` is the digest of the shard's texts (which, with the store folder's key, names the
    file); ``hashes`` is an .npy of one uint64 per row (xxh3-64 of the row's text), so mining can tell
    a candidate equal to a positive without the candidate's text in memory.
    """

    start: int
    rows: int
    path: Path | None
    digest: str
    hashes: Path | None = None
    array: np.ndarray | None = None  # an in-memory shard (see EmbeddingStore.from_array)

    @property
    def stop(self) -> int:
        return self.start + self.rows


@dataclass(frozen=True)
class EmbeddingStore:
    """The vectors of one text source under one model: ``n_rows x dim`` in ``dtype`` across shards."""

    root: Path
    shards: tuple[Shard, ...]
    dim: int
    dtype: str = "float32"

    @property
    def n_rows(self) -> int:
        return self.shards[-1].stop if self.shards else 0

    @classmethod
    def from_array(cls, matrix: np.ndarray, shard_rows: int | None = None) -> EmbeddingStore:
        """A store over vectors already in memory (a test, a small corpus, codes computed elsewhere), so
        they are searched by the same code as a store on disk."""
        matrix = np.asarray(matrix)
        step = shard_rows or max(matrix.shape[0], 1)
        shards = tuple(Shard(s, min(step, matrix.shape[0] - s), None, f"memory-{s}", array=matrix[s:s + step])
                       for s in range(0, matrix.shape[0], step))
        return cls(Path("<memory>"), shards, int(matrix.shape[1]), str(matrix.dtype))

    def owned(self, rank: int, world: int) -> list[int]:
        """Indices of the shards rank ``rank`` of ``world`` encodes and searches (round robin)."""
        return list(range(rank, len(self.shards), world))

    def shard_array(self, i: int) -> np.ndarray:
        """Shard ``i`` as a read-only memmap (its dtype as stored)."""
        shard = self.shards[i]
        if shard.array is not None:
            return shard.array
        assert shard.path is not None
        arr: np.ndarray = np.load(shard.path, mmap_mode="r")
        return arr

    def shard_hashes(self, i: int) -> np.ndarray:
        """The uint64 text hash of each row of shard ``i``."""
        path = self.shards[i].hashes
        if path is None:
            raise ValueError(f"{self.shards[i].path}: this shard was stored without text hashes")
        arr: np.ndarray = np.load(path, mmap_mode="r")
        return arr

    def blocks(self, block_rows: int = 65536, shard_indices: list[int] | None = None
               ) -> Iterator[tuple[int, np.ndarray]]:
        """(first global row, float32 block) over the given shards (default: all), never across a shard
        boundary, so the same rows always meet the same matrix shapes whichever rank reads them."""
        for i in range(len(self.shards)) if shard_indices is None else shard_indices:
            arr = self.shard_array(i)
            for s in range(0, arr.shape[0], block_rows):
                yield self.shards[i].start + s, np.asarray(arr[s:s + block_rows], dtype=np.float32)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """float32 rows at the given global indices (any order, repeats allowed)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((indices.shape[0], self.dim), dtype=np.float32)
        starts = np.array([s.start for s in self.shards], dtype=np.int64)
        which = np.searchsorted(starts, indices, side="right") - 1
        for i in np.unique(which):
            sel = np.flatnonzero(which == i)
            out[sel] = self.shard_array(int(i))[indices[sel] - self.shards[int(i)].start]
        return out

    def to_array(self) -> np.ndarray:
        """Every row as one in-memory float32 matrix: for corpora that fit (tests, small evaluations)."""
        out = np.empty((self.n_rows, self.dim), dtype=np.float32)
        for start, block in self.blocks():
            out[start:start + block.shape[0]] = block
        return out
