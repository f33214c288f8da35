"""Model cards: the README.md that travels with every saved model.

A folder of weights says nothing about where it came from. The card records the base model, the
data, the recipe and its hyper-parameters, the evaluation results and the loss plot, rendered from
the run's own JSON (the train report, the eval reports, the merge summary) rather than written by
hand, so it cannot drift from what happened. The card's inputs are kept beside it in
``model_card.json``; later steps (an evaluation, a merge) add to that file and re-render README.md.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..paths import atomic_write_bytes

CARD_DATA = "model_card.json"
CARD_FILE = "README.md"

# Metrics shown in the eval table, when present; every other metric stays in model_card.json.
TABLE_METRICS = ("nDCG@10", "MRR@10", "Recall@10", "Recall@100", "MAP@10", "spearman", "pearson")


def load_card_data(folder: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(folder) / CARD_DATA
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_card(folder: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``model_card.json`` and the rendered README.md (each atomically)."""
    folder = Path(folder)
    atomic_write_bytes(folder / CARD_DATA, json.dumps(data, indent=2, default=str).encode("utf-8"))
    atomic_write_bytes(folder / CARD_FILE, render_card(data, _settings(folder)).encode("utf-8"))
    return folder / CARD_FILE


def _settings(folder: Path) -> dict[str, Any]:
    from .io import EMBFORGE_FILE

    try:
        data = json.loads((folder / EMBFORGE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _copy_plot(src: str | os.PathLike[str] | None, folder: Path, name: str) -> str | None:
    """Copy a plot into the model folder (so the card's image link travels with it); its new name."""
    if not src or not Path(src).is_file():
        return None
    if Path(src).resolve() != (folder / name).resolve():
        shutil.copyfile(src, folder / name)
    return name


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1000 else f"{value:.4g}"
    if value is None or value == "":
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def render_card(data: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The card's Markdown, from card data and the folder's embforge.json settings (pure)."""
    base = data.get("base_model") or "unknown"
    name = data.get("name") or "embforge model"
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             "tags:", "- embforge", "- sentence-transformers", "- feature-extraction", "- sentence-similarity", "---",
             "", f"# {name}", "",
             "A text embedding model made with embforge. It loads with `embforge.Encoder`, "
             "`sentence_transformers.SentenceTransformer` and `transformers.AutoModel` (add the pooling below), "
             "and all three give the same vectors.", ""]
    model_rows: list[list[Any]] = [["base model", base]]
    if settings:
        dims = settings.get("dims")
        pooling = str(settings.get("pooling", "?")) + (", L2-normalised" if settings.get("normalize") else "")
        model_rows += [["pooling", pooling],
                       ["max tokens", f"query {settings.get('query_max_len')}, passage {settings.get('passage_max_len')}"]]
        if settings.get("query_instruction"):
            model_rows.append(["query instruction", repr(settings["query_instruction"])])
        if settings.get("passage_instruction"):
            model_rows.append(["passage instruction", repr(settings["passage_instruction"])])
        if dims:
            model_rows.append(["Matryoshka dims", ", ".join(map(str, dims))])
        if settings.get("asym"):
            model_rows.append(["towers", "separate query and passage towers"])
    lines += ["## Model", "", *_table(["", ""], model_rows), ""]

    training = data.get("training") or {}
    if training:
        lines += ["## Training data", "", f"`{training.get('train_data', '?')}`: {training.get('records', '?')} "
                  "query records.", ""]
        recipe = data.get("recipe") or ("Contrastive fine-tuning (InfoNCE over in-batch and mined hard negatives) "
                                        "on the Hugging Face Trainer.")
        lines += ["## Recipe", "", recipe, ""]
        hp = data.get("hyperparameters") or {}
        rows = [[k, v] for k, v in hp.items()]
        rows += [[k, training[k]] for k in ("global_steps", "train_runtime_s", "final_loss", "world_size")
                 if training.get(k) is not None]
        lines += ["## Hyper-parameters", "", *_table(["name", "value"], rows), ""]

    merge = data.get("merge")
    if merge:
        lines += ["## Merge", "", "Weighted average of the weights of these models (LM-Cocktail style); this "
                  "folder keeps the first model's settings and tokenizer.", "",
                  *_table(["model", "weight"], [[m, w] for m, w in zip(merge["models"], merge["weights"])]), ""]

    evals = data.get("evals") or {}
    if evals:
        metrics = [m for m in TABLE_METRICS if any(m in (e.get("metrics") or {}) for e in evals.values())]
        if not metrics:
            metrics = sorted({k for e in evals.values() for k, v in (e.get("metrics") or {}).items()
                              if isinstance(v, float)})[:6]
        rows = [[name, f"{e.get('data', '?')} ({e.get('split', '?')})", *[(e.get("metrics") or {}).get(m)
                                                                         for m in metrics]]
                for name, e in evals.items()]
        lines += ["## Evaluation", "", *_table(["model", "data", *metrics], rows), ""]

    plots = data.get("plots") or {}
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{title}]({path})" for title, path in plots.items()]
        lines.append("")

    lines += ["## Usage", "", "```python", "from embforge import Encoder", "",
              "enc = Encoder.from_pretrained(\"path/to/this/folder\")",
              "q = enc.encode([\"a query\"], is_query=True)", "d = enc.encode([\"a passage\"])", "",
              "from sentence_transformers import SentenceTransformer", "",
              "st = SentenceTransformer(\"path/to/this/folder\")", "v = st.encode([\"a passage\"])", "```", ""]
    return "\n".join(lines)


def model_label(model: str | os.PathLike[str] | None) -> str:
    """A model's name for people: the embedded default model by name, anything else by its path."""
    from ..paths import DEFAULT_MODEL_NAME, default_model_path

    if model is None or str(model) in ("", "default", DEFAULT_MODEL_NAME):
        return f"{DEFAULT_MODEL_NAME} (embedded)"
    try:
        if Path(model).resolve() == default_model_path().resolve():
            return f"{DEFAULT_MODEL_NAME} (embedded)"
    except Exception:  # the default model package may be missing; then it cannot be this path either
        pass
    return str(model)


def save_training_card(folder: str | os.PathLike[str], out: str | os.PathLike[str], report: Mapping[str, Any],
                       hyperparameters: Mapping[str, Any]) -> Path:
    """Card for a freshly trained model in ``folder``: the run's report and hyper-parameters, and the
    loss curve that training wrote to ``out``."""
    folder, out = Path(folder), Path(out)
    training = {k: v for k, v in report.items() if k != "log_history"}
    data: dict[str, Any] = {"name": out.resolve().name, "base_model": model_label(training.get("model")),
                            "training": training, "hyperparameters": dict(hyperparameters)}
    plot = _copy_plot(out / "loss.png", folder, "loss.png")
    if plot:
        data["plots"] = {"training loss": plot}
    return save_card(folder, data)


def write_merge_card(folder: str | os.PathLike[str], summary: Mapping[str, Any]) -> Path:
    """Card for a merged model: the first model's card (its training history) plus the merge."""
    from .io import model_root

    folder = Path(folder)
    first = Path(str(summary["models"][0]))
    first = model_root(first) if first.is_dir() else first
    data = load_card_data(first) if first.is_dir() else {}
    data.pop("evals", None)  # those scores belong to the unmerged weights
    plots = {k: v for k, v in (data.get("plots") or {}).items() if _copy_plot(first / v, folder, v)}
    data.update({"name": folder.name, "merge": dict(summary), "plots": plots})
    data.setdefault("base_model", model_label(summary["models"][-1]))
    return save_card(folder, data)


def add_eval(folder: str | os.PathLike[str], name: str, report: Mapping[str, Any],
             plot: str | os.PathLike[str] | None = None) -> Path:
    """Add (or replace) one evaluation row, from an ``embforge eval`` report, and re-render the card."""
    folder = Path(folder)
    data = load_card_data(folder)
    data.setdefault("base_model", report.get("model"))
    data.setdefault("evals", {})[name] = {"data": report.get("data"), "split": report.get("split"),
                                         "metrics": dict(report.get("metrics") or {})}
    copied = _copy_plot(plot, folder, f"eval_{_slug(name)}.png")
    if copied:
        data.setdefault("plots", {})[f"evaluation: {name}"] = copied
    return save_card(folder, data)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
