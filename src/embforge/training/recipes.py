"""Loss settings: the defaults, the ``--recipe`` presets, and the checks that run before training.

Fields a recipe may set default to None in the Config ("not given"). ``resolve`` fills each one,
once, when training starts: the value given (flag, YAML or Python) wins, else the recipe's, else the
built-in default. Filling at the start of training rather than in ``__post_init__`` is what keeps
the precedence right when a YAML file and flags are merged (``build_config`` rebuilds the Config
from the YAML one's values, which would then all look given).
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import EmbforgeError
from .objective import GROUP_ONLY, LOSSES, PAIR_ONLY

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "loss": ["infonce"], "temperature": 0.02, "cosine_w": 1.0, "cosine_tau": 20.0, "ibn_w": 20.0, "ibn_tau": 20.0,
    "angle_w": 1.0, "angle_tau": 20.0, "apply_ese": False, "ese_compression_size": 128, "ese_kl_temperature": 1.0,
    "topk_mode": "magnitude", "apply_topk_to_backbone": False, "apply_lora": False, "freezenonbias": False,
}
# train_group_size is filled after the data is read (AnglE on records without negatives: 1, else 2);
# "auto" dims are filled once the model's width is known.
RECIPES: dict[str, dict[str, Any]] = {
    # FlagEmbedding fine-tuning: InfoNCE over in-batch + one hard negative, temperature 0.02.
    "flag": {"loss": ["infonce"], "temperature": 0.02, "train_group_size": 2},
    # AnglE's STS-B fine-tuning example: CoSENT + in-batch negatives + angle, all at scale 20.
    "angle": {"loss": ["angle"], "cosine_w": 1.0, "ibn_w": 20.0, "angle_w": 1.0, "cosine_tau": 20.0,
              "ibn_tau": 20.0, "angle_tau": 20.0},
    # SGPT-BE: position-weighted mean pooling, BitFit, MultipleNegativesRanking at scale 20 with a hard negative.
    "sgpt": {"loss": ["infonce"], "pooling": "weightedmean", "freezenonbias": True, "temperature": 0.05,
             "train_group_size": 2},
    # CSR's MRL stage: LoRA + Matryoshka over the model's width down to 32 + in-batch negatives (MNRL).
    "mrl": {"loss": ["infonce"], "apply_lora": True, "mrl_dims": "auto", "temperature": 0.05, "train_group_size": 1},
    # CSRv2's TopK-aware LoRA backbone fine-tuning: in-batch InfoNCE on TopK-masked embeddings, k = 16..D/2.
    "topk-lora": {"loss": ["infonce"], "apply_lora": True, "topk_k_list": "auto", "topk_mode": "magnitude",
                  "apply_topk_to_backbone": True, "temperature": 0.05, "train_group_size": 1},
}
LOSS_ALIASES = {"mnrl": "infonce", "multiple_negatives_ranking_loss": "infonce", "contrastive": "infonce",
                "info_nce": "infonce", "cosent_loss": "cosent", "cosine_similarity": "cosine", "cosine_loss": "cosine",
                "angle_loss": "angle", "aoe": "angle"}
MRL_LADDER = (2048, 1536, 1024, 768, 512, 256, 128, 64, 32)
TOPK_LADDER = (16, 32, 64, 128, 256, 512, 1024, 2048)


def resolve(cfg: Any) -> None:
    """Fill every not-given loss field from the recipe or the default; check what needs no model."""
    recipe = RECIPES.get(cfg.recipe, {}) if cfg.recipe else {}
    if cfg.recipe and cfg.recipe not in RECIPES:
        raise EmbforgeError(f"--recipe must be one of {', '.join(RECIPES)}, got {cfg.recipe!r}")
    for name in set(DEFAULTS) | set(recipe):
        if getattr(cfg, name, None) is None:
            setattr(cfg, name, recipe.get(name, DEFAULTS.get(name)))
    cfg.loss = [LOSS_ALIASES.get(n.lower(), n.lower()) for n in cfg.loss]
    unknown = [n for n in cfg.loss if n not in LOSSES]
    if unknown:
        raise EmbforgeError(f"--loss {unknown[0]!r} is not a loss; choose from {', '.join(LOSSES)}")
    if len(set(cfg.loss)) != len(cfg.loss):
        raise EmbforgeError(f"--loss names a loss twice: {' '.join(cfg.loss)}")
    if cfg.loss_weights is not None and len(cfg.loss_weights) != len(cfg.loss):
        raise EmbforgeError(f"--loss_weights has {len(cfg.loss_weights)} value(s) for {len(cfg.loss)} loss(es) "
                            f"({' '.join(cfg.loss)}); give one weight per loss")
    if "angle" in cfg.loss and not (cfg.cosine_w or cfg.ibn_w or cfg.angle_w):
        raise EmbforgeError("--loss angle with cosine_w, ibn_w and angle_w all 0 trains nothing")
    for name in ("temperature", "cosine_tau", "ibn_tau", "angle_tau", "ese_kl_temperature", "distill_temperature"):
        if getattr(cfg, name) <= 0:
            raise EmbforgeError(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.topk_mode not in ("magnitude", "value"):
        raise EmbforgeError(f"--topk_mode must be magnitude or value, got {cfg.topk_mode!r}")
    if cfg.apply_topk_to_backbone and not cfg.topk_k_list:
        raise EmbforgeError("--apply_topk_to_backbone needs --topk_k_list K1,K2,... (the TopK sizes to train)")
    if cfg.topk_k_list and cfg.topk_k_list != "auto":
        cfg.apply_topk_to_backbone = True  # the backbone's embedding is the only place train applies TopK
    _check_list(cfg.mrl_dims, cfg.mrl_weights, "mrl_dims", "mrl_weights", descending=True)
    _check_list(cfg.topk_k_list, cfg.topk_weights, "topk_k_list", "topk_weights", descending=False)
    if cfg.apply_ese and cfg.ese_compression_size <= 0:
        raise EmbforgeError(f"--ese_compression_size must be positive, got {cfg.ese_compression_size}")


def _check_list(values: Any, weights: Any, name: str, weights_name: str, descending: bool) -> None:
    if values is None or values == "auto":
        if weights is not None and values is None:
            raise EmbforgeError(f"--{weights_name} needs --{name}")
        return
    if not values:
        raise EmbforgeError(f"--{name} is empty")
    if any(v <= 0 for v in values):
        raise EmbforgeError(f"--{name} must be positive integers, got {','.join(map(str, values))}")
    if descending and any(a <= b for a, b in zip(values, values[1:])):
        raise EmbforgeError(f"--{name} must be strictly descending (largest first, as in 384,256,128,64,32), "
                            f"got {','.join(map(str, values))}")
    if len(set(values)) != len(values):
        raise EmbforgeError(f"--{name} repeats a value: {','.join(map(str, values))}")
    if weights is not None and len(weights) != len(values):
        raise EmbforgeError(f"--{weights_name} has {len(weights)} value(s) but --{name} has {len(values)}; "
                            "give one weight per entry")


def check_data_kind(cfg: Any, records: list, source: Any) -> bool:
    """True when the records are scored pairs. A loss that needs the other kind fails here, naming both."""
    from ..data.records import ScoredPair

    kinds = {type(r).__name__ for r in records}
    if len(kinds) > 1:
        raise EmbforgeError(f"{source}: the data mixes {' and '.join(sorted(kinds))} records; train on one kind")
    pairs = isinstance(records[0], ScoredPair)
    wrong = [n for n in cfg.loss if n in (GROUP_ONLY if pairs else PAIR_ONLY)]
    if wrong and pairs:
        raise EmbforgeError(f"{source}: holds scored pairs (text1, text2, score), but --loss {wrong[0]} needs "
                            "query/positive records; use --loss cosent, cosine or angle (or --recipe angle)")
    if wrong:
        raise EmbforgeError(f"{source}: holds query/positive records without scores, but --loss {wrong[0]} needs "
                            "scored pairs (text1, text2, label / STS-B); use --loss infonce or angle")
    if pairs and cfg.train_group_size not in (None, 1, 2):
        logger.warning("--train_group_size does not apply to scored pairs; ignored")
    if (not pairs and "angle" in cfg.loss and cfg.angle_w and (cfg.train_group_size or 1) > 1
            and any(not r.neg for r in records)):
        logger.warning("--loss angle with train_group_size > 1: records without negatives repeat their positive "
                       "as the 'negative' of the angle term; give every record negatives or --train_group_size 1")
    if cfg.train_group_size is None:
        no_negatives = not pairs and any(not r.neg for r in records)
        cfg.train_group_size = 1 if (pairs or ("angle" in cfg.loss and no_negatives)) else 2
    return pairs


def check_model_dims(cfg: Any, dim: int) -> None:
    """Fill "auto" lists from the model's width and check every size against it (before any step)."""
    if cfg.mrl_dims == "auto":
        cfg.mrl_dims = [dim] + [d for d in MRL_LADDER if d < dim]
    if cfg.topk_k_list == "auto":
        cfg.topk_k_list = [k for k in TOPK_LADDER if k < dim]
        cfg.apply_topk_to_backbone = True
    for name in ("mrl_dims", "topk_k_list"):
        values = getattr(cfg, name)
        if values and max(values) > dim:
            raise EmbforgeError(f"--{name} {','.join(map(str, values))}: {max(values)} is larger than the model's "
                                f"embedding dimension {dim}")
    if cfg.apply_ese and cfg.ese_compression_size >= dim:
        raise EmbforgeError(f"--ese_compression_size {cfg.ese_compression_size} must be smaller than the model's "
                            f"embedding dimension {dim}")
    if "angle" in cfg.loss:
        sizes = [dim] + list(cfg.mrl_dims or []) + ([cfg.ese_compression_size] if cfg.apply_ese else [])
        odd = [d for d in sizes if d % 2]
        if odd:
            raise EmbforgeError(f"--loss angle splits embeddings into real and imaginary halves; size {odd[0]} is odd")
