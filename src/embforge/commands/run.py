"""``embforge run``: a whole job (mine -> train -> eval -> merge -> eval -> report) from one YAML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import option

HELP = ("Run a pipeline YAML: mine hard negatives, train, evaluate before and after, merge with the base, "
        "evaluate again, report. Resumable: finished steps whose inputs are unchanged are skipped.")


@dataclass
class Config:
    pipeline: str | None = option(None, "Pipeline YAML (see examples/scifact.yaml).")
    sanity_test: bool = option(False, "Run the same steps on a tiny slice of the data (a few minutes), into "
                                      "OUTPUT_DIR/sanity_test.")
    output_dir: str | None = option(None, "Override the YAML's output_dir.")
    force: bool = option(False, "Rerun every step, even those already done.")


def run(cfg: Config) -> dict[str, Any]:
    from ..errors import EmbforgeError
    from ..pipeline import run_pipeline

    if not cfg.pipeline:
        raise EmbforgeError("run needs a PIPELINE.yaml")
    return run_pipeline(cfg.pipeline, sanity_test=cfg.sanity_test, output_dir=cfg.output_dir, force=cfg.force)
