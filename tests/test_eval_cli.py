"""`embforge eval` end to end on a tiny model: data detection, reports, plots, cache and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embforge.cli import main
from embforge.model import Encoder

DOCS = {
    "d1": ("cats", "the cat sleeps in the house"),
    "d2": ("dogs", "a dog runs on the road"),
    "d3": ("", "science study of protein and gene data"),
    "d4": ("cars", "the big red car is fast"),
    "d5": ("", "a small bird eats"),
    "d6": ("", "cancer cell"),
}
QUERIES = {"q1": "cat house", "q2": "protein gene", "q3": "red car", "q4": "bird"}


def write_beir(folder: Path, qrels_rows: list[str], docs: dict = DOCS) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\r\n" + "".join(r + "\r\n" for r in qrels_rows))
    return folder


GOOD_QRELS = ["q1\td1\t1", "q2\td3\t2", "q2\td6\t1", "q3\td4\t1"]


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of its own


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("embforge eval: error:")
    return err


def test_beir_eval_writes_report_plot_and_table(tmp_path, tiny_bert, capsys):
    data = write_beir(tmp_path / "beir", GOOD_QRELS)
    report = tmp_path / "out" / "report.json"
    assert main(["eval", "--model", str(tiny_bert), "--data", str(data), "--k", "1,3", "--dims", "8,16,32",
                 "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "nDCG@3" in out and "dim 8" in out and "dim 32" in out
    rep = json.loads(report.read_text())
    assert rep["task"] == "retrieval" and rep["queries"] == 3 and rep["corpus_size"] == 6
    assert set(rep["dims"]) == {"8", "16", "32"}
    assert rep["metrics"] == rep["dims"]["32"] and rep["model"] == str(tiny_bert)
    assert set(rep["dims"]["32"]) >= {"nDCG@1", "MRR@3", "Recall@3", "MAP@3"}
    assert {"encode_corpus_s", "total_s"} <= set(rep["timings"])
    png = report.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_at_a_dim_equal_a_direct_computation(tmp_path, tiny_bert):
    """The reported numbers are the metrics of the model's own truncated encodings (no cache mix-up)."""
    from embforge.commands.eval import Config, run
    from embforge.evaluation.metrics import retrieval_metrics
    from embforge.evaluation.search import exact_search

    data = write_beir(tmp_path / "beir", GOOD_QRELS)
    rep = run(Config(model_name_or_path=str(tiny_bert), data=str(data), k=[1, 3], dims=[16]))
    enc = Encoder.from_pretrained(str(tiny_bert), device="cpu")
    ids = list(DOCS)
    docs = enc.encode([f"{t} {x}".strip() for t, x in DOCS.values()], dim=16)
    qids = ["q1", "q2", "q3"]
    qs = enc.encode([QUERIES[q] for q in qids], is_query=True, dim=16)
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 2, "d6": 1}, "q3": {"d4": 1}}
    want = retrieval_metrics(dict(zip(qids, exact_search(qs, docs, ids, 3))), qrels, [1, 3])
    for key in ("nDCG@3", "MRR@3", "Recall@1", "MAP@3"):
        assert rep["dims"]["16"][key] == pytest.approx(want[key], abs=1e-6)


def test_second_run_reads_corpus_from_cache(tmp_path, tiny_bert, monkeypatch):
    from embforge.commands.eval import Config, run

    data = write_beir(tmp_path / "beir", GOOD_QRELS)
    first = run(Config(model_name_or_path=str(tiny_bert), data=str(data), k=[1, 3]))
    assert first["corpus_from_cache"] is False
    calls = []
    original = Encoder.encode

    def spy(self, texts, *args, **kwargs):
        calls.append((len(texts), kwargs.get("is_query")))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", spy)
    second = run(Config(model_name_or_path=str(tiny_bert), data=str(data), k=[1, 3, 5]))
    assert second["corpus_from_cache"] is True
    assert calls == [(3, True)]  # only the queries were encoded
    assert second["dims"]["32"]["nDCG@3"] == pytest.approx(first["dims"]["32"]["nDCG@3"])
    third = run(Config(model_name_or_path=str(tiny_bert), data=str(data), k=[1, 3], no_cache=True))
    assert third["corpus_from_cache"] is False


