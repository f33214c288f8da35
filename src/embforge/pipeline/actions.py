"""A step's action: a no-argument callable that runs one command and returns what its marker records."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..evaluation.config import EvalConfig
from ..training.config import TrainConfig
from .steps import Pipeline

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import DataclassInstance

Action = Callable[[], dict[str, Any]]
C = TypeVar("C", bound="DataclassInstance")


def settings_of(cfg: DataclassInstance) -> dict[str, Any]:
    """Every field of a command's config, as hashed into its step's marker."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def command_action(run: Callable[[C], object], cfg: C) -> Action:
    def run_command() -> dict[str, Any]:
        result = run(cfg)
        return result if isinstance(result, dict) else {}
    return run_command


def eval_action(run: Callable[[EvalConfig], dict[str, Any]], cfg: EvalConfig, card_model: str | None,
                reports: dict[str, str]) -> Action:
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
        rerank = report.get("rerank")
        return {"metrics": report.get("metrics", {})} | ({"reranked": rerank["metrics"]} if rerank else {})
    return evaluate


def train_action(cfg: TrainConfig, pipe: Pipeline, step: str = "train") -> Action:
    """Train (the step named ``step``); an attempt interrupted with the same inputs resumes from this run's
    last checkpoint."""
    def train_model() -> dict[str, Any]:
        from ..training.output import checkpoints
        from ..training.run import train

        run_cfg = cfg
        found = checkpoints(Path(cfg.output_dir)) if Path(cfg.output_dir).is_dir() else []
        if found and cfg.resume_from_checkpoint is None and step in pipe.resumable:
            print(f"resuming the interrupted {step} step from its last checkpoint ({found[-1].name})")
            run_cfg = copy.copy(cfg)  # the planned config stays as hashed into the step's marker
            run_cfg.resume_from_checkpoint = "last"
        report = train(run_cfg).report
        return {k: report.get(k) for k in ("global_steps", "train_runtime_s", "final_loss")}
    return train_model
