"""The typed config of ``embforge run``: which pipeline YAML, and how to run it."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option


@dataclass
class RunConfig:
    pipeline: str | None = option(None, "Pipeline YAML (see examples/scifact.yaml).")
    sanity_test: bool = option(False, "Run the same steps on a tiny slice of the data (a few minutes), into "
                                      "OUTPUT_DIR/sanity_test.")
    output_dir: str | None = option(None, "Override the YAML's output_dir.")
    force: bool = option(False, "Rerun every step, even those already done.")
