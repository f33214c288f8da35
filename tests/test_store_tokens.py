"""The token budget (--max_tokens) through the embedding store: it changes the forward passes the store's
encoding makes, never the vectors, and never the store key, so stores written with and without it serve
each other; encode, mine and eval all pass it down."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embforge.cache import encode_cached
from embforge.cli import main
from embforge.model import Encoder
from embforge.store.encode import StoreStats, encode_store

LONG = " ".join(["the cat runs in the house with a dog"] * 8)  # truncated to the tiny model's 64 tokens
SHORT = "cat"  # [CLS] cat [SEP]: 3 tokens
# shards of 8 (shard_size=8): 2 long and 6 short texts each, so a 64-token budget batches them 1, 1, 6
TEXTS = [f"{LONG} {i}" if i % 4 == 0 else f"{SHORT} {['dog', 'bird', 'fish'][i % 3]} {i}" for i in range(16)]


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of its own


@pytest.fixture(scope="module")
def enc(tiny_bert):
    return Encoder.from_pretrained(tiny_bert, device="cpu")


def spy_forward(monkeypatch) -> list[tuple[int, int]]:
    """(rows, padded width) of every forward pass of any Encoder."""
    shapes: list[tuple[int, int]] = []
    original = Encoder.forward

    def spy(self, features, *args, **kwargs):
        shapes.append(tuple(features["input_ids"].shape))
        return original(self, features, *args, **kwargs)

    monkeypatch.setattr(Encoder, "forward", spy)
    return shapes


@pytest.mark.parametrize("path", ["encode_store", "encode_cached"])
def test_budget_batches_by_tokens_and_keeps_the_vectors(enc, tmp_path, monkeypatch, path):
    lengths = [len(ids) for ids in enc.token_ids(TEXTS)]
    assert {lengths[i] for i in range(0, 16, 4)} == {64} and max(lengths[1:4]) <= 5  # as the batches assume

    def run(max_tokens, root):
        if path == "encode_store":
            store, _ = encode_store(enc, TEXTS, batch_size=4, shard_size=8, root=root, max_tokens=max_tokens)
            return store.to_array()
        return encode_cached(enc, TEXTS, batch_size=4, use_cache=False, max_tokens=max_tokens)[0]

    shapes = spy_forward(monkeypatch)
    plain = run(None, tmp_path / "plain")
    assert [r for r, _ in shapes] == [4, 4, 4, 4]
    shapes.clear()
    budget = run(64, tmp_path / "budget")
    # encode_store cuts 2 shards of 8 (2 long + 6 short each); encode_cached has one shard of 16 (4 + 12)
    assert [r for r, _ in shapes] == ([1, 1, 6, 1, 1, 6] if path == "encode_store" else [1, 1, 1, 1, 12])
    assert all(r * w <= 64 for r, w in shapes)
    np.testing.assert_allclose(budget, plain, atol=1e-6, rtol=0)
    np.testing.assert_allclose(plain, enc.encode(TEXTS, batch_size=4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("first, then", [(64, (None, 200, 64)), (None, (32,))])
def test_a_store_written_with_one_budget_serves_any_other(enc, tmp_path, monkeypatch, first, then):
    store, stats = encode_store(enc, TEXTS, shard_size=8, root=tmp_path, max_tokens=first)
    assert stats == StoreStats(rows=16, shards=2, encoded=2, reused=0)
    shapes = spy_forward(monkeypatch)
    for max_tokens in then:
        again, stats = encode_store(enc, TEXTS, shard_size=8, root=tmp_path, max_tokens=max_tokens)
        assert stats == StoreStats(rows=16, shards=2, encoded=0, reused=2), max_tokens
        assert again.root == store.root
        np.testing.assert_array_equal(again.to_array(), store.to_array())
    assert shapes == []


class _OlderEncoder:
    """An EncoderLike written before the budget: its encode has no max_tokens parameter."""

    config, name_or_path = None, "older"

    def __init__(self, enc):
        self.enc, self.embedding_dim = enc, enc.embedding_dim

    def encode(self, texts, batch_size=32, is_query=False, dim=None, show_progress=None):
        return self.enc.encode(texts, batch_size=batch_size, is_query=is_query, show_progress=show_progress)

    def state_dict(self):
        return {}


def test_an_encoder_without_the_parameter_still_works_without_the_option(enc, tmp_path):
    store, stats = encode_store(_OlderEncoder(enc), TEXTS, shard_size=8, root=tmp_path, fingerprint="older")
    assert stats.encoded == 2
    np.testing.assert_allclose(store.to_array(), enc.encode(TEXTS), atol=1e-6, rtol=0)

def test_cli_encode_with_max_tokens_equals_the_output_without(tiny_bert, tmp_path, monkeypatch, capsys):
    txt = tmp_path / "in.txt"
    txt.write_text("\n".join(TEXTS) + "\n")
    base = ["encode", "--model", str(tiny_bert), "--input", str(txt), "--batch_size", "4", "--shard_size", "8"]
    assert main(base + ["--output", str(tmp_path / "plain.npy"), "--store_dir", str(tmp_path / "a")]) == 0
    shapes = spy_forward(monkeypatch)
    assert main(base + ["--output", str(tmp_path / "budget.npy"), "--store_dir", str(tmp_path / "b"),
                        "--max_tokens", "64"]) == 0
    assert [r for r, _ in shapes] == [1, 1, 6, 1, 1, 6]
    assert "2 encoded, 0 reused" in capsys.readouterr().out
    budget, plain = np.load(tmp_path / "budget.npy"), np.load(tmp_path / "plain.npy")
    assert budget.shape == (16, 32)
    np.testing.assert_allclose(budget, plain, atol=1e-6, rtol=0)
    np.testing.assert_allclose(plain, Encoder.from_pretrained(tiny_bert).encode(TEXTS, batch_size=4), atol=1e-6,
                               rtol=0)


def test_mine_and_eval_pass_the_budget_down(tiny_bert, tmp_path, monkeypatch):
    """`mine`, `eval` (retrieval) and `eval` (STS) batch by the budget on each of their encoding paths: the
    4 long texts one by one, the 12 short ones (and the 4 queries) in one batch each, where --batch_size 2
    alone would make batches of 2."""
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                               for i, t in enumerate(TEXTS)))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": w}) + "\n"
                                                for i, w in enumerate(["cat", "dog", "bird", "fish house"])))
    for split in ("train", "test"):
        (beir / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"q{i}\td{i + 1}\t1\n" for i in range(4)))
    sts = tmp_path / "sts-test.csv"
    sts.write_text("".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 5}\t{a}\t{b}\n"
                           for i, (a, b) in enumerate(zip(TEXTS[:8], TEXTS[8:]))))
    budgeted = [1, 1, 1, 1, 12]  # the 16 texts (one shard): 64 // 64 long, 64 // 5 short
    commands = {
        "mine": ["mine", "--input_file", str(beir), "--output_file", str(tmp_path / "mined.jsonl"),
                 "--range_for_sampling", "0-10", "--negative_number", "2"],
        "eval": ["eval", "--data", str(beir), "--k", "1,3"],
        "sts": ["eval", "--data", str(sts)],
    }
    queries = {"mine": [4], "eval": [4], "sts": []}  # mining stores the queries, eval encodes them directly
    shapes = spy_forward(monkeypatch)
    for name, argv in commands.items():
        shapes.clear()
        assert main(argv + ["--model", str(tiny_bert), "--batch_size", "2", "--max_tokens", "64",
                            "--store_dir", str(tmp_path / name)]) == 0, name
        assert [r for r, _ in shapes] == budgeted + queries[name], name
        assert all(r * w <= 64 for r, w in shapes), (name, shapes)
