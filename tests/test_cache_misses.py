"""Embedding-cache misses: whatever changes the vectors must re-encode, never serve the old matrix.

Each test first fills the cache, changes one thing that the key must cover, and then watches
``Encoder.encode``: the affected texts have to be encoded again, and what the cache holds afterwards
has to equal a fresh encode.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from embforge.cache import encode_cached
from embforge.cli import main
from embforge.commands.eval import Config, run
from embforge.mining import mine_negatives
from embforge.model import Encoder

DOCS = {"d1": "the cat sleeps in the house", "d2": "a dog runs on the road", "d3": "protein gene study",
        "d4": "the big red car is fast", "d5": "a small bird eats"}
QUERIES = {"q1": "cat house", "q2": "protein gene", "q3": "red car"}
QRELS = "q1\td1\t1\nq2\td3\t1\nq3\td4\t1\n"


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of its own


def write_beir(folder, docs=DOCS):
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    (folder / "qrels" / "test.tsv").write_text(QRELS)
    return folder


def spy_encode(monkeypatch) -> list[tuple[tuple[str, ...], bool]]:
    """Every (texts, is_query) that reaches the model from now on."""
    calls: list[tuple[tuple[str, ...], bool]] = []
    original = Encoder.encode

    def spy(self, texts, *args, **kwargs):
        calls.append((tuple(texts), bool(kwargs.get("is_query"))))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", spy)
    return calls


def assert_cache_holds_fresh_vectors(encoder, texts, is_query=False):
    cached, hit = encode_cached(encoder, texts, is_query=is_query)
    assert hit, "the miss should have stored the new matrix"
    np.testing.assert_allclose(cached, encoder.encode(texts, is_query=is_query), atol=1e-6)
    return cached


def test_retrained_weights_in_the_same_folder_re_encode_the_corpus(tmp_path, tiny_bert, monkeypatch):
    from transformers import BertModel

    model = shutil.copytree(tiny_bert, tmp_path / "model")
    data = write_beir(tmp_path / "beir")
    assert run(Config(model_name_or_path=str(model), data=str(data)))["corpus_from_cache"] is False
    old = Encoder.from_pretrained(model).encode(list(DOCS.values()))
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    retrained = BertModel.from_pretrained(model)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in retrained.parameters():
            p.add_(0.2 * torch.randn_like(p))
    retrained.save_pretrained(model)
    assert weights.stat().st_size == size  # same shapes: only the rewrite itself tells old from new

    calls = spy_encode(monkeypatch)
    rep = run(Config(model_name_or_path=str(model), data=str(data)))
    assert rep["corpus_from_cache"] is False, "stale corpus vectors came from the cache"
    assert (tuple(DOCS.values()), False) in calls
    new = assert_cache_holds_fresh_vectors(Encoder.from_pretrained(model), list(DOCS.values()))
    assert np.abs(new - old).max() > 1e-2
    assert rep["dims"] == run(Config(model_name_or_path=str(model), data=str(data), no_cache=True))["dims"]


def test_one_edited_document_re_encodes_the_corpus(tmp_path, tiny_bert, monkeypatch):
    data = write_beir(tmp_path / "beir")
    run(Config(model_name_or_path=str(tiny_bert), data=str(data)))
    edited = dict(DOCS, d3="cancer cell data")
    write_beir(data, edited)

    calls = spy_encode(monkeypatch)
    rep = run(Config(model_name_or_path=str(tiny_bert), data=str(data)))
    assert rep["corpus_from_cache"] is False, "stale corpus vectors came from the cache"
    assert (tuple(edited.values()), False) in calls
    assert_cache_holds_fresh_vectors(Encoder.from_pretrained(tiny_bert), list(edited.values()))
    assert rep["dims"] == run(Config(model_name_or_path=str(tiny_bert), data=str(data), no_cache=True))["dims"]


def test_eval_max_length_flag_re_encodes_the_corpus(tmp_path, tiny_bert, monkeypatch):
    data = write_beir(tmp_path / "beir")
    run(Config(model_name_or_path=str(tiny_bert), data=str(data)))
    calls = spy_encode(monkeypatch)
    rep = run(Config(model_name_or_path=str(tiny_bert), data=str(data), max_length=3))
    assert rep["corpus_from_cache"] is False, "stale corpus vectors came from the cache"
    assert (tuple(DOCS.values()), False) in calls
    assert_cache_holds_fresh_vectors(Encoder.from_pretrained(tiny_bert, passage_max_len=3, query_max_len=3),
                                     list(DOCS.values()))


RECORDS = [{"query": q, "pos": [DOCS[d]], "neg": [t for k, t in DOCS.items() if k != d]}
           for q, d in (("cat house", "d1"), ("protein gene", "d3"), ("red car", "d4"))]
POOL = list(DOCS.values())
QUERY_TEXTS = tuple(r["query"] for r in RECORDS)


# (setting, value, which side of mining must be re-encoded): the pool is encoded as passages,
# the queries as queries, and each setting changes only its own side's vectors.
@pytest.mark.parametrize("setting, value, side", [
    ("passage_max_len", 3, "pool"),
    ("query_max_len", 2, "queries"),
    ("passage_instruction", "find the passage", "pool"),
    ("query_instruction", "find the passage", "queries"),
])
def test_another_max_length_or_instruction_misses(tiny_bert, monkeypatch, setting, value, side):
    base = Encoder.from_pretrained(tiny_bert, device="cpu")
    changed = Encoder.from_pretrained(tiny_bert, device="cpu", **{setting: value})
    texts, is_query = (QUERY_TEXTS, True) if side == "queries" else (tuple(POOL), False)
    assert np.abs(changed.encode(list(texts), is_query=is_query) - base.encode(list(texts), is_query=is_query)
                  ).max() > 1e-3, "the setting must change this side's vectors, or the test proves nothing"
    mine_negatives(base, RECORDS, POOL, range_for_sampling="0-4", negative_number=2)

    calls = spy_encode(monkeypatch)
    out, stats = mine_negatives(changed, RECORDS, POOL, range_for_sampling="0-4", negative_number=2)
    assert stats.cache_hits[side] is False, f"stale {side} vectors came from the cache"
    assert (texts, is_query) in calls
    assert_cache_holds_fresh_vectors(changed, list(texts), is_query)
    assert out == mine_negatives(changed, RECORDS, POOL, range_for_sampling="0-4", negative_number=2,
                                 use_cache=False)[0]


def test_mine_query_instruction_flag_re_encodes_the_queries(tmp_path, tiny_bert, monkeypatch):
    from embforge.commands import mine

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    args = ["--model", str(tiny_bert), "--input_file", str(src), "--output_file", str(tmp_path / "o.jsonl"),
            "--range_for_sampling", "0-4", "--negative_number", "2"]
    assert main(["mine", *args]) == 0
    cfg = mine.Config(model_name_or_path=str(tiny_bert), input_file=str(src), output_file=str(tmp_path / "o.jsonl"),
                      range_for_sampling="0-4", negative_number=2)
    assert mine.run(cfg)["cache_hits"] == {"pool": True, "queries": True}  # an unchanged rerun hits
    calls = spy_encode(monkeypatch)
    cfg.query_instruction_for_retrieval = "find the passage"
    assert mine.run(cfg)["cache_hits"]["queries"] is False, "stale query vectors came from the cache"
    assert (QUERY_TEXTS, True) in calls
