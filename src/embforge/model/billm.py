"""BiLLM: bidirectional attention in a decoder LLM from a chosen layer on.

A decoder's model class builds one causal mask (``transformers.masking_utils.create_causal_mask``) and
hands it to every decoder layer as ``attention_mask``; SDPA and flash attention fall back to the
attention module's ``is_causal`` flag when that mask is ``None`` (no padding). BiLLM keeps the layers
before ``start_index`` untouched and, from ``start_index`` on, (1) sets ``self_attn.is_causal = False``
and (2) replaces the layer's mask with the bidirectional padding mask derived from the causal one.

The padding mask is read off the causal mask's last query row: that row may see every key up to the
end, so the keys it may not see are exactly the padding, whichever side it is on. Both the boolean
masks of SDPA and the additive float masks of eager attention are handled; flash attention receives
a 2-D padding mask (already bidirectional) and needs only the flag.

Hooks are plain module-level functions without state, so ``deepcopy`` (asymmetric towers), peft
wrapping and LoRA merging keep them working. The setting lives in ``EncoderConfig.billm_start_index``
and is re-applied at load; a folder loaded without embforge (AutoModel, sentence-transformers) is
causal again, which is why such folders are not promised equal vectors.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
from torch import nn

from ..errors import EmbforgeError

ENV_START_INDEX = "BiLLM_START_INDEX"
_HOOK_FLAG = "_embforge_billm"


def start_index_from_env(default: int | None = None) -> int | None:
    """``BiLLM_START_INDEX`` as the reference scripts read it, or ``default`` when unset."""
    raw = os.environ.get(ENV_START_INDEX)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise EmbforgeError(f"{ENV_START_INDEX}={raw!r}: expected a layer index (an integer)") from exc


def _base(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper, if any."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The stack of decoder layers of a Llama/Qwen/Mistral (``layers``) or GPT-2/GPT-Neo (``h``) model."""
    base = _base(model)
    for owner in (base, getattr(base, "model", None), getattr(base, "transformer", None)):
        if owner is None:
            continue
        for name in ("layers", "h"):
            stack = getattr(owner, name, None)
            if isinstance(stack, nn.ModuleList) and len(stack) > 0:
                return list(stack)
    raise EmbforgeError(f"BiLLM: cannot find the decoder layers of {type(base).__name__} "
                        "(expected a Llama/Qwen/Mistral-style `layers` or GPT-2-style `h` list)")


def _attention(layer: nn.Module) -> nn.Module:
    for name in ("self_attn", "attn", "attention"):
        module = getattr(layer, name, None)
        if isinstance(module, nn.Module) and hasattr(module, "is_causal"):
            return module
    raise EmbforgeError(f"BiLLM: {type(layer).__name__} has no attention module with an `is_causal` flag")


def bidirectional_from_causal(mask: Any) -> Any:
    """The padding-only version of a 4-D causal mask (bool: True = attend; float: 0 = attend)."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        return mask  # None (no padding) or a 2-D flash-attention padding mask: nothing causal in it
    last_row = mask[:, :, -1:, :]
    return last_row.expand(-1, -1, mask.shape[2], -1)


def _attention_mask_position(layer: nn.Module) -> int | None:
    names = [p for p in inspect.signature(layer.forward).parameters if p != "self"]
    return names.index("attention_mask") if "attention_mask" in names else None


def _bidirectional_pre_hook(layer: nn.Module, args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if "attention_mask" in kwargs:
        kwargs["attention_mask"] = bidirectional_from_causal(kwargs["attention_mask"])
        return args, kwargs
    pos = getattr(layer, "_embforge_mask_pos", None)
    if pos is not None and len(args) > pos:
        args = (*args[:pos], bidirectional_from_causal(args[pos]), *args[pos + 1:])
    return args, kwargs


def apply_billm(model: nn.Module, start_index: int) -> int:
    """Make layers ``start_index..`` bidirectional; returns how many layers changed. Idempotent."""
    layers = decoder_layers(model)
    if not 0 <= start_index < len(layers):
        raise EmbforgeError(f"--billm_start_index {start_index}: this model has {len(layers)} decoder layers "
                            f"(valid: 0..{len(layers) - 1})")
    attn_impl = getattr(_base(model).config, "_attn_implementation", None)
    if attn_impl == "flex_attention":
        raise EmbforgeError("BiLLM does not support attn_implementation='flex_attention'; use sdpa or eager")
    changed = 0
    for layer in layers[start_index:]:
        _attention(layer).is_causal = False
        if getattr(layer, _HOOK_FLAG, False):
            continue
        layer._embforge_mask_pos = _attention_mask_position(layer)
        layer.register_forward_pre_hook(_bidirectional_pre_hook, with_kwargs=True)
        setattr(layer, _HOOK_FLAG, True)
        changed += 1
    return changed
