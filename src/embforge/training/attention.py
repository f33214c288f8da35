"""Attention for training on CPU: the same maths and the same dropout masks as ``sdpa``, fewer passes.

With dropout on, torch's CPU ``scaled_dot_product_attention`` has no fused kernel and runs its
composite "math" path, which over the (batch, heads, length, length) score tensor makes about a
dozen full passes: the boolean mask turned into an additive one, a "safe" softmax (softmax, then
``isneginf``/``all``/``where`` for rows with nothing to attend to), a float keep mask, its division
by 1 - p and the product, each with its own backward pass. Here the padding bias is added once to
the scores from its small broadcast form, the softmax is the plain one (a row with no key to attend to is
impossible for right/left padded text: every text keeps at least one token; the mask is checked
on its small (batch, 1, q, k) form and the composite path is used otherwise), the keep mask is
drawn as booleans with the same ``bernoulli_`` call on the same generator (so the very same
elements are dropped) and 1 / (1 - p) scales the (length x head_dim) output instead of the
(length x length) probabilities. Without dropout, or off CPU, it is ``sdpa`` itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

NAME = "embforge_sdpa"


def attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else bool(getattr(module, "is_causal", False))
    # Compiled graphs fuse sdpa's composite path themselves, and the mask check below would break the graph.
    plain = (dropout == 0.0 or query.device.type != "cpu" or torch.compiler.is_compiling() or kwargs.get("position_bias") is not None
             or getattr(module, "num_key_value_groups", 1) > 1 or query.dim() != 4
             or key.shape[-1] != value.shape[-1] or (causal and attention_mask is None))
    if not plain and attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            plain = not bool(attention_mask.any(dim=-1).all())  # a row with no key: keep the safe softmax
        else:
            plain = True
    if plain:
        fallback: tuple[torch.Tensor, None] = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
            **kwargs)
        return fallback
    b, h, q_len, d = query.shape
    k_len = key.shape[2]
    scale = scaling if scaling is not None else d ** -0.5
    root = scale ** 0.5  # torch's math path scales q and k by sqrt(scale) each, for range
    q = (query * root).reshape(b * h, q_len, d)
    k = (key * root).reshape(b * h, k_len, d).transpose(1, 2)
    scores = torch.bmm(q, k).view(b, h, q_len, k_len)
    if attention_mask is not None:  # the additive form of the small (batch, 1, q, k) mask, broadcast once
        bias = torch.zeros(attention_mask.shape, dtype=scores.dtype, device=scores.device)
        scores = scores + bias.masked_fill_(~attention_mask, float("-inf"))
    probs = scores.softmax(dim=-1)
    keep = torch.empty(probs.shape, dtype=torch.bool, device=probs.device).bernoulli_(1.0 - dropout)
    out = torch.matmul(probs * keep, value) * (1.0 / (1.0 - dropout))
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)


@contextlib.contextmanager
def training_attention(towers: list[nn.Module]) -> Iterator[None]:
    """Run ``towers`` that use ``sdpa`` with :func:`attention_forward` inside the block."""
    register()
    switched = []
    for tower in towers:
        config = getattr(tower, "config", None)
        if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
            config._attn_implementation = NAME
            switched.append(config)
    try:
        yield
    finally:
        for config in switched:
            config._attn_implementation = "sdpa"


def set_attention_dropout(towers: list[nn.Module], p: float) -> int:
    """Set the dropout on attention probabilities (not on hidden states) of every attention module in
    ``towers`` to ``p``; returns how many modules changed. Off (0) lets ``sdpa`` take its fused kernel,
    which changes the training (``--attention_dropout`` is opt-in)."""
    changed = 0
    for tower in towers:
        for module in tower.modules():
            if not type(module).__name__.endswith("Attention"):
                continue
            if isinstance(getattr(module, "dropout", None), nn.Dropout):
                module.dropout.p = p
                changed += 1
            elif isinstance(getattr(module, "attention_dropout", None), float):
                module.attention_dropout = p
                changed += 1
    return changed
