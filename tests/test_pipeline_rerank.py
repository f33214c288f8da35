"""``embforge run`` with train_reranker, score and distill: on tiny models, the scored file is what ``embforge
score`` writes with the trained reranker, the distill step trains on those scores with kd (other scores give
another model), the report holds base, distilled and the reranked evaluation with its metrics before and
after, a rerun skips every step and a changed distill setting reruns only distill and what follows it.
The YAML's mistakes in the new sections fail before anything runs, naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_pipeline import DATA, write_yaml

from embforge.cli import main
from embforge.config import from_dict
from embforge.errors import EmbforgeError
from embforge.pipeline import load_pipeline, run_pipeline

STEPS = ["mine", "eval-base", "train_reranker", "score", "distill", "eval-distilled", "eval-distilled+reranker",
         "report"]


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of its own


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def vectors(model):
    from tiny import SENTENCES

    from embforge.model import Encoder

    return Encoder.from_pretrained(str(model)).encode(SENTENCES, batch_size=8)


def test_reranker_loop_scores_distils_reports_and_resumes(tiny_bert_nodrop, bundled_data, tmp_path):
    from embforge.training.config import TrainConfig
    from embforge.training.run import train

    scifact = str(bundled_data / "scifact")
    cpu = {"report_to": "none", "use_cpu": True, "save_strategy": "no"}
    config = {"name": "tiny loop", "model": str(tiny_bert_nodrop), "output_dir": str(tmp_path / "run"),
              "mine": {"input_file": scifact, "range_for_sampling": "2-20", "negative_number": 3},
              "train_reranker": {"train_group_size": 4, "learning_rate": 1e-3, "max_length": 32, **cpu},
              "score": {"batch_size": 8},
              "distill": {"learning_rate": 1e-3, "passage_max_len": 32, "query_max_len": 16, "train_group_size": 4,
                          **cpu},
              "eval": {"data": scifact, "k": "1,10", "dims": "16,32", "max_length": 32, "rerank_top_k": 20}}
    report = run_pipeline(config, sanity_test=True)
    out = tmp_path / "run" / "sanity_test"
    steps = report["run"]["steps"]
    assert list(steps) == STEPS and not any(s["skipped"] for s in steps.values())

    # score: what `embforge score` writes with the trained reranker on the mined file
    assert main(["score", "--model", str(out / "reranker"), "--input_file", str(out / "mine" / "train.jsonl"),
                 "--output_file", str(tmp_path / "direct.jsonl"), "--batch_size", "8"]) == 0
    scored, direct = read_jsonl(out / "score" / "train.jsonl"), read_jsonl(tmp_path / "direct.jsonl")
    assert len(scored) == len(direct) == 8  # the sanity slice's train queries
    for ours, theirs in zip(scored, direct):
        assert len(ours["neg_scores"]) == len(ours["neg"]) == 3
        for key in ("pos_scores", "neg_scores"):
            np.testing.assert_allclose(ours[key], theirs[key], atol=1e-6, rtol=0)
    assert len({s for r in scored for s in r["neg_scores"]}) > 3  # real, varying scores

    # distill: the base model trained with kd on the scored file; the same run replayed gives the same
    # model, and the same run on other scores another one, so the scores were used
    train_report = json.loads((out / "distill" / "train_report.json").read_text())
    assert train_report["loss"]["teacher_scores"] == "kd"
    assert train_report["train_data"] == str(out / "score" / "train.jsonl")
    assert train_report["model"] == str(tiny_bert_nodrop)
    settings = next(s for s in load_pipeline(config, sanity_test=True).steps if s.name == "distill").config
    replay = train(from_dict(TrainConfig, {**settings, "output_dir": str(tmp_path / "replay")}))
    assert replay.report["global_steps"] == train_report["global_steps"] == 4
    np.testing.assert_allclose(vectors(tmp_path / "replay"), vectors(out / "distill"), atol=1e-6, rtol=0)
    flipped = tmp_path / "flipped.jsonl"
    flipped.write_text("".join(json.dumps({**r, "pos_scores": [-10.0] * len(r["pos"]),
                                           "neg_scores": [10.0] * len(r["neg"])}) + "\n" for r in scored))
    other = train(from_dict(TrainConfig, {**settings, "train_data": str(flipped), "output_dir": str(tmp_path / "o")}))
    assert other.report["loss"]["teacher_scores"] == "kd"
    assert np.abs(vectors(tmp_path / "o") - vectors(out / "distill")).max() > 1e-4

    # report: the embedder alone and with the reranker; the reranked row is the final ranking, its
    # first stage the distilled model's own evaluation
    assert set(report["summary"]["nDCG@10"]) == {"base", "distilled", "distilled+reranker"}
    distilled = json.loads((out / "eval" / "distilled.json").read_text())
    reranked = json.loads((out / "eval" / "distilled+reranker.json").read_text())
    assert "rerank" not in distilled and reranked["rerank"]["model"] == str(out / "reranker")
    assert reranked["metrics"] == distilled["metrics"]
    entry = report["rerank"]["distilled+reranker"]
    assert entry["before"] == distilled["metrics"] and entry["after"] == reranked["rerank"]["metrics"]
    assert entry["top_k"] == 20 and entry["reranker"] == str(out / "reranker")
    for metric in ("nDCG@10", "MRR@10"):
        assert report["summary"][metric]["distilled"] == distilled["metrics"][metric]
        assert report["summary"][metric]["distilled+reranker"] == reranked["rerank"]["metrics"][metric]
    assert report["models"]["reranker"] == str(out / "reranker")
    assert steps["eval-distilled+reranker"]["reranked"] == reranked["rerank"]["metrics"]
    assert "+reranker" not in (out / "distill" / "README.md").read_text()  # the card holds the model's own eval

    again = run_pipeline(config, sanity_test=True)
    assert all(s["skipped"] for s in again["run"]["steps"].values())
    assert again["summary"] == report["summary"] and again["rerank"] == report["rerank"]
    config["distill"]["learning_rate"] = 2e-3
    third = run_pipeline(config, sanity_test=True)
    ran = [name for name, s in third["run"]["steps"].items() if not s["skipped"]]
    assert ran == ["distill", "eval-distilled", "eval-distilled+reranker", "report"]


def test_trained_embedder_is_the_one_reranked_without_distill(tmp_path):
    scifact = str(DATA)
    pipe = load_pipeline({"output_dir": str(tmp_path), "mine": {"input_file": scifact},
                          "train": {"report_to": "none"}, "train_reranker": {"report_to": "none"},
                          "eval": {"data": scifact}})
    step = pipe.steps[-2]
    assert step.name == "eval-trained+reranker" and step.upstream == ["train", "train_reranker"]
    assert step.config["model_name_or_path"] == str(tmp_path / "train")
    assert step.config["rerank"] == str(tmp_path / "reranker")
    assert next(s for s in pipe.steps if s.name == "train_reranker").config["task"] == "rerank"


@pytest.mark.parametrize("text, message", [
    ("mine:\n  input_file: {data}\ntrain_reranker:\n  max_length: 32\nscore:\n  batch_sise: 8\n",
     r"p\.yaml:6: unknown key 'batch_sise' in the score step \(did you mean 'batch_size'\?\)"),
    ("mine:\n  input_file: {data}\nscore:\n  batch_size: 8\n",
     r"p\.yaml:3: the score step has no teacher: add a train_reranker step or give score\.model"),
    ("train_reranker:\n  train_data: {data}\nscore:\n  batch_size: 8\n",
     r"p\.yaml:3: the score step has no data: add a mine step or give score\.input_file"),
    ("mine:\n  input_file: {data}\nscore:\n  model: nowhere/reranker\n",
     r"p\.yaml:4: model not found: .*nowhere/reranker"),
    ("mine:\n  input_file: {data}\ntrain_reranker:\n  task: embed\n",
     r"p\.yaml:4: 'task' in the train_reranker step is filled in by the pipeline"),
    ("mine:\n  input_file: {data}\ntrain_reranker:\n  recipe: flag\n",
     r"p\.yaml:3: --task rerank: --recipe do\(es\) not apply"),
    ("mine:\n  input_file: {data}\ntrain_reranker:\n  lerning_rate: 1\n",
     r"p\.yaml:4: unknown key 'lerning_rate' in the train_reranker step \(did you mean 'learning_rate'\?\)"),
    ("mine:\n  input_file: {data}\ndistill:\n  num_train_epochs: 1\n",
     r"p\.yaml:3: the distill step has no data: add a score step or give distill\.train_data"),
    ("mine:\n  input_file: {data}\ndistill:\n  model: x\n",
     r"p\.yaml:4: 'model' in the distill step is filled in by the pipeline"),
    ("score:\n  model: {data}\n  input: no/file.jsonl\n",
     r"p\.yaml:3: score\.input_file .*no/file\.jsonl not found"),
])
def test_bad_reranker_sections_fail_with_their_line(tmp_path, text, message):
    path = write_yaml(tmp_path, text.format(data=DATA))
    with pytest.raises(EmbforgeError, match=message):
        load_pipeline(path)


def test_sanity_test_scores_the_first_records_of_a_given_file(tmp_path):
    from embforge.pipeline.slicing import SANITY_RECORDS, slice_input

    data = tmp_path / "groups.jsonl"
    data.write_text("".join(json.dumps({"query": f"q{i}", "pos": ["p"], "neg": ["n"]}) + "\n\n" for i in range(40)))
    config = {"output_dir": str(tmp_path / "run"), "score": {"model": str(DATA), "input_file": str(data)}}
    assert load_pipeline(config).steps[0].config["input_file"] == str(data)
    pipe = load_pipeline(config, sanity_test=True)
    cut = pipe.steps[0].config["input_file"]
    assert pipe.sliced == {str(data): cut} and cut.startswith(str(tmp_path / "run" / "sanity_test"))
    slice_input(data, cut)
    assert [r["query"] for r in read_jsonl(Path(cut))] == [f"q{i}" for i in range(SANITY_RECORDS)]
