"""Every ``examples/*.py`` runs in sanity mode, as a user would start it, and goes through the Python API.

New examples are picked up by the glob; each must accept ``--sanity_test`` and ``--output_dir``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples():
    assert {"finetune_scifact", "sgpt_bitfit"} <= {p.stem for p in EXAMPLES}


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_uses_the_python_api_and_the_common_flags(script):
    text = script.read_text(encoding="utf-8")
    assert "import embforge" in text or "from embforge" in text, "examples show the Python API"
    assert "embforge.cli" not in text, "examples call the API, not the CLI's main()"
    for flag in ("--sanity_test", "--output_dir"):
        assert flag in text, f"{script.name} must accept {flag} (CI runs it with both)"


@pytest.mark.e2e
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_in_sanity_mode(script, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "EMBFORGE_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(script), "--sanity_test", "--output_dir", str(out)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert out.is_dir() and any(out.iterdir()), f"{script.name} wrote nothing under --output_dir"


# The pipeline YAMLs are planned (every section validated, the steps wired) without running anything.
PIPELINES = {
    "scifact.yaml": ["mine", "eval-base", "train", "eval-trained", "merge", "eval-merged", "report"],
    "rerank_distill_scifact.yaml": ["mine", "eval-base", "train_reranker", "score", "distill", "eval-distilled",
                                    "eval-distilled+reranker", "report"],
}


@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_yaml_plans_its_steps(name, tmp_path):
    from embforge.pipeline import load_pipeline

    for sanity_test in (False, True):
        pipe = load_pipeline(EXAMPLES[0].parent / name, sanity_test=sanity_test, output_dir=tmp_path)
        assert [s.name for s in pipe.steps] == PIPELINES[name]
        assert not any(tmp_path.iterdir()), "planning writes nothing"
