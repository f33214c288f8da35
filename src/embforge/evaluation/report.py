"""Evaluation results -> a readable table, a JSON report and a quality-vs-dims plot."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from ..paths import atomic_write_bytes


def _metric_columns(per_dim: dict[str, dict[str, Any]]) -> list[str]:
    first = next(iter(per_dim.values()))
    return [name for name, value in first.items() if isinstance(value, float)]


def format_table(result: dict[str, Any]) -> str:
    """One row per metric, one column per dim (4 decimals): narrow however many dims there are; after a
    rerank, one more column with the reranked metrics beside the first stage's."""
    per_dim = dict(result["dims"])
    header = ["metric"] + [f"dim {d}" for d in per_dim]
    rerank = result.get("rerank")
    if rerank:
        per_dim["rerank"] = rerank["metrics"]
        header.append(f"reranked top {rerank['top_k']}")
    rows = [[name] + [f"{per_dim[d][name]:.4f}" for d in per_dim] for name in _metric_columns(result["dims"])]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str | Path, report: dict[str, Any]) -> Path:
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    return path


def plot_dims(path: str | Path, result: dict[str, Any], title: str = "") -> Path | None:
    """Each metric against the embedding size; None when there is only one dim to plot."""
    per_dim = result["dims"]
    if len(per_dim) < 2:
        return None
    from ..figures import pyplot

    plt = pyplot()
    dims = sorted(per_dim, key=int)
    columns = _metric_columns(per_dim)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in columns:
        ax.plot([int(d) for d in dims], [per_dim[d][c] for d in dims], marker="o", label=c)
    ax.set_xscale("log", base=2)
    ax.set_xticks([int(d) for d in dims])
    ax.set_xticklabels(dims)
    ax.set_xlabel("embedding dimensions (Matryoshka truncation)")
    ax.set_ylabel("score")
    ax.set_title(title or "quality vs dimensions")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
