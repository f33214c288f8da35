"""``embforge run``: one YAML drives mine -> train -> eval -> merge -> eval -> report, and the reranker loop.

The steps run in this order (a section left out drops its steps)::

    mine -> eval-base -> train -> eval-trained -> merge -> eval-merged
         -> train_reranker -> score -> distill -> eval-distilled -> eval-distilled+reranker -> report

``train_reranker`` trains a cross-encoder on the mined file, ``score`` writes its scores into that file,
``distill`` trains the base embedder on them (kd), and the last embedder is evaluated with the reranker too.

One job per module, each depending only on those listed before it: ``steps`` (what a plan is made
of), ``slicing`` (--sanity_test data), ``report`` (report.json and report.png), ``memory`` (a finished
step's memory given back), ``actions`` (what each step runs), ``plan`` (the YAML, validated, into
steps; nothing runs) and ``execute`` (running the steps, skipping those done before; resume markers).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import EmbforgeError
from .config import RunConfig
from .execute import MARKERS, execute, path_digest, step_hash
from .plan import load_pipeline
from .report import plot_report, write_report
from .slicing import SANITY_DOCS, SANITY_QUERIES, slice_beir, slice_jsonl
from .steps import Pipeline, Step

__all__ = ["MARKERS", "SANITY_DOCS", "SANITY_QUERIES", "Pipeline", "RunConfig", "Step", "execute", "load_pipeline", "path_digest",
           "plot_report", "run", "run_pipeline", "slice_beir", "slice_jsonl", "step_hash", "write_report"]


def run_pipeline(config_or_path: str | os.PathLike[str] | Mapping[str, Any], sanity_test: bool = False,
                 output_dir: str | os.PathLike[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Run (or resume) a pipeline; returns the final report (also written to OUTPUT_DIR/report.json).

    ``force`` reruns every step even when its marker says it is done.
    """
    return execute(load_pipeline(config_or_path, sanity_test=sanity_test, output_dir=output_dir), force=force)


def run(cfg: RunConfig, pipeline: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``embforge run``: the pipeline of ``cfg.pipeline`` (or the mapping ``pipeline``, from Python)."""
    source = pipeline if pipeline is not None else cfg.pipeline
    if not source:
        raise EmbforgeError("run needs a PIPELINE.yaml")
    return run_pipeline(source, sanity_test=cfg.sanity_test, output_dir=cfg.output_dir, force=cfg.force)
