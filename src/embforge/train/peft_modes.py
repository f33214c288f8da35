"""What the optimizer trains: LoRA (peft), BitFit (bias terms only), a frozen backbone with SGPT's added
linear layers, and SGPT's asymmetric (separate query/passage) towers.

Architecture changes (dense head, second tower) happen first, so LoRA, BitFit and freezing then apply
to every tower alike. Anything left with ``requires_grad`` is what the Trainer's optimizer sees.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from ..errors import EmbforgeError
from ..model.heads import sgpt_layers

logger = logging.getLogger(__name__)


def validate_architecture_options(cfg: Any) -> None:
    """Impossible combinations of --freeze/--addxlinear/--linearthenpool/--useact/--asym, before any loading."""
    layers = getattr(cfg, "addxlinear", 0) or 0
    if layers < 0:
        raise EmbforgeError(f"--addxlinear must be >= 0, got {layers}")
    for flag in ("linearthenpool", "useact"):
        if getattr(cfg, flag, False) and not layers:
            raise EmbforgeError(f"--{flag} shapes the layers --addxlinear N adds: give --addxlinear N (N >= 1)")
    if getattr(cfg, "freeze", False) and not (layers or cfg.freezenonbias or cfg.apply_lora):
        raise EmbforgeError("--freeze leaves nothing to train: add --addxlinear N, --freezenonbias or --apply_lora")


def apply_architecture(encoder: Any, cfg: Any) -> None:
    """Add SGPT's linear layers and/or split the towers, as the config asks."""
    count = getattr(cfg, "addxlinear", 0) or 0
    if count:
        wanted = sgpt_layers(encoder.embedding_dim, count, bool(getattr(cfg, "useact", False)),
                             bool(getattr(cfg, "linearthenpool", False)))
        if encoder.head is None:
            encoder.add_dense_head(wanted)
        elif encoder.config.dense != wanted:
            raise EmbforgeError(f"--addxlinear {count}: the model already has a different dense head "
                                f"({len(encoder.config.dense)} layer(s)); start from its base model instead")
        # else: the same head, saved by an earlier run; training continues it.
    if getattr(cfg, "asym", False):
        encoder.make_asymmetric()


def apply_parameter_efficiency(encoder: Any, cfg: Any) -> None:
    apply_architecture(encoder, cfg)
    if cfg.apply_lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:  # pragma: no cover - peft is a dependency
            raise EmbforgeError("--apply_lora needs peft: pip install peft") from exc
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.lora_target_modules or None)
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


def finalize_for_saving(encoder: Any, cfg: Any) -> None:
    """Merge LoRA into the weights (unless only the adapter is wanted) so the output loads without peft."""
    if not cfg.apply_lora or cfg.save_adapter_only:
        return
    if hasattr(encoder.backbone, "merge_and_unload"):
        encoder.backbone = encoder.backbone.merge_and_unload()
    if encoder.query_backbone is not None and hasattr(encoder.query_backbone, "merge_and_unload"):
        encoder.query_backbone = encoder.query_backbone.merge_and_unload()
