"""Values and paths a user can get wrong are refused before any model is loaded, with the flag named;
damaged weights and mistyped flags get a message that says what to fix; saved models are readable."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

from embforge.cli import main
from embforge.commands.train import Config
from embforge.config import from_dict
from embforge.errors import EmbforgeError
from embforge.model import Encoder
from embforge.model.encoder import load_backbone_weights
from embforge.training import run as train_run


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model is the expensive step every check must come before: make it an error."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad value was refused")

    monkeypatch.setattr(Encoder, "from_pretrained", refuse)


def write_jsonl(path, n=4):
    path.write_text("".join(json.dumps({"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}"]}) + "\n"
                            for i in range(n)))
    return path


def train_config(tmp_path, **kw):
    base = {"model_name_or_path": "unused", "train_data": str(write_jsonl(tmp_path / "train.jsonl")),
            "output_dir": str(tmp_path / "out"), "max_steps": 3, "report_to": "none", "use_cpu": True}
    return from_dict(Config, {**base, **kw})


@pytest.mark.parametrize("overrides, message", [
    ({"learning_rate": -1}, "--learning_rate must be positive, got -1"),
    ({"learning_rate": 0}, "--learning_rate must be positive"),
    ({"max_steps": -1, "num_train_epochs": -1}, "--num_train_epochs must be positive .*--max_steps"),
    ({"max_steps": 0, "num_train_epochs": 0}, "--num_train_epochs must be positive"),
    ({"max_steps": -2}, "--max_steps must be -1 .* or positive, got -2"),
    ({"per_device_train_batch_size": 0}, "--per_device_train_batch_size must be at least 1, got 0"),
    ({"gradient_accumulation_steps": 0}, "--gradient_accumulation_steps must be at least 1"),
    ({"query_max_len": 0}, "--query_max_len must be at least 1"),
    ({"passage_max_len": -5}, "--passage_max_len must be at least 1"),
    ({"weight_decay": -0.1}, "--weight_decay must be 0 or more"),
    ({"apply_lora": True, "lora_r": 0}, "--lora_r must be at least 1"),
])
def test_train_refuses_impossible_numbers_before_loading_the_model(tmp_path, no_model, overrides, message):
    with pytest.raises(EmbforgeError, match=message):
        train_run.train(train_config(tmp_path, **overrides))
    assert not (tmp_path / "out").exists()


def test_epochs_are_not_checked_when_max_steps_sets_the_length(tmp_path):
    train_run.validate(train_config(tmp_path, max_steps=3, num_train_epochs=0))  # the Trainer ignores epochs


@pytest.mark.parametrize("command, args, flag", [
    ("encode", ["--batch_size", "0"], "--batch_size"),
    ("encode", ["--dim", "0"], "--dim"),
    ("mine", ["--negative_number", "0"], "--negative_number"),
    ("mine", ["--batch_size", "0"], "--batch_size"),
    ("eval", ["--dims", "0,16"], "--dims"),
    ("eval", ["--batch_size", "-1"], "--batch_size"),
    ("eval", ["--max_length", "0"], "--max_length"),
])
def test_other_commands_refuse_bad_numbers_before_loading_the_model(tmp_path, no_model, capsys, command, args,
                                                                     flag):
    data = write_jsonl(tmp_path / "in.jsonl")
    paths = {"encode": ["--input", str(data), "--output", str(tmp_path / "e.npy")],
             "mine": ["--input_file", str(data), "--output_file", str(tmp_path / "m.jsonl")],
             "eval": ["--data", str(data)]}[command]
    assert main([command, "--model", "unused", *paths, *args]) == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("command, args", [
    ("encode", ["--input", "{data}", "--output", "{dir}"]),
    ("mine", ["--input_file", "{data}", "--output_file", "{dir}"]),
    ("eval", ["--data", "{data}", "--report", "{dir}"]),
    ("csr embed", ["--data", "{data}", "--output", "{dir}"]),
])
def test_an_output_path_that_is_a_folder_fails_before_the_work(tmp_path, no_model, capsys, command, args):
    data = write_jsonl(tmp_path / "in.jsonl")
    folder = tmp_path / ("out.npz" if command == "csr embed" else "out.npy" if command == "encode" else "out")
    folder.mkdir()
    argv = [*command.split(), "--model", "unused", *(a.format(data=data, dir=folder) for a in args)]
    assert main(argv) == 2
    what = "report file" if command == "eval" else "output file"
    assert f"{folder}: the {what} is an existing folder; give a file name" in capsys.readouterr().err
    assert list(folder.iterdir()) == []


def test_csr_encode_output_folder_is_refused_before_encoding(tmp_path, capsys):
    (tmp_path / "csr").mkdir()
    (tmp_path / "codes.npz").mkdir()
    assert main(["csr", "encode", "--csr_model", str(tmp_path / "csr"), "--input", str(tmp_path / "x.npz"),
                 "--output", str(tmp_path / "codes.npz")]) == 2
    assert "codes.npz: the output file is an existing folder" in capsys.readouterr().err


@pytest.fixture
def damaged(tiny_bert, tmp_path):
    folder = shutil.copytree(tiny_bert, tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    return folder


def test_truncated_weights_are_named_as_damaged(damaged):
    with pytest.raises(EmbforgeError, match=f"{damaged / 'model.safetensors'}: the weights file is damaged or "
                                            "truncated"):
        Encoder.from_pretrained(damaged, device="cpu")


def test_truncated_weights_when_restoring_a_checkpoint(damaged, tiny_bert):
    backbone = Encoder.from_pretrained(tiny_bert, device="cpu").backbone
    with pytest.raises(EmbforgeError, match="model.safetensors: the weights file is damaged or truncated"):
        load_backbone_weights(backbone, damaged)


def test_a_mistyped_flag_names_the_nearest_one(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--learnig_rate", "1e-4"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--learnig_rate" in err and "did you mean '--learning_rate'?" in err


def test_a_prefix_of_a_flag_is_not_taken_for_the_flag(tmp_path, no_model, capsys):
    data = tmp_path / "in.txt"
    data.write_text("a\nb\n")
    with pytest.raises(SystemExit) as exc:  # accepted as --batch_size, it would go on to load the model
        main(["encode", "--batch_siz", "4", "--input", str(data), "--output", str(tmp_path / "e.npy")])
    assert exc.value.code == 2
    assert "did you mean '--batch_size'?" in capsys.readouterr().err


def test_sanity_test_says_which_given_values_it_replaces(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="embforge.commands.train"):
        cfg = Config(output_dir=str(tmp_path), sanity_test=True, save_steps=100, per_device_train_batch_size=32)
    assert (cfg.save_steps, cfg.per_device_train_batch_size, cfg.max_steps) == (4, 2, 4)
    [record] = caplog.records
    assert record.getMessage() == ("--sanity_test replaces --per_device_train_batch_size 32 -> 2, "
                                   "--save_steps 100 -> 4")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="embforge.commands.train"):
        Config(output_dir=str(tmp_path), sanity_test=True)  # nothing given, nothing to report
    assert caplog.records == []


def test_mine_on_a_folder_that_is_not_beir_says_so(tmp_path, no_model, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    assert main(["mine", "--input_file", str(folder), "--output_file", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: the folder exists but is not a BEIR folder (expected corpus.jsonl, queries.jsonl and " \
           "qrels/; it holds notes.txt)" in err
    assert "not found" not in err


def test_saved_model_files_have_the_usual_permissions(tiny_bert, tmp_path):
    encoder = Encoder.from_pretrained(tiny_bert, device="cpu")
    old = os.umask(0o022)
    try:
        encoder.save(tmp_path / "saved")
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path / "saved")): oct(p.stat().st_mode & 0o777)
             for p in (tmp_path / "saved").rglob("*") if p.is_file()}
    assert "model.safetensors" in modes
    assert modes == dict.fromkeys(modes, "0o644")
