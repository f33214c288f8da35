"""What the optimizer trains: LoRA (peft), BitFit (bias terms only), a frozen backbone with SGPT's added
linear layers, and SGPT's asymmetric (separate query/passage) towers.

Architecture changes (dense head, second tower) happen first, so LoRA, BitFit and freezing then apply
to every tower alike. Anything left with ``requires_grad`` is what the Trainer's optimizer sees.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from ..errors import EmbforgeError
from ..model.heads import sgpt_layers

if TYPE_CHECKING:  # pragma: no cover
    from ..model.encoder import Encoder
    from .config import TrainConfig

logger = logging.getLogger(__name__)


# LoRA targets per architecture: every linear map of attention and MLP, which adapts an LLM into an
# encoder better than peft's attention-only default (q/v). Unknown architectures fall back to peft's table.
LORA_TARGETS: dict[str, list[str]] = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "granite",
                     "smollm3"),
                    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neo": ["q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "mpnet"), ["query", "key", "value", "dense"]),
}


def lora_targets(model_type: str | None, explicit: list[str] | None) -> list[str] | None:
    """--lora_target_modules when given, else the table above, else None (peft decides)."""
    if explicit:
        return list(explicit)
    return LORA_TARGETS.get(model_type or "")


def top_layers(backbone: Any, count: int | None) -> dict[str, Any]:
    """LoraConfig arguments restricting LoRA to the last ``count`` decoder layers (``--lora_top_layers``)."""
    if not count:
        return {}
    from ..model.billm import decoder_layers

    total = len(decoder_layers(backbone))
    if not 0 < count <= total:
        raise EmbforgeError(f"--lora_top_layers must be between 1 and {total} (the model's layers), got {count}")
    pattern = "h" if any(name.startswith(("h.", "transformer.h.")) for name, _ in backbone.named_modules()) else "layers"
    return {"layers_to_transform": list(range(total - count, total)), "layers_pattern": pattern}


def billm_start(cfg: TrainConfig) -> int | None:
    """The first bidirectional layer asked for: --billm_start_index, else BiLLM_START_INDEX, else 0."""
    from ..model.billm import start_index_from_env

    if not getattr(cfg, "apply_billm", False):
        return None
    index = getattr(cfg, "billm_start_index", None)
    return int(index) if index is not None else start_index_from_env(0)


def llm_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """EncoderConfig overrides from the decoder-LLM flags (None = keep the model's own setting)."""
    is_llm = bool(getattr(cfg, "is_llm", False))
    out: dict[str, Any] = {
        "padding_side": getattr(cfg, "padding_side", None) or ("left" if is_llm else None),
        "append_eos": getattr(cfg, "append_eos", None),
        "billm_start_index": billm_start(cfg),
        "brackets": "speca" if getattr(cfg, "speca", False) else "specb" if getattr(cfg, "specb", False) else None,
    }
    if is_llm:
        out["append_eos"] = True if out["append_eos"] is None else out["append_eos"]
        if getattr(cfg, "pooling", None) is None:
            out["pooling"] = "lasttoken"
    return out


def validate_llm_options(cfg: TrainConfig) -> None:
    """Conflicts among the decoder-LLM flags, and k-bit loading where it cannot work, before loading."""
    if getattr(cfg, "speca", False) and getattr(cfg, "specb", False):
        raise EmbforgeError("--speca and --specb are two bracket styles: pick one")
    index = getattr(cfg, "billm_start_index", None)
    if index is not None and index < 0:
        raise EmbforgeError(f"--billm_start_index must be >= 0, got {index}")
    billm_start(cfg)  # a malformed BiLLM_START_INDEX fails here
    kbit = getattr(cfg, "load_kbit", None)
    if kbit:
        from ..model.llm import kbit_load_kwargs

        kbit_load_kwargs(kbit)  # bitsandbytes and CUDA present?
        if not getattr(cfg, "apply_lora", False):
            raise EmbforgeError(f"--load_kbit {kbit}: quantised weights cannot be trained directly; add --apply_lora")


def validate_architecture_options(cfg: TrainConfig) -> None:
    """Impossible combinations of --freeze/--addxlinear/--linearthenpool/--useact/--asym, before any loading."""
    validate_llm_options(cfg)
    layers = getattr(cfg, "addxlinear", 0) or 0
    if layers < 0:
        raise EmbforgeError(f"--addxlinear must be >= 0, got {layers}")
    for flag in ("linearthenpool", "useact"):
        if getattr(cfg, flag, False) and not layers:
            raise EmbforgeError(f"--{flag} shapes the layers --addxlinear N adds: give --addxlinear N (N >= 1)")
    if getattr(cfg, "freeze", False) and not (layers or cfg.freezenonbias or cfg.apply_lora):
        raise EmbforgeError("--freeze leaves nothing to train: add --addxlinear N, --freezenonbias or --apply_lora")


def apply_architecture(encoder: Encoder, cfg: TrainConfig) -> None:
    """Add SGPT's linear layers and/or split the towers, as the config asks."""
    count = getattr(cfg, "addxlinear", 0) or 0
    if count:
        wanted = sgpt_layers(encoder.embedding_dim, count, bool(getattr(cfg, "useact", False)),
                             bool(getattr(cfg, "linearthenpool", False)))
        if encoder.head is None:
            encoder.add_dense_head(wanted)
        elif encoder.config.dense != wanted:
            raise EmbforgeError(f"--addxlinear {count}: the model already has a different dense head "
                                f"({len(encoder.config.dense or [])} layer(s)); start from its base model instead")
        # else: the same head, saved by an earlier run; training continues it.
    if getattr(cfg, "asym", False):
        encoder.make_asymmetric()


def apply_parameter_efficiency(encoder: Encoder, cfg: TrainConfig) -> None:
    apply_architecture(encoder, cfg)
    if cfg.apply_lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:  # pragma: no cover - peft is a dependency
            raise EmbforgeError("--apply_lora needs peft: pip install peft") from exc
        model_type = getattr(encoder.backbone.config, "model_type", None)
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=lora_targets(model_type, cfg.lora_target_modules),
                          **top_layers(encoder.backbone, getattr(cfg, "lora_top_layers", None)))
        if getattr(cfg, "load_kbit", None):
            from peft import prepare_model_for_kbit_training

            for tower in encoder.towers():
                prepare_model_for_kbit_training(tower, use_gradient_checkpointing=bool(cfg.gradient_checkpointing))
        try:
            encoder.backbone = get_peft_model(encoder.backbone, lora)
            if encoder.query_backbone is not None:
                encoder.query_backbone = get_peft_model(encoder.query_backbone, copy.deepcopy(lora))
        except ValueError as exc:
            raise EmbforgeError(f"LoRA: {exc} (set --lora_target_modules)") from exc
    elif cfg.freezenonbias:
        trainable = 0
        for tower in encoder.towers():
            for name, param in tower.named_parameters():
                param.requires_grad = name.endswith("bias")
                trainable += param.numel() if param.requires_grad else 0
        if trainable == 0:
            raise EmbforgeError("--freezenonbias: this model has no bias terms to train")
    elif getattr(cfg, "freeze", False):
        for tower in encoder.towers():
            tower.requires_grad_(False)
        if encoder.query_backbone is not None:
            logger.warning("--asym with --freeze: both towers are frozen, so they stay identical; only the "
                           "shared dense head trains")
    if getattr(cfg, "freeze", False) and encoder.head is not None:
        encoder.head.requires_grad_(True)
    if not any(p.requires_grad for p in encoder.parameters()):
        raise EmbforgeError("no trainable parameters left: check --freeze/--freezenonbias/--apply_lora")


def finalize_for_saving(encoder: Encoder, cfg: TrainConfig) -> None:
    """Merge LoRA into the weights (unless only the adapter is wanted) so the output loads without peft."""
    if not cfg.apply_lora or cfg.save_adapter_only:
        return
    if hasattr(encoder.backbone, "merge_and_unload"):
        encoder.backbone = encoder.backbone.merge_and_unload()
    if encoder.query_backbone is not None and hasattr(encoder.query_backbone, "merge_and_unload"):
        encoder.query_backbone = encoder.query_backbone.merge_and_unload()
