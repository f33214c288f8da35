"""``embforge merge``: weighted average of same-architecture models (LM-Cocktail style)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import option

HELP = ("Merge models of one architecture by a weighted average of their weights, e.g. a fine-tuned model "
        "with its base (--base) to keep most of the task gain and the base's general ability.")


@dataclass
class Config:
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


def run(cfg: Config) -> dict[str, Any]:
    from ..errors import EmbforgeError
    from ..merging import merge_models, normalise_weights

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
