"""Teacher scores and second-stage reranking: ``embforge score`` writes the scores a cross-encoder or an
embedder gives by hand (fields kept, atomically, 2 torchrun processes = 1); ``eval --rerank`` with an oracle
stand-in reaches nDCG@10 = 1 and keeps the first stage's order on ties; ``mine --reranker`` drops exactly the
band candidates the stand-in scores within the margin of the weakest positive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_distributed import free_port
from tiny import WORDS

import embforge
import embforge.scoring
from embforge.cli import main
from embforge.errors import EmbforgeError
from embforge.model import Encoder
from embforge.model.cross_encoder import CrossEncoder

SRC = str(Path(__file__).resolve().parents[1] / "src")
RECORDS = [
    {"query": "the cat sleeps", "pos": ["a cat sleeps in the house", "cat"], "neg": ["dog runs", "protein gene"],
     "prompt": "p", "type": "normal", "custom": [1, 2]},
    {"custom": 3, "query": "science data", "pos": ["study of data"], "neg": ["the house", "one two three"]},
    {"query": "a dog runs", "pos": "dog runs fast"},  # a string positive, no neg
]


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of its own


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- score
def test_score_with_a_cross_encoder_writes_its_predictions_and_keeps_every_field(tmp_path, reranker, capsys):
    data = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--model", str(reranker), "--input", str(data), "--output", str(out)]) in (0, None)
    assert "cross-encoder teacher" in capsys.readouterr().out
    ce = CrossEncoder.from_pretrained(str(reranker), device="cpu")
    got = read_jsonl(out)
    for record, scored in zip(RECORDS, got):
        pos = [record["pos"]] if isinstance(record["pos"], str) else record["pos"]
        neg = record.get("neg", [])
        assert list(scored)[:len(record)] == list(record)  # every field, in its order
        assert {k: v for k, v in scored.items() if k not in ("pos", "pos_scores", "neg_scores")} == \
            {k: v for k, v in record.items() if k != "pos"}
        np.testing.assert_allclose(scored["pos_scores"], ce.predict([(record["query"], p) for p in pos]), atol=1e-5)
        np.testing.assert_allclose(scored["neg_scores"], ce.predict([(record["query"], n) for n in neg]) if neg
                                   else [], atol=1e-5)
    assert len(got) == 3 and got[2]["neg_scores"] == [] and len(set(got[0]["pos_scores"] + got[0]["neg_scores"])) == 4


def test_score_with_an_embedder_writes_cosines_through_the_cached_store(tmp_path, tiny_bert_nodrop):
    data = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    out = tmp_path / "scored.jsonl"
    first = embforge.score(model=str(tiny_bert_nodrop), input_file=str(data), output_file=str(out), batch_size=2)
    enc = Encoder.from_pretrained(str(tiny_bert_nodrop), device="cpu")
    for record, scored in zip(RECORDS, read_jsonl(out)):
        q = enc.encode([record["query"]], is_query=True)[0]
        q = q / np.linalg.norm(q)
        for key in ("pos", "neg"):
            texts = record.get(key) or []
            texts = [texts] if isinstance(texts, str) else texts
            docs = enc.encode(texts) if texts else np.zeros((0, q.shape[0]))
            cos = docs @ q / np.maximum(np.linalg.norm(docs, axis=1), 1e-12) if texts else []
            np.testing.assert_allclose(scored[f"{key}_scores"], cos, atol=1e-5)
    assert first["teacher"] == "bi" and first["store"]["encoded"] > 0
    again = embforge.score(model=str(tiny_bert_nodrop), input_file=str(data), output_file=str(tmp_path / "b.jsonl"))
    assert again["store"] == {"encoded": 0, "reused": first["store"]["encoded"]}  # the store is the cache


def test_score_failing_midway_leaves_the_old_output_whole(tmp_path, reranker, monkeypatch):
    data = write_jsonl(tmp_path / "mined.jsonl", RECORDS)
    out = tmp_path / "scored.jsonl"
    out.write_text("precious\n")

    class DiesOnSecondLine:  # the first record is written, then the run dies
        loads = staticmethod(json.loads)
        calls = 0

        @classmethod
        def dumps(cls, *args, **kwargs):
            cls.calls += 1
            if cls.calls == 2:
                raise RuntimeError("killed")
            return json.dumps(*args, **kwargs)

    monkeypatch.setattr(embforge.scoring, "json", DiesOnSecondLine)
    with pytest.raises(RuntimeError, match="killed"):
        embforge.score(model=str(reranker), input_file=str(data), output_file=str(out))
    assert DiesOnSecondLine.calls == 2
    monkeypatch.undo()
    assert out.read_text() == "precious\n" and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(EmbforgeError, match="teacher_type"):
        embforge.score(model=str(reranker), input_file=str(data), output_file=str(out), teacher_type="mono")


def test_score_on_two_processes_writes_what_one_writes(tmp_path, reranker):
    many = [{"query": " ".join(WORDS[i:i + 3]), "pos": [" ".join(WORDS[i + 3:i + 8])],
             "neg": [" ".join(WORDS[(i + j) % 40:(i + j) % 40 + 4]) for j in range(1, 4)]} for i in range(7)]
    data = write_jsonl(tmp_path / "mined.jsonl", many)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EMBFORGE_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    one_proc = tmp_path / "scored1.jsonl"
    embforge.score(model=str(reranker), input_file=str(data), output_file=str(one_proc), batch_size=4)
    out = tmp_path / "scored2.jsonl"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(free_port()), "-m", "embforge.cli", "score", "--model",
                           str(reranker), "--input", str(data), "--output", str(out), "--batch_size", "4"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("scored 28 pairs") == 1  # rank 0 alone speaks and writes
    outs = [read_jsonl(one_proc), read_jsonl(out)]
    for one, two in zip(*outs):
        assert {k: v for k, v in one.items() if not k.endswith("_scores")} == \
            {k: v for k, v in two.items() if not k.endswith("_scores")}
        np.testing.assert_allclose(one["pos_scores"] + one["neg_scores"], two["pos_scores"] + two["neg_scores"],
                                   atol=1e-5)


# ---------------------------------------------------------------------------------------------- eval --rerank
EVAL_RECORDS = [{"query": f"{WORDS[3 * i]} {WORDS[3 * i + 1]}", "pos": [f"{WORDS[3 * i + 2]} {WORDS[40 + i]}"],
                 "neg": [f"{WORDS[3 * i]} {WORDS[50 + i]}"]} for i in range(8)]
RELEVANT = {(r["query"], r["pos"][0]) for r in EVAL_RECORDS}


def test_eval_rerank_with_an_oracle_reaches_ndcg_1_and_keeps_the_first_stage_before(
        tiny_bert_nodrop, reranker, monkeypatch, capsys):
    plain = embforge.evaluate(model=str(tiny_bert_nodrop), data=EVAL_RECORDS)
    assert plain["metrics"]["nDCG@10"] < 0.9  # the random tiny embedder leaves room for the oracle
    capsys.readouterr()
    seen: list[tuple[str, str]] = []

    def oracle(self, pairs, batch_size=32, activation=None, show_progress_bar=None):
        seen.extend(pairs)
        return np.array([1.0 if p in RELEVANT else 0.0 for p in pairs], dtype=np.float32)

    monkeypatch.setattr(CrossEncoder, "predict", oracle)
    report = embforge.evaluate(model=str(tiny_bert_nodrop), data=EVAL_RECORDS, rerank=str(reranker), rerank_top_k=100)
    assert report["metrics"] == plain["metrics"]  # before: the embedder's own
    assert report["rerank"]["metrics"]["nDCG@10"] == pytest.approx(1.0)
    assert report["rerank"]["metrics"]["MRR@10"] == pytest.approx(1.0)
    assert report["rerank"]["top_k"] == 100 and report["rerank"]["model"] == str(reranker)
    assert len(seen) == 8 * 16 and RELEVANT <= set(seen)  # every query x its top-16 (the whole corpus)
    table = capsys.readouterr().out
    assert "reranked top 100" in table
    row = next(line for line in table.splitlines() if line.startswith("nDCG@10"))
    assert row.split()[1:] == [f"{plain['metrics']['nDCG@10']:.4f}", "1.0000"]


def test_eval_rerank_ties_keep_the_first_stage_order(tiny_bert_nodrop, reranker, monkeypatch):
    plain = embforge.evaluate(model=str(tiny_bert_nodrop), data=EVAL_RECORDS)
    monkeypatch.setattr(CrossEncoder, "predict",
                        lambda self, pairs, **kw: np.zeros(len(pairs), dtype=np.float32))
    report = embforge.evaluate(model=str(tiny_bert_nodrop), data=EVAL_RECORDS, rerank=str(reranker), rerank_top_k=5)
    assert report["rerank"]["metrics"] == plain["metrics"]


def test_eval_rerank_on_sts_data_is_an_error(tiny_bert_nodrop, reranker):
    pairs = [{"text1": "a cat", "text2": "the cat", "label": 4.0}, {"text1": "a dog", "text2": "gene", "label": 0.5}]
    with pytest.raises(EmbforgeError, match="STS data"):
        embforge.evaluate(model=str(tiny_bert_nodrop), data=pairs, rerank=str(reranker))


# ---------------------------------------------------------------------------------------------- mine --reranker
def test_mine_with_a_reranker_drops_the_candidates_it_scores_within_the_margin(
        tmp_path, tiny_bert_nodrop, reranker, monkeypatch, capsys):
    # stand-in scores: "doc N" scores N; the positives 10 and 12 (weakest 10), and 4
    table = {f"doc {n}": float(n) for n in range(20)} | {"alpha pos": 10.0, "alpha other": 12.0, "beta pos": 4.0}
    scored: list[tuple[str, str]] = []

    def stand_in(self, pairs, batch_size=32, activation=None, show_progress_bar=None):
        scored.extend(pairs)
        return np.array([table[t] for _, t in pairs], dtype=np.float32)

    monkeypatch.setattr(CrossEncoder, "predict", stand_in)
    data = write_jsonl(tmp_path / "in.jsonl", [{"query": "alpha query", "pos": ["alpha pos", "alpha other"]},
                                              {"query": "beta query", "pos": ["beta pos"]}])
    pool = tmp_path / "pool.txt"
    pool.write_text("".join(f"doc {n}\n" for n in range(20)))
    out = tmp_path / "mined.jsonl"
    main(["mine", "--model", str(tiny_bert_nodrop), "--input", str(data), "--output", str(out), "--candidate_pool",
          str(pool), "--range_for_sampling", "0-100", "--negative_number", "4", "--reranker", str(reranker),
          "--false_negative_margin", "1.0"])
    alpha, beta = read_jsonl(out)
    # thresholds: alpha min(10, 12) - 1 = 9 drops doc 9..19 (11); beta 4 - 1 = 3 drops doc 3..19 (17)
    assert set(alpha["neg"]) <= {f"doc {n}" for n in range(9)} and len(alpha["neg"]) == 4
    assert sorted(beta["neg"]) == ["doc 0", "doc 1", "doc 2"]  # too few left, and padding obeys the drops
    assert "dropped 28 candidate(s)" in capsys.readouterr().out
    # only the positives and the band (the whole 20-doc pool here) were scored
    assert len(scored) == 3 + 2 * 20

    scored.clear()
    mined, stats = embforge.mining.mine_negatives(
        Encoder.from_pretrained(str(tiny_bert_nodrop), device="cpu"), read_jsonl(data),
        [f"doc {n}" for n in range(20)], range_for_sampling="0-5", negative_number=2,
        reranker=CrossEncoder.from_pretrained(str(reranker), device="cpu"))  # margin 0: score >= the positive
    assert len(scored) == 3 + 2 * 5  # a band of 5: the rest of the pool is never scored
    dropped = sum(1 for q, t in scored if t.startswith("doc") and
                  table[t] >= (10.0 if q == "alpha query" else 4.0))
    assert stats.margin_dropped == dropped
