"""The model card of a trained reranker: README.md and its inputs in model_card.json, from the run's report.

A separate template from the embedder's (:mod:`.card`): a cross-encoder is used through other classes
(CrossEncoder, AutoModelForSequenceClassification) and has no pooling or embedding settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..paths import atomic_write_bytes
from .card import CARD_DATA, CARD_FILE, _copy_plot, _table, model_label

LOSSES = {
    "ce": "softmax cross-entropy over each query's group of one positive and train_group_size - 1 hard negatives "
          "(FlagEmbedding's reranker objective)",
    "bce": "binary cross-entropy on sigmoid(score) (positives 1, negatives 0, or scaled pair scores)",
    "margin_mse": "MarginMSE: the score margin positive - negative regressed onto the teacher's margin",
}


def render_reranker_card(data: Mapping[str, Any]) -> str:
    """The card's Markdown (pure)."""
    training = data.get("training") or {}
    loss = str(training.get("rerank_loss", "?"))
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: text-ranking",
             "tags:", "- embforge", "- cross-encoder", "- reranker", "---", "",
             f"# {data.get('name') or 'embforge reranker'}", "",
             "A cross-encoder reranker made with embforge: it scores a (query, passage) pair with one logit. It "
             "loads with `embforge.model.cross_encoder.CrossEncoder`, `sentence_transformers.CrossEncoder` and "
             "`transformers.AutoModelForSequenceClassification`, and all three give the same scores (the raw "
             "logit; apply a sigmoid for a 0-1 score).", "",
             "## Model", "", *_table(["", ""], [["base model", data.get("base_model") or "unknown"],
                                               ["max tokens per pair", data.get("max_length")]]), ""]
    if training:
        lines += ["## Training", "", f"`{training.get('train_data', '?')}`: {training.get('records', '?')} records. "
                  f"Loss: {LOSSES.get(loss, loss)}.", ""]
        rows = [[k, v] for k, v in (data.get("hyperparameters") or {}).items()]
        rows += [[k, training[k]] for k in ("global_steps", "train_runtime_s", "final_loss", "world_size")
                 if training.get(k) is not None]
        lines += ["## Hyper-parameters", "", *_table(["name", "value"], rows), ""]
    plots = data.get("plots") or {}
    if plots:
        lines += ["## Plots", "", *[f"![{title}]({path})" for title, path in plots.items()], ""]
    lines += ["## Usage", "", "```python", "from sentence_transformers import CrossEncoder", "",
              "ce = CrossEncoder(\"path/to/this/folder\")",
              "scores = ce.predict([(\"a query\", \"a passage\"), (\"a query\", \"another passage\")])", "```", ""]
    return "\n".join(lines)


def save_reranker_card(folder: str | os.PathLike[str], out: str | os.PathLike[str], report: Mapping[str, Any],
                       hyperparameters: Mapping[str, Any], max_length: int) -> Path:
    """Card for a freshly trained reranker in ``folder``, with the loss curve training wrote to ``out``."""
    folder, out = Path(folder), Path(out)
    training = {k: v for k, v in report.items() if k != "log_history"}
    data: dict[str, Any] = {"kind": "cross-encoder", "name": out.resolve().name,
                            "base_model": model_label(training.get("model")), "max_length": max_length,
                            "training": training, "hyperparameters": dict(hyperparameters)}
    plot = _copy_plot(out / "loss.png", folder, "loss.png")
    if plot:
        data["plots"] = {"training loss": plot}
    atomic_write_bytes(folder / CARD_DATA, json.dumps(data, indent=2, default=str).encode("utf-8"))
    atomic_write_bytes(folder / CARD_FILE, render_reranker_card(data).encode("utf-8"))
    return folder / CARD_FILE
