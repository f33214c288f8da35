"""Parameter-efficient training: LoRA (peft) and BitFit (bias terms only)."""

from __future__ import annotations

from typing import Any

from ..errors import EmbforgeError


def apply_parameter_efficiency(encoder: Any, cfg: Any) -> None:
    if cfg.apply_lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:  # pragma: no cover - peft is a dependency
            raise EmbforgeError("--apply_lora needs peft: pip install peft") from exc
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.lora_target_modules or None)
        try:
            encoder.backbone = get_peft_model(encoder.backbone, lora)
        except ValueError as exc:
            raise EmbforgeError(f"LoRA: {exc} (set --lora_target_modules)") from exc
    elif cfg.freezenonbias:
        trainable = 0
        for name, param in encoder.backbone.named_parameters():
            param.requires_grad = name.endswith("bias")
            trainable += param.numel() if param.requires_grad else 0
        if trainable == 0:
            raise EmbforgeError("--freezenonbias: this model has no bias terms to train")


def finalize_for_saving(encoder: Any, cfg: Any) -> None:
    """Merge LoRA into the weights (unless only the adapter is wanted) so the output loads without peft."""
    if cfg.apply_lora and not cfg.save_adapter_only and hasattr(encoder.backbone, "merge_and_unload"):
        encoder.backbone = encoder.backbone.merge_and_unload()
