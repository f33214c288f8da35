"""Text-side conventions of decoder LLMs used as encoders: EOS, SGPT brackets, k-bit loading, adapters.

A causal model's last token is the only one that has read the whole text, so last-token pooling wants
that token to be a fixed EOS rather than whatever word the text happens to end with. GPT-2 and Llama
tokenizers add no EOS themselves; ``ensure_eos`` first teaches the tokenizer to add it (fast
tokenizers' ``add_eos_token``), which is then saved with the tokenizer so sentence-transformers and
``AutoTokenizer`` produce the same ids; only when that is impossible does the Encoder append it by hand.

SGPT's brackets mark which side a text is on for one shared model: ``specb`` wraps queries in ``[ ]``
and documents in ``{ }`` (existing vocabulary where it has them), ``speca`` starts queries with the
special token ``[SOS]`` and documents with ``{SOS}`` (new tokens, new embedding rows to train).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import EmbforgeError

BRACKET_STYLES = ("", "speca", "specb")
# style -> side -> (opening, closing) strings
_BRACKETS = {
    "speca": {"query": ("[SOS]", ""), "passage": ("{SOS}", "")},
    "specb": {"query": ("[", "]"), "passage": ("{", "}")},
}


def check_bracket_style(style: str | None) -> str:
    style = style or ""
    if style not in BRACKET_STYLES:
        raise EmbforgeError(f"brackets must be 'speca', 'specb' or empty, got {style!r}")
    return style


def _ends_with_eos(tokenizer: Any) -> bool:
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[-1] == tokenizer.eos_token_id


def ensure_eos(tokenizer: Any) -> bool:
    """Make every tokenised text end with EOS; True when the caller must append it by hand."""
    if tokenizer.eos_token_id is None:
        raise EmbforgeError("append_eos: the tokenizer has no eos_token; set one or turn append_eos off")
    if _ends_with_eos(tokenizer):
        return False
    if hasattr(type(tokenizer), "add_eos_token"):
        try:
            tokenizer.add_eos_token = True
        except (AttributeError, ValueError, TypeError):
            pass
        else:
            if _ends_with_eos(tokenizer):
                return False
            tokenizer.add_eos_token = False
    return True


def special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after a text (e.g. [BOS] and [] or [CLS] and [SEP])."""
    probe = "a"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare):])
    return [], []


def _single_id(tokenizer: Any, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
        return int(ids[0])
    return None


def ensure_brackets(tokenizer: Any, towers: list[nn.Module], style: str) -> dict[str, tuple[list[int], list[int]]]:
    """Token ids of the style's opening/closing marks per side, adding tokens the vocabulary lacks.

    Added tokens get new embedding rows in every tower (resized once; a reload finds them in the
    saved tokenizer and model, so ids stay stable).
    """
    if not style:
        return {}
    marks = {m for pair in _BRACKETS[style].values() for m in pair if m}
    missing = sorted(m for m in marks if _single_id(tokenizer, m) is None)
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        for tower in towers:
            old_rows = tower.get_input_embeddings().weight.shape[0]
            if old_rows < len(tokenizer):
                tower.resize_token_embeddings(len(tokenizer))
                _spread_new_rows(tower.get_input_embeddings().weight, old_rows)

    def one_token(mark: str) -> list[int] | None:
        """[id] of a mark the tokenizer keeps whole, [] for no mark, None when it splits the mark."""
        if not mark:
            return []
        token = _single_id(tokenizer, mark)
        return None if token is None else [token]

    out: dict[str, tuple[list[int], list[int]]] = {}
    for side, (opening, closing) in _BRACKETS[style].items():
        opening_ids, closing_ids = one_token(opening), one_token(closing)
        if opening_ids is None or closing_ids is None:
            raise EmbforgeError(f"brackets {style}: the tokenizer cannot encode {opening!r}/{closing!r} as one token")
        out[side] = (opening_ids, closing_ids)
    return out


def _spread_new_rows(weight: torch.Tensor, start: int) -> None:
    """Give added tokens distinct embeddings around the vocabulary's mean.

    transformers initialises new rows to the mean embedding, which makes every added bracket the same
    vector, so queries and documents would look alike until training separates them. A fixed seed
    keeps the initialisation reproducible.
    """
    with torch.no_grad():
        old = weight[:start].float()
        gen = torch.Generator().manual_seed(start)
        noise = torch.randn((weight.shape[0] - start, weight.shape[1]), generator=gen)
        weight[start:] = (old.mean(0) + noise * old.std(0)).to(weight.dtype)


def kbit_load_kwargs(bits: int) -> dict[str, Any]:
    """from_pretrained arguments for 4- or 8-bit loading; a clear error where that cannot work."""
    if bits not in (4, 8):
        raise EmbforgeError(f"--load_kbit must be 4 or 8, got {bits}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise EmbforgeError(f"--load_kbit {bits} needs the bitsandbytes package (pip install bitsandbytes), "
                            "which is not installed here")
    if not torch.cuda.is_available():
        raise EmbforgeError(f"--load_kbit {bits} needs a CUDA GPU (bitsandbytes quantisation); none is visible")
    from transformers import BitsAndBytesConfig

    if bits == 4:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": quant, "device_map": {"": torch.cuda.current_device()}}


def adapter_base_path(folder: Path) -> str | None:
    """The base model of a LoRA adapter-only folder (no full weights beside adapter_config.json)."""
    config = folder / "adapter_config.json"
    if not config.exists() or any((folder / n).exists() for n in ("model.safetensors", "model.safetensors.index.json",
                                                                  "pytorch_model.bin")):
        return None
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except json.JSONDecodeError as exc:
        raise EmbforgeError(f"{config}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not base:
        raise EmbforgeError(f"{config}: an adapter-only folder needs base_model_name_or_path")
    if not Path(base).exists():
        raise EmbforgeError(f"{config}: the base model {base!r} of this LoRA adapter is not a local folder "
                            "(offline); save with the adapter merged instead")
    return str(base)
