from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Never read or write the user's embedding cache from tests.
os.environ["EMBFORGE_CACHE"] = tempfile.mkdtemp(prefix="embforge-test-cache-")

REPO = Path(__file__).resolve().parents[1]
# Real data bundled with the repository (see examples/data/README.md); tests read nothing outside the clone.
BUNDLED_DATA = REPO / "examples" / "data"

from tiny import write_bert, write_gpt2, write_llama  # noqa: E402


@pytest.fixture(scope="session")
def bundled_data() -> Path:
    assert BUNDLED_DATA.is_dir(), f"expected the bundled data at {BUNDLED_DATA}"
    return BUNDLED_DATA


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return write_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bert_nodrop(tmp_path_factory) -> Path:
    """Dropout off: runs that must agree to 1e-5 (GradCache, distributed, resume) need determinism."""
    return write_bert(tmp_path_factory.mktemp("tiny-bert-nodrop"), dropout=0.0)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return write_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return write_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


# ------------------------------------------------------------------ no silent skips
# `pip install -e ".[test]" && pytest -q` installs everything every test needs, so a skip means a broken
# install or a test that quietly stopped testing. Only tests that need hardware this machine lacks may skip,
# and they say so with a reason starting "needs CUDA".
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_collectreport(report):  # a module-level importorskip skips a whole file at collection
    _note_skip(report)


def _note_skip(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not reason.removeprefix("Skipped: ").startswith("needs CUDA"):
            _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED:
        terminalreporter.section("skipped tests fail the run")
        for line in _SKIPPED:
            terminalreporter.write_line(line)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """An embedding cache of the test's own, so that nothing another test encoded is reused."""
    monkeypatch.setenv("EMBFORGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def reranker(tmp_path_factory, tiny_bert_nodrop) -> Path:
    """A float32 cross-encoder folder on the tiny backbone, its head random (seeded): a fine teacher and
    reranker for equality tests."""
    import torch

    from embforge.model.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ce") / "reranker"
    CrossEncoder.from_pretrained(str(tiny_bert_nodrop), max_length=32, device="cpu").save(out)
    return out
