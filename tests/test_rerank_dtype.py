"""Cross-encoders in bfloat16 (issues #18/#19): ``score --dtype``, ``eval --rerank_dtype`` and ``mine
--reranker_dtype`` load the reranker in the dtype asked for (a spy on its forward sees bfloat16 logits),
its scores stay close to float32's without being equal, they come back as float32, and float16 on CPU
is refused before a model is loaded. A bi-encoder teacher goes through ``apply_precision``: its vectors
are encoded again, under another cache key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import WORDS

import embforge
from embforge.cli import main
from embforge.errors import EmbforgeError
from embforge.model.cross_encoder import CrossEncoder

RECORDS = [{"query": " ".join(WORDS[i:i + 3]), "pos": [" ".join(WORDS[i + 3:i + 9])],
            "neg": [" ".join(WORDS[(i + j) % 40:(i + j) % 40 + 5]) for j in range(1, 4)]} for i in range(6)]
EVAL_RECORDS = [{"query": f"{WORDS[3 * i]} {WORDS[3 * i + 1]}", "pos": [f"{WORDS[3 * i + 2]} {WORDS[40 + i]}"],
                 "neg": [f"{WORDS[3 * i]} {WORDS[50 + i]}"]} for i in range(8)]


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of its own


@pytest.fixture
def logit_dtypes(monkeypatch) -> list[torch.dtype]:
    """The dtype of every batch of logits a cross-encoder computes: the dtype it really ran in."""
    seen: list[torch.dtype] = []
    forward = CrossEncoder.forward

    def spy(self, features):
        logits = forward(self, features)
        seen.append(logits.dtype)
        return logits

    monkeypatch.setattr(CrossEncoder, "forward", spy)
    return seen


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def flat_scores(path: Path) -> np.ndarray:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return np.array([s for r in rows for s in r["pos_scores"] + r["neg_scores"]])


def test_score_dtype_bfloat16_runs_the_cross_encoder_in_bf16_close_to_float32(tmp_path, reranker, logit_dtypes):
    data = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    argv = ["score", "--model", str(reranker), "--input", str(data), "--batch_size", "8"]
    assert main([*argv, "--output", str(tmp_path / "fp32.jsonl")]) in (0, None)
    assert set(logit_dtypes) == {torch.float32}  # the default
    logit_dtypes.clear()
    assert main([*argv, "--output", str(tmp_path / "bf16.jsonl"), "--dtype", "bfloat16"]) in (0, None)
    assert logit_dtypes and set(logit_dtypes) == {torch.bfloat16}
    fp32, bf16 = flat_scores(tmp_path / "fp32.jsonl"), flat_scores(tmp_path / "bf16.jsonl")
    assert len(fp32) == 6 * 4 and not np.array_equal(fp32, bf16)
    assert np.abs(bf16 - fp32).max() < 5e-2 * np.abs(fp32).max()  # relative: the tiny model's logits are ~1e-2
    # exactly what a bf16 cross-encoder predicts, and predict hands back float32
    pairs = [(r["query"], t) for r in RECORDS for t in r["pos"] + r["neg"]]
    ref = CrossEncoder.from_pretrained(str(reranker), device="cpu", dtype=torch.bfloat16).predict(pairs)
    assert ref.dtype == np.float32
    np.testing.assert_allclose(bf16, ref, atol=1e-6)
    with pytest.raises(EmbforgeError, match="--dtype float16 needs a GPU"):
        embforge.score(model=str(reranker), input_file=str(data), output_file=str(tmp_path / "x.jsonl"),
                       dtype="float16")


def test_score_dtype_bfloat16_casts_a_bi_encoder_teacher_and_changes_its_cache_key(tmp_path, tiny_bert_nodrop):
    data = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    args = dict(model=str(tiny_bert_nodrop), input_file=str(data), teacher_type="bi")
    fp32 = embforge.score(**args, output_file=str(tmp_path / "fp32.jsonl"))
    bf16 = embforge.score(**args, output_file=str(tmp_path / "bf16.jsonl"), dtype="bfloat16")
    assert fp32["store"]["encoded"] > 0 and bf16["store"] == fp32["store"]  # encoded again: another key
    a, b = flat_scores(tmp_path / "fp32.jsonl"), flat_scores(tmp_path / "bf16.jsonl")
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 5e-2  # cosines


def test_eval_rerank_dtype_bfloat16_reranks_in_bf16_and_float16_on_cpu_is_refused(
        tiny_bert_nodrop, reranker, logit_dtypes, monkeypatch):
    plain = embforge.evaluate(model=str(tiny_bert_nodrop), data=EVAL_RECORDS)
    report = embforge.evaluate(model=str(tiny_bert_nodrop), data=EVAL_RECORDS, rerank=str(reranker),
                               rerank_dtype="bfloat16")
    assert logit_dtypes and set(logit_dtypes) == {torch.bfloat16}
    assert report["metrics"] == plain["metrics"]  # before: the embedder's own (its --dtype is not touched)
    assert report["rerank"]["dtype"] == "bfloat16" and report["rerank"]["metrics"].keys() == plain["metrics"].keys()
    logit_dtypes.clear()
    default = embforge.evaluate(model=str(tiny_bert_nodrop), data=EVAL_RECORDS, rerank=str(reranker))
    assert set(logit_dtypes) == {torch.float32} and default["rerank"]["dtype"] == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, even on a GPU host
    logit_dtypes.clear()
    with pytest.raises(EmbforgeError, match="--rerank_dtype float16 needs a GPU; on CPU use --rerank_dtype bfloat16"):
        embforge.evaluate(model=str(tiny_bert_nodrop), data=EVAL_RECORDS, rerank=str(reranker), rerank_dtype="float16")
    assert logit_dtypes == []


def test_mine_reranker_dtype_bfloat16_reaches_the_reranker(tmp_path, tiny_bert_nodrop, reranker, logit_dtypes):
    data = write_jsonl(tmp_path / "in.jsonl", [{"query": "alpha query", "pos": ["alpha pos"]},
                                              {"query": "beta query", "pos": ["beta pos"]}])
    pool = tmp_path / "pool.txt"
    pool.write_text("".join(f"doc {n}\n" for n in range(12)))
    argv = ["mine", "--model", str(tiny_bert_nodrop), "--input", str(data), "--candidate_pool", str(pool),
            "--range_for_sampling", "0-12", "--negative_number", "3", "--reranker", str(reranker)]
    main([*argv, "--output", str(tmp_path / "bf16.jsonl"), "--reranker_dtype", "bfloat16"])
    assert logit_dtypes and set(logit_dtypes) == {torch.bfloat16}
    assert len((tmp_path / "bf16.jsonl").read_text().splitlines()) == 2
    logit_dtypes.clear()
    main([*argv, "--output", str(tmp_path / "fp32.jsonl")])
    assert logit_dtypes and set(logit_dtypes) == {torch.float32}
