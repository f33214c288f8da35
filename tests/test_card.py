import json

from test_train import config

from embforge.model.card import add_eval, load_card_data, model_label, render_card, save_card
from embforge.paths import default_model_path
from embforge.training import run as train_run

SETTINGS = {"pooling": "mean", "normalize": True, "query_max_len": 64, "passage_max_len": 128,
            "query_instruction": "query: ", "passage_instruction": ""}


def test_render_card_tables():
    data = {"name": "my-model", "base_model": "all-MiniLM-L6-v2 (embedded)",
            "training": {"train_data": "mined.jsonl", "records": 809, "global_steps": 52, "final_loss": 0.25},
            "hyperparameters": {"learning_rate": 5e-05, "num_train_epochs": 2.0, "temperature": 0.05},
            "evals": {"base": {"data": "scifact", "split": "test", "metrics": {"nDCG@10": 0.64512, "MRR@10": 0.6}},
                      "this model": {"data": "scifact", "split": "test", "metrics": {"nDCG@10": 0.70123}}},
            "plots": {"training loss": "loss.png"}}
    card = render_card(data, SETTINGS)
    assert card.startswith("---\nlibrary_name: sentence-transformers\n")
    assert "# my-model" in card
    assert "| pooling | mean, L2-normalised |" in card
    assert "| max tokens | query 64, passage 128 |" in card
    assert "| query instruction | 'query: ' |" in card
    assert "`mined.jsonl`: 809 query records." in card
    assert "| learning_rate | 5e-05 |" in card and "| num_train_epochs | 2 |" in card
    assert "| temperature | 0.0500 |" in card and "| global_steps | 52 |" in card
    assert "| model | data | nDCG@10 | MRR@10 |" in card
    assert "| base | scifact (test) | 0.6451 | 0.6000 |" in card
    assert "| this model | scifact (test) | 0.7012 | - |" in card
    assert "![training loss](loss.png)" in card
    assert "## Merge" not in card


def test_add_eval_updates_the_card_in_place(tmp_path):
    (tmp_path / "embforge.json").write_text(json.dumps(SETTINGS))
    save_card(tmp_path, {"name": "m", "base_model": "b"})
    report = {"model": "m", "data": "d", "split": "test", "metrics": {"nDCG@10": 0.5}}
    add_eval(tmp_path, "this model", report)
    add_eval(tmp_path, "this model", {**report, "metrics": {"nDCG@10": 0.75}})  # replaces, no second row
    plot = tmp_path.parent / "p.png"
    plot.write_bytes(b"\x89PNG fake")
    add_eval(tmp_path, "other set", {**report, "data": "e"}, plot=plot)
    card = (tmp_path / "README.md").read_text()
    assert card.count("| this model |") == 1 and "| this model | d (test) | 0.7500 |" in card
    assert "| other set | e (test) | 0.5000 |" in card
    assert (tmp_path / "eval_other_set.png").read_bytes() == b"\x89PNG fake"
    assert "![evaluation: other set](eval_other_set.png)" in card
    assert set(load_card_data(tmp_path)["evals"]) == {"this model", "other set"}


def test_model_label_names_the_embedded_model():
    assert model_label(None) == "all-MiniLM-L6-v2 (embedded)"
    assert model_label(str(default_model_path())) == "all-MiniLM-L6-v2 (embedded)"
    assert model_label("/some/folder") == "/some/folder"


def test_training_writes_a_card_from_its_report(tiny_bert, tmp_path):
    cfg = config(tiny_bert, tmp_path, learning_rate=3e-4, train_group_size=3)
    final = train_run.train(cfg).output_dir
    card = (final / "README.md").read_text()
    report = json.loads((tmp_path / "out" / "train_report.json").read_text())
    assert f"| base model | {tiny_bert} |" in card
    assert "| learning_rate | 0.0003 |" in card and "| train_group_size | 3 |" in card
    assert f"| global_steps | {report['global_steps']} |" in card and report["global_steps"] == 3
    assert f"`{cfg.train_data}`: 8 query records." in card
    assert (final / "loss.png").read_bytes() == (tmp_path / "out" / "loss.png").read_bytes()
    assert "![training loss](loss.png)" in card
