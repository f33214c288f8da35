"""k annealing (CSRv2): start with more active latents, so more of them learn, then tighten to k."""

from __future__ import annotations

from ..errors import EmbforgeError


def k_at(step: int, total_steps: int, topk: int, initial_topk: int | None = None, decay_ratio: float = 0.0) -> int:
    """k for ``step`` (0-based): linear from ``initial_topk`` to ``topk`` over the first
    ``decay_ratio`` of ``total_steps``, rounded to the nearest integer, then ``topk``."""
    if initial_topk is None or initial_topk == topk or decay_ratio <= 0:
        return topk
    decay_steps = decay_ratio * total_steps
    if decay_steps <= 0 or step >= decay_steps:
        return topk
    return int(round(initial_topk + (topk - initial_topk) * step / decay_steps))


def check_schedule(topk: int, hidden_size: int, initial_topk: int | None, decay_ratio: float) -> None:
    if initial_topk is not None and not 0 < initial_topk <= hidden_size:
        raise EmbforgeError(f"--initial_topk must be between 1 and hidden_size ({hidden_size}), got {initial_topk}")
    if not 0.0 <= decay_ratio <= 1.0:
        raise EmbforgeError(f"--k_decay_ratio must be between 0 and 1, got {decay_ratio}")
