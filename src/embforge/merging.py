"""Weighted averaging of same-architecture models (LM-Cocktail style model merging).

Fine-tuning on one task pulls a model away from what it was good at; averaging the fine-tuned
weights with the base model's keeps most of the task gain and much of the general ability. The
average is taken over every floating-point tensor of the encoder (backbone, query tower, dense
head); integer buffers (position ids) must agree and are copied. The merged folder keeps the first
model's embforge settings, tokenizer and heads, so it loads like that model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .config import option
from .errors import EmbforgeError


def normalise_weights(weights: Sequence[float] | None, n_models: int) -> list[float]:
    """Weights that sum to one; ``None`` means a plain mean. Negative or all-zero weights are errors."""
    if n_models < 2:
        raise EmbforgeError(f"merging needs at least two models, got {n_models}")
    if weights is None or len(weights) == 0:
        return [1.0 / n_models] * n_models
    if len(weights) != n_models:
        raise EmbforgeError(f"--weights has {len(weights)} value(s) for {n_models} model(s): give one per model")
    bad = [w for w in weights if not math.isfinite(w) or w < 0]
    if bad:
        raise EmbforgeError(f"--weights must be finite and non-negative, got {bad[0]}")
    total = float(sum(weights))
    if total <= 0:
        raise EmbforgeError("--weights sum to zero")
    return [float(w) / total for w in weights]


def check_compatible(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor],
                     ref_name: str, other_name: str) -> None:
    """Raise naming the first tensor that is missing, extra or of another shape."""
    for key, tensor in reference.items():
        if key not in other:
            raise EmbforgeError(f"{other_name}: has no tensor {key!r} (present in {ref_name}); "
                                "merging needs models of the same architecture")
        if tuple(other[key].shape) != tuple(tensor.shape):
            raise EmbforgeError(f"{other_name}: tensor {key!r} has shape {tuple(other[key].shape)}, "
                                f"{ref_name} has {tuple(tensor.shape)}; merging needs models of the same architecture")
    extra = next((k for k in other if k not in reference), None)
    if extra is not None:
        raise EmbforgeError(f"{other_name}: has a tensor {extra!r} that {ref_name} lacks; "
                            "merging needs models of the same architecture")


def average_states(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float],
                   names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts (weights already normalised); float32 accumulation."""
    names = list(names or [f"model #{i}" for i in range(len(states))])
    acc: dict[str, torch.Tensor] = {}
    for state, w, name in zip(states, weights, names):
        _accumulate(acc, state, w, names[0], name, first=state is states[0])
    return _finish(acc, states[0])


def _accumulate(acc: dict[str, torch.Tensor], state: dict[str, torch.Tensor], weight: float,
                ref_name: str, name: str, first: bool) -> None:
    if not first:
        check_compatible(acc, state, ref_name, name)
    for key, tensor in state.items():
        if tensor.is_floating_point():
            term = tensor.detach().to(torch.float32) * weight
            acc[key] = term if first else acc[key] + term
        elif first:
            acc[key] = tensor.detach().clone()
        elif not torch.equal(acc[key], tensor):
            raise EmbforgeError(f"{name}: integer tensor {key!r} differs from {ref_name}'s; cannot average it")


def _finish(acc: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(like[k].dtype) if like[k].is_floating_point() else v for k, v in acc.items()}


def merge_models(models: Sequence[str | os.PathLike[str] | None], weights: Sequence[float] | None,
                 output_dir: str | os.PathLike[str], overwrite: bool = False) -> dict[str, Any]:
    """Average ``models`` (folders; None = the embedded default model) into ``output_dir``.

    Models are loaded one at a time, so peak memory is two models whatever their number. Returns a
    summary (models, normalised weights, tensor count) that the model card records.
    """
    from .model import Encoder
    from .model.card import model_label, write_merge_card
    from .paths import check_output_dir, resolve_model_path

    weights = normalise_weights(weights, len(models))
    check_output_dir(output_dir, command="merge", inputs=[resolve_model_path(m) for m in models],
                     overwrite=overwrite)
    names = [model_label(m) for m in models]
    first = Encoder.from_pretrained(models[0], device="cpu")
    reference = first.state_dict()
    acc: dict[str, torch.Tensor] = {}
    _accumulate(acc, reference, weights[0], names[0], names[0], first=True)
    for model, w, name in zip(models[1:], weights[1:], names[1:]):
        other = Encoder.from_pretrained(model, device="cpu").state_dict()
        _accumulate(acc, other, w, names[0], name, first=False)
        del other
    first.load_state_dict(_finish(acc, reference))
    out = first.save(output_dir, command="merge", overwrite=overwrite)
    summary = {"models": names, "weights": weights, "tensors": len(acc),
               "parameters": int(sum(t.numel() for t in acc.values() if t.is_floating_point()))}
    write_merge_card(out, summary)
    return summary


@dataclass
class MergeConfig:
    models: list[str] | None = option(None, "Model folders to merge (the first one's settings, tokenizer and "
                                            "heads are kept).", aliases=("model", "model_names_or_paths"))
    weights: list[float] | None = option(None, "One weight per model (normalised to sum to 1); default: equal.")
    base: str | None = option(None, "Shortcut for fine-tuned + base: this model (a folder, or 'default' for the "
                                    "embedded all-MiniLM-L6-v2) is added after --models.", aliases=("base_model",))
    output_dir: str | None = option(None, "Folder for the merged model (written atomically).",
                                    aliases=("output", "output_path"))
    overwrite: bool = option(False, "Replace --output_dir even if it holds files that an earlier merge did not "
                                    "write (a folder holding one of the models is refused regardless).",
                             aliases=("overwrite_output_dir",))

    def all_models(self) -> list[str]:
        return list(self.models or []) + ([self.base] if self.base else [])


def merge(cfg: MergeConfig) -> dict[str, Any]:

    models = cfg.all_models()
    if not cfg.output_dir:
        raise EmbforgeError("merge needs --output_dir")
    if len(models) < 2:
        raise EmbforgeError("merge needs at least two models: --models A B [...] or --models FINE_TUNED --base BASE")
    normalise_weights(cfg.weights, len(models))  # fail before loading anything
    summary = merge_models(models, cfg.weights, cfg.output_dir, overwrite=cfg.overwrite)
    parts = ", ".join(f"{w:.3g} x {m}" for m, w in zip(summary["models"], summary["weights"]))
    print(f"merged {summary['tensors']} tensors ({summary['parameters']:,} parameters): {parts} -> {cfg.output_dir}")
    return summary
