"""A step's action: a no-argument callable that runs one command and returns what its marker records."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .steps import Pipeline

Action = Callable[[], dict[str, Any]]


def settings_of(cfg: Any) -> dict[str, Any]:
    """Every field of a command's config, as hashed into its step's marker."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def command_action(run: Callable[[Any], Any], cfg: Any) -> Action:
    def run_command() -> dict[str, Any]:
        result = run(cfg)
        return result if isinstance(result, dict) else {}
    return run_command


def eval_action(run: Callable[[Any], Any], cfg: Any, card_model: str | None, reports: dict[str, str]) -> Action:
    """Evaluate, then put the result (and the base model's, for comparison) into the model's card."""
    def evaluate() -> dict[str, Any]:
        report = run(cfg)
        if card_model is not None:
            from ..model.card import add_eval

            base = reports.get("base")
            # Read back from eval-base's file: that step may have been skipped, leaving no result here.
            if base and Path(base).is_file():
                add_eval(card_model, "base model (before)", json.loads(Path(base).read_text()))
            add_eval(card_model, "this model", report)
        return {"metrics": report.get("metrics", {})}
    return evaluate


def train_action(cfg: Any, pipe: Pipeline) -> Action:
    """Train; an attempt interrupted with the same inputs resumes from its last checkpoint."""
    def train_model() -> dict[str, Any]:
        from transformers.trainer_utils import get_last_checkpoint

        from ..training.run import train

        out = Path(cfg.output_dir)
        if out.is_dir() and cfg.resume_from_checkpoint is None and "train" in pipe.resumable:
            last = get_last_checkpoint(str(out))
            if last is not None:
                print(f"resuming the interrupted train step from {last}")
                cfg.resume_from_checkpoint = last
        train(cfg)
        # Read back: train() writes its summary to train_report.json instead of returning it.
        report = out / "train_report.json"
        data = json.loads(report.read_text()) if report.is_file() else {}
        return {k: data.get(k) for k in ("global_steps", "train_runtime_s", "final_loss")}
    return train_model
