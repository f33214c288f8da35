"""GradCache (Gao et al., 2021): a large contrastive batch at the activation memory of a small one.

1. Embed the batch chunk by chunk without a graph, recording each chunk's RNG state.
2. Compute the loss on the detached embeddings and back-propagate only to them: the gradient of
   the loss with respect to every embedding, for the whole batch.
3. Re-embed chunk by chunk with a graph (same RNG state, so dropout masks match) and back-propagate
   each chunk's cached embedding gradient into the weights.

The weights' gradient equals plain training on the full batch; the price is a second forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

Features = dict[str, torch.Tensor]


class _RngState:
    """CPU and CUDA RNG state, so a re-run chunk draws the same dropout masks."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if self.cuda else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def chunk_bounds(lengths: list[int], chunk_size: int | None, chunk_tokens: int | None) -> list[tuple[int, int]]:
    """(start, end) row ranges, in order: at most ``chunk_size`` rows and, with ``chunk_tokens``, at most that
    many padded tokens (rows x the chunk's longest text; a single longer text still gets its own chunk).
    A token budget gives short texts (queries) bigger chunks than long ones at the same memory."""
    bounds, start, longest = [], 0, 0
    for row, length in enumerate(lengths):
        wider = max(longest, length)
        full = (chunk_size is not None and row - start >= chunk_size) or \
            (chunk_tokens is not None and row > start and (row - start + 1) * wider > chunk_tokens)
        if full:
            bounds.append((start, row))
            start, wider = row, length
        longest = wider
    if start < len(lengths):
        bounds.append((start, len(lengths)))
    return bounds


def split_features(features: Features, chunk_size: int | None, chunk_tokens: int | None = None) -> list[Features]:
    """Row chunks of a padded batch (see :func:`chunk_bounds`), each trimmed to its own longest text to save
    compute."""
    lengths = [int(n) for n in features["attention_mask"].sum(dim=1).tolist()]
    chunks = []
    for start, end in chunk_bounds(lengths, chunk_size, chunk_tokens):
        part = {k: v[start:end] for k, v in features.items()}
        keep = part["attention_mask"].sum(dim=0) > 0  # columns that are padding in every row
        chunks.append({k: v[:, keep] for k, v in part.items()})
    return chunks


def gradcache_step(embed: Callable[[Features, bool], torch.Tensor], queries: Features, passages: Features,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], chunk_size: int | None,
                   no_sync: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
                   loss_scale: float = 1.0, chunk_tokens: int | None = None) -> torch.Tensor:
    """Run forward and backward for one batch; returns the (unscaled) loss, detached.

    ``embed(features, is_query)`` must be the (possibly DDP-wrapped) model call. ``no_sync`` is the
    DDP context that suppresses gradient all-reduce; every chunk's backward but the last runs under
    it, so gradients are synchronised once per step. ``loss_scale`` divides for gradient
    accumulation. ``chunk_tokens`` bounds each chunk's padded tokens as well (or alone, without
    ``chunk_size``); the gradient does not depend on the chunking (up to dropout's draws).
    """
    query_chunks = split_features(queries, chunk_size, chunk_tokens)
    passage_chunks = split_features(passages, chunk_size, chunk_tokens)
    sides = [(c, True) for c in query_chunks] + [(c, False) for c in passage_chunks]

    reps, states = [], []
    with torch.no_grad():
        for features, is_query in sides:
            states.append(_RngState())
            reps.append(embed(features, is_query))
    n_q = len(query_chunks)
    q = torch.cat(reps[:n_q]).detach().requires_grad_(True)
    p = torch.cat(reps[n_q:]).detach().requires_grad_(True)
    loss = loss_fn(q, p)
    (loss * loss_scale).backward()
    grads = list(q.grad.split([r.shape[0] for r in reps[:n_q]])) + list(p.grad.split([r.shape[0] for r in reps[n_q:]]))

    last = len(sides) - 1
    for i, ((features, is_query), state, grad) in enumerate(zip(sides, states, grads)):
        sync = contextlib.nullcontext() if (no_sync is None or i == last) else no_sync()
        with sync, state.restored():
            emb = embed(features, is_query)
            emb.backward(gradient=grad)
    return loss.detach()
