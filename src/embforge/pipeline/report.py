"""The pipeline's final report: report.json (every eval, per dim), report.png, and the printed summary."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..paths import atomic_write_bytes
from .steps import Pipeline

MAIN_METRICS = ("nDCG@10", "MRR@10", "Recall@100", "spearman")


def write_report(pipe: Pipeline, title: str, base_label: str) -> dict[str, Any]:
    """report.json (every eval, per dim) and report.png (before/after per metric, and per dim)."""
    # Read back from the eval steps' files: a skipped eval step left no result in this process.
    evals = {label: json.loads(Path(path).read_text()) for label, path in pipe.reports.items()}
    per_dim = {label: r.get("dims", {}) for label, r in evals.items()}
    # An evaluation a reranker reordered counts by its final ranking; its first stage's metrics (the
    # embedder alone) are kept beside them under "rerank", before and after.
    reranked = {label: r["rerank"] for label, r in evals.items() if r.get("rerank")}
    full = {label: reranked[label]["metrics"] if label in reranked else r.get("metrics", {})
            for label, r in evals.items()}
    metrics = [m for m in next(iter(full.values()), {}) if isinstance(next(iter(full.values()))[m], float)]
    summary = {m: {label: full[label].get(m) for label in full} for m in metrics}
    report = {"title": title, "pipeline": pipe.source, "output_dir": str(pipe.output_dir),
              "models": dict(pipe.models), "base_model": base_label, "summary": summary, "dims": per_dim,
              "evals": {label: {k: r.get(k) for k in ("data", "split", "queries", "corpus_size", "timings")}
                        for label, r in evals.items()}}
    if reranked:
        report["rerank"] = {label: {"reranker": r.get("model"), "top_k": r.get("top_k"), "dim": r.get("dim"),
                                    "before": evals[label].get("metrics", {}), "after": r["metrics"]}
                            for label, r in reranked.items()}
    if "base" in full:
        report["gain"] = {label: {m: (full[label].get(m) or 0.0) - (full["base"].get(m) or 0.0) for m in metrics}
                          for label in full if label != "base"}
    atomic_write_bytes(pipe.output_dir / "report.json", json.dumps(report, indent=2).encode("utf-8"))
    # Reranking reorders the largest dim's results only: one point at that dim in the per-dim panel.
    plotted = {label: {str(reranked[label].get("dim")): full[label]} if label in reranked else dims
               for label, dims in per_dim.items()}
    plot_report(pipe.output_dir / "report.png", summary, plotted, title)
    return {"summary": {m: summary[m] for m in metrics if m in MAIN_METRICS}}


def plot_report(path: Path, summary: Mapping[str, Mapping[str, float]],
                per_dim: Mapping[str, Mapping[str, Mapping[str, float]]], title: str) -> Path:
    import numpy as np

    from ..figures import pyplot, save_png

    plt = pyplot()

    labels = list(per_dim)
    metrics = list(summary)
    main = next((m for m in MAIN_METRICS if m in summary), metrics[0] if metrics else None)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(metrics))
    for j, label in enumerate(labels):
        values = [summary[m].get(label) or 0.0 for m in metrics]
        bars = ax1.bar(x + (j - (len(labels) - 1) / 2) * width, values, width, label=label)
        if len(metrics) <= 12:
            ax1.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    ax1.set_xticks(x)
    ax1.set_xticklabels(metrics, rotation=45, ha="right", fontsize=8)
    ax1.set_ylabel("score")
    ax1.set_ylim(0, 1.3)  # headroom for the value labels and the legend above the bars
    ax1.set_title("before / after, per metric (full dimension)")
    ax1.legend(fontsize=8, ncol=max(len(labels), 1), loc="upper center")
    ax1.grid(axis="y", alpha=0.3)
    if main is not None:
        for label in labels:
            dims = sorted(per_dim[label], key=int)
            ax2.plot([int(d) for d in dims], [per_dim[label][d].get(main) for d in dims], marker="o", label=label)
        ax2.set_xscale("log", base=2)
        all_dims = sorted({int(d) for label in labels for d in per_dim[label]})
        ax2.set_xticks(all_dims)
        ax2.set_xticklabels([str(d) for d in all_dims])
        ax2.minorticks_off()
        ax2.set_xlabel("embedding dimensions")
        ax2.set_ylabel(main)
        ax2.set_title(f"{main} per dim")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.suptitle(title)
    return save_png(fig, path)


def print_summary(report: Mapping[str, Any], total: float) -> None:
    summary = report.get("summary") or {}
    if summary:
        labels = list(next(iter(summary.values())))
        widths = [max(10, len(label) + 2) for label in labels]
        print("metric".ljust(14) + "".join(label.rjust(w) for label, w in zip(labels, widths)))
        for metric, row in summary.items():
            cells = (f"{row.get(label, float('nan')):{w}.4f}" for label, w in zip(labels, widths))
            print(metric.ljust(14) + "".join(cells))
    print(f"pipeline finished in {total:.0f} s")
