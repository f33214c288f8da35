"""Token embeddings -> one vector per text.

All modes locate real tokens through the attention mask, so they are correct under left padding
(decoder LLMs) as well as right padding (BERT-like models).
"""

from __future__ import annotations

import torch

POOLING_MODES = ("cls", "mean", "weightedmean", "lasttoken")
POOLING_ALIASES = {"first": "cls", "cls_token": "cls", "average": "mean", "avg": "mean",
                   "last": "lasttoken", "eos": "lasttoken", "weighted_mean": "weightedmean"}


def canonical_pooling(name: str) -> str:
    from ..errors import EmbforgeError

    mode = POOLING_ALIASES.get(name, name)
    if mode not in POOLING_MODES:
        raise EmbforgeError(f"unknown pooling {name!r}: expected one of {', '.join(POOLING_MODES)}")
    return mode


def _first_real(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first non-padding token (the number of left pads)."""
    return mask.to(torch.int32).argmax(dim=1)


def _last_real(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-padding token, whichever side the padding is on."""
    seq_len = mask.shape[1]
    return seq_len - 1 - mask.to(torch.int32).flip(1).argmax(dim=1)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``hidden`` (batch, seq, dim) under ``mask`` (batch, seq) with one of POOLING_MODES.

    ``weightedmean`` is SGPT's position-weighted mean: the i-th real token gets weight i, so later
    tokens, which in a causal model have seen more of the text, count more.
    """
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode == "cls":
        return hidden[rows, _first_real(mask)]
    if mode == "lasttoken":
        return hidden[rows, _last_real(mask)]
    acc = torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype
    m = mask.to(acc).unsqueeze(-1)
    if mode == "mean":
        summed = (hidden.to(acc) * m).sum(dim=1)
        return (summed / m.sum(dim=1).clamp(min=1e-9)).to(hidden.dtype)
    if mode == "weightedmean":
        positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=acc).view(1, -1, 1)
        weights = (positions - _first_real(mask).to(acc).view(-1, 1, 1)) * m
        summed = (hidden.to(acc) * weights).sum(dim=1)
        return (summed / weights.sum(dim=1).clamp(min=1e-9)).to(hidden.dtype)
    raise ValueError(f"unknown pooling mode {mode!r}")
