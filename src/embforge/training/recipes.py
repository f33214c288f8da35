"""Loss settings: the defaults, the ``--recipe`` presets, and the checks that run before training.

Fields a recipe may set default to None in the Config ("not given"). ``resolve`` fills each one,
once, when training starts: the value given (flag, YAML or Python) wins, else the recipe's, else the
built-in default. Filling at the start of training rather than in ``__post_init__`` is what keeps
the precedence right when a YAML file and flags are merged (``build_config`` rebuilds the Config
from the YAML one's values, which would then all look given).

The losses' names, aliases, data kinds and setting defaults come from ``embforge.losses.registry``,
the wrappers' defaults from their modules: each is written once, where the loss is.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from ..errors import EmbforgeError
from ..losses import distill, ese, registry, topk

if TYPE_CHECKING:  # pragma: no cover
    from ..data.records import RetrievalRecord, ScoredPair
    from .config import TrainConfig

logger = logging.getLogger(__name__)


DEFAULT_LOSS = "infonce"
# Defaults of the train fields that are neither a loss's nor a wrapper's setting.
TRAIN_DEFAULTS: dict[str, Any] = {"apply_lora": False, "freezenonbias": False}
# Wrapper settings that must be positive (the losses declare theirs in their specs).
POSITIVE = ("ese_kl_temperature", "distill_temperature")


def defaults() -> dict[str, Any]:
    """Every default ``resolve`` fills in, read from the registry at call time (so it sees any loss registered)."""
    return {"loss": [DEFAULT_LOSS], **registry.defaults(), **ese.SETTINGS, **topk.SETTINGS, **distill.SETTINGS,
            **TRAIN_DEFAULTS}


# train_group_size is filled after the data is read (AnglE on records without negatives: 1, else 2);
# "auto" dims are filled once the model's width is known.
RECIPES: dict[str, dict[str, Any]] = {
    # FlagEmbedding fine-tuning: InfoNCE over in-batch + one hard negative, temperature 0.02.
    "flag": {"loss": ["infonce"], "temperature": 0.02, "train_group_size": 2},
    # AnglE's STS-B fine-tuning example: CoSENT + in-batch negatives + angle, all at scale 20 (the angle
    # loss's declared defaults are that example's values).
    "angle": {"loss": ["angle"], **registry.get("angle").settings},
    # SGPT-BE: position-weighted mean pooling, BitFit, MultipleNegativesRanking at scale 20 with a hard negative.
    "sgpt": {"loss": ["infonce"], "pooling": "weightedmean", "freezenonbias": True, "temperature": 0.05,
             "train_group_size": 2},
    # CSR's MRL stage: LoRA + Matryoshka over the model's width down to 32 + in-batch negatives (MNRL).
    "mrl": {"loss": ["infonce"], "apply_lora": True, "mrl_dims": "auto", "temperature": 0.05, "train_group_size": 1},
    # CSRv2's TopK-aware LoRA backbone fine-tuning: in-batch InfoNCE on TopK-masked embeddings, k = 16..D/2.
    "topk-lora": {"loss": ["infonce"], "apply_lora": True, "topk_k_list": "auto", "topk_mode": "magnitude",
                  "apply_topk_to_backbone": True, "temperature": 0.05, "train_group_size": 1},
}
MRL_LADDER = (2048, 1536, 1024, 768, 512, 256, 128, 64, 32)
TOPK_LADDER = (16, 32, 64, 128, 256, 512, 1024, 2048)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """A new Config with every not-given loss field filled from the recipe or the default, after checking
    what needs no model; ``cfg`` itself is left as it was.

    ``dataclasses.replace`` builds the copy, so the train Config's ``__post_init__`` runs again on it.
    That is safe: it only normalises values it already normalised (``--sanity_test``'s sizes equal
    their tiny values by now, so it warns no second time), as ``build_config`` relies on too."""
    recipe = RECIPES.get(cfg.recipe, {}) if cfg.recipe else {}
    if cfg.recipe and cfg.recipe not in RECIPES:
        raise EmbforgeError(f"--recipe must be one of {', '.join(RECIPES)}, got {cfg.recipe!r}")
    fields = {f.name for f in dataclasses.fields(cfg)}
    filled = {name: value for name, value in {**defaults(), **recipe}.items()
              if name in fields and getattr(cfg, name) is None}
    loss = [registry.canonical(n) for n in filled.get("loss", cfg.loss or [])]
    filled["loss"] = loss
    topk_k_list = filled.get("topk_k_list", cfg.topk_k_list)
    if topk_k_list and topk_k_list != "auto":
        filled["apply_topk_to_backbone"] = True  # the backbone's embedding is the only place train applies TopK
    out = dataclasses.replace(cfg, **filled)
    _check(out)
    return out


def _check(cfg: Any) -> None:
    if len(set(cfg.loss)) != len(cfg.loss):
        raise EmbforgeError(f"--loss names a loss twice: {' '.join(cfg.loss)}")
    if cfg.loss_weights is not None and len(cfg.loss_weights) != len(cfg.loss):
        raise EmbforgeError(f"--loss_weights has {len(cfg.loss_weights)} value(s) for {len(cfg.loss)} loss(es) "
                            f"({' '.join(cfg.loss)}); give one weight per loss")
    for name in cfg.loss:
        spec = registry.get(name)
        problem = spec.check(registry.settings_from(name, cfg)) if spec.check else None
        if problem:
            raise EmbforgeError(problem)
    # every registered loss's positive settings, chosen or not: a bad value given is a mistake either way
    positive = dict.fromkeys(s for name in registry.names() for s in registry.get(name).positive)
    for name in (*positive, *POSITIVE):
        value = getattr(cfg, name, None)
        if value is not None and value <= 0:
            raise EmbforgeError(f"--{name} must be positive, got {value}")
    if cfg.topk_mode not in topk.TOPK_MODES:
        raise EmbforgeError(f"--topk_mode must be magnitude or value, got {cfg.topk_mode!r}")
    if cfg.apply_topk_to_backbone and not cfg.topk_k_list:
        raise EmbforgeError("--apply_topk_to_backbone needs --topk_k_list K1,K2,... (the TopK sizes to train)")
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


def check_data_kind(cfg: TrainConfig, records: list[RetrievalRecord] | list[ScoredPair],
                    source: object) -> TrainConfig:
    """The config completed for the data (``train_group_size``, when not given). A loss that needs the other
    kind of records fails here, naming both."""
    from ..data.records import RetrievalRecord as RecordWithNegatives
    from ..data.records import ScoredPair

    assert cfg.loss is not None, "resolve() first"
    kinds = {type(r).__name__ for r in records}
    if len(kinds) > 1:
        raise EmbforgeError(f"{source}: the data mixes {' and '.join(sorted(kinds))} records; train on one kind")
    pairs = isinstance(records[0], ScoredPair)
    kind: registry.Kind = "pairs" if pairs else "groups"
    wrong = [n for n in cfg.loss if kind not in registry.get(n).kinds]
    fitting = registry.names(kind)
    use = ", ".join(fitting[:-1]) + " or " + fitting[-1] if len(fitting) > 1 else "".join(fitting)
    if wrong and pairs:
        raise EmbforgeError(f"{source}: holds scored pairs (text1, text2, score), but --loss {wrong[0]} needs "
                            f"query/positive records; use --loss {use} (or --recipe angle)")
    if wrong:
        raise EmbforgeError(f"{source}: holds query/positive records without scores, but --loss {wrong[0]} needs "
                            f"scored pairs (text1, text2, label / STS-B); use --loss {use}")
    if pairs and cfg.train_group_size not in (None, 1, 2):
        logger.warning("--train_group_size does not apply to scored pairs; ignored")
    if (not pairs and "angle" in cfg.loss and cfg.angle_w and (cfg.train_group_size or 1) > 1
            and any(not r.neg for r in records if isinstance(r, RecordWithNegatives))):
        logger.warning("--loss angle with train_group_size > 1: records without negatives repeat their positive "
                       "as the 'negative' of the angle term; give every record negatives or --train_group_size 1")
    if cfg.train_group_size is not None:
        return cfg
    no_negatives = not pairs and any(not r.neg for r in records if isinstance(r, RecordWithNegatives))
    return dataclasses.replace(cfg, train_group_size=1 if (pairs or ("angle" in cfg.loss and no_negatives)) else 2)


def check_model_dims(cfg: TrainConfig, dim: int) -> TrainConfig:
    """The config with "auto" lists filled from the model's width, every size checked against it (before
    any step)."""
    filled: dict[str, Any] = {}
    if cfg.mrl_dims == "auto":
        filled["mrl_dims"] = [dim] + [d for d in MRL_LADDER if d < dim]
    if cfg.topk_k_list == "auto":
        filled.update(topk_k_list=[k for k in TOPK_LADDER if k < dim], apply_topk_to_backbone=True)
    if filled:
        cfg = dataclasses.replace(cfg, **filled)
    for name in ("mrl_dims", "topk_k_list"):
        values = getattr(cfg, name)
        if values and max(values) > dim:
            raise EmbforgeError(f"--{name} {','.join(map(str, values))}: {max(values)} is larger than the model's "
                                f"embedding dimension {dim}")
    compression = cfg.ese_compression_size or 0
    if cfg.apply_ese and compression >= dim:
        raise EmbforgeError(f"--ese_compression_size {cfg.ese_compression_size} must be smaller than the model's "
                            f"embedding dimension {dim}")
    if "angle" in (cfg.loss or ()):
        mrl = cfg.mrl_dims if isinstance(cfg.mrl_dims, list) else []
        sizes = [dim] + mrl + ([compression] if cfg.apply_ese else [])
        odd = [d for d in sizes if d % 2]
        if odd:
            raise EmbforgeError(f"--loss angle splits embeddings into real and imaginary halves; size {odd[0]} is odd")
    return cfg
