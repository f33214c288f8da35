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
