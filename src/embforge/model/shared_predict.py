"""Cross-encoder scores for a list of pairs, shared out among the ranks under ``torchrun``.

Every rank calls :func:`predict_shared` with the same pairs (as every rank runs the same mining or
evaluation code); rank ``r`` scores the ``r``-th contiguous slice and the slices are all-gathered, so
every rank returns every score, in input order, as one process computing them all would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..store import ranks
from .cross_encoder import CrossEncoder, Pair


def predict_shared(reranker: CrossEncoder, pairs: Sequence[Pair], batch_size: int = 32,
                   show_progress_bar: bool | None = None) -> np.ndarray:
    """``reranker.predict(pairs)`` (raw logits, float32), split across the ranks when there are several."""
    rank, world = ranks.join()
    if world <= 1:
        return reranker.predict(pairs, batch_size=batch_size, show_progress_bar=show_progress_bar)
    n = len(pairs)
    bounds = [n * r // world for r in range(world + 1)]
    width = max(bounds[r + 1] - bounds[r] for r in range(world))
    mine = np.zeros(width, dtype=np.float32)  # padded to one shape: all_gather needs equal arrays
    own = pairs[bounds[rank]:bounds[rank + 1]]
    if own:
        mine[:len(own)] = reranker.predict(own, batch_size=batch_size,
                                           show_progress_bar=show_progress_bar and rank == 0)
    parts = ranks.all_gather_array(mine)
    return np.concatenate([parts[r][:bounds[r + 1] - bounds[r]] for r in range(world)]).astype(np.float32)