def test_jsonl_eval_reports_msmarco_block(tmp_path, tiny_bert):
    from embforge.commands.eval import Config, run

    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"query": "cat house", "pos": ["the cat sleeps in the house"], "neg": ["a dog runs on the road"]},
        {"query": "red car", "pos": ["the big red car is fast"], "neg": ["cancer cell"], "type": "x"},
        {"query": "cat house", "pos": ["a small bird eats"]},
    ]))
    rep = run(Config(model_name_or_path=str(tiny_bert), data=str(path)))
    assert rep["corpus_size"] == 5 and rep["queries"] == 2
    block = rep["dims"]["32"]["msmarco"]
    assert list(block) == ["MRR@1", "MRR@10", "MRR@100", "Recall@1", "Recall@10", "Recall@100"]
    assert block["Recall@10"] == pytest.approx(1.0)  # 5 docs: everything is within the top 10


def test_sts_b_and_sick_are_detected(tmp_path, tiny_bert):
    from embforge.commands.eval import Config, run

    pairs = [("the cat sleeps", "a cat sleeps", 4.5), ("a dog runs", "the car is red", 0.5),
             ("protein gene", "gene data", 3.0), ("one two", "cancer cell", 1.0)]
    stsb = tmp_path / "sts-test.csv"
    stsb.write_text("".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s}\t{a}\t{b}\n"
                            for i, (a, b, s) in enumerate(pairs)))
    sick = tmp_path / "SICK.txt"
    sick.write_text("pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\tSemEval_set\r\n" + "\r\n".join(
        f"{i}\t{a}\t{b}\tNEUTRAL\t{1 + s * 0.8}\tTEST" for i, (a, b, s) in enumerate(pairs)))
    a = run(Config(model_name_or_path=str(tiny_bert), data=str(stsb), dims=[16, 32]))
    b = run(Config(model_name_or_path=str(tiny_bert), data=str(sick)))
    c = run(Config(model_name_or_path=str(tiny_bert), data=str(tmp_path)))  # a folder with sts-test.csv
    assert a["format"] == "stsb" and b["format"] == "sick" and c["format"] == "stsb"
    assert a["pairs"] == b["pairs"] == 4
    # SICK scores are a monotone map of the STS-B ones: same Spearman
    assert b["dims"]["32"]["spearman"] == pytest.approx(a["dims"]["32"]["spearman"])
    assert set(a["dims"]) == {"16", "32"}


def test_missing_qrels_ids_warn_with_counts_or_fail_under_strict(tmp_path, tiny_bert, capsys):
    rows = GOOD_QRELS + ["q1\tnope\t1", "q9\td2\t1", "q3\tgone\t1"]
    data = write_beir(tmp_path / "beir", rows)
    report = tmp_path / "r.json"
    assert main(["eval", "--model", str(tiny_bert), "--data", str(data), "--report", str(report)]) == 0
    captured = capsys.readouterr()
    assert "1 query id(s) not in the queries" in captured.err
    assert "2 document id(s) not in the corpus" in captured.err
    assert json.loads(report.read_text())["queries"] == 3
    assert main(["eval", "--model", str(tiny_bert), "--data", str(data), "--strict"]) == 2
    err = one_line_error(capsys)
    assert "2 document id(s)" in err and "--strict" in err


@pytest.mark.parametrize("args, needle", [
    (["--k", "0"], "positive"),
    (["--k", "1,x"], "integers"),
    (["--dims", "16,64"], "64 is outside 1..32"),
    (["--batch_size", "0"], "batch_size"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, tiny_bert, capsys, args, needle):
    data = write_beir(tmp_path / "beir", GOOD_QRELS)
    assert main(["eval", "--model", str(tiny_bert), "--data", str(data), *args]) == 2
    assert needle in one_line_error(capsys)


def test_bad_data_exit_2_with_one_line(tmp_path, tiny_bert, capsys):
    empty = write_beir(tmp_path / "empty", GOOD_QRELS, docs={})
    assert main(["eval", "--model", str(tiny_bert), "--data", str(empty)]) == 2
    assert "corpus is empty" in one_line_error(capsys)
    assert main(["eval", "--model", str(tiny_bert), "--data", str(tmp_path / "nowhere")]) == 2
    assert "not found" in one_line_error(capsys)
    odd = tmp_path / "notes.txt"
    odd.write_text("just some words\n")
    assert main(["eval", "--model", str(tiny_bert), "--data", str(odd)]) == 2
    assert "unrecognised data" in one_line_error(capsys)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": ["a"]}\n{"query": 3}\n')
    assert main(["eval", "--model", str(tiny_bert), "--data", str(bad)]) == 2
    assert "bad.jsonl:2" in one_line_error(capsys)
    nosplit = write_beir(tmp_path / "nosplit", GOOD_QRELS)
    assert main(["eval", "--model", str(tiny_bert), "--data", str(nosplit), "--split", "dev"]) == 2
    assert "available: test" in one_line_error(capsys)
