"""Nothing lost, nothing stale: output folders, resuming only the same run, and the embedding cache.

Each test reproduces a finding of a user's probe (issue "Nothing lost, nothing stale"): the old code
deleted input folders on merge/export, resumed another run's checkpoint, served vectors of weights
that had since changed in memory, read zeroed cache bytes as vectors, and kept the trained model in
``OUTPUT_DIR/final`` where ``AutoModel.from_pretrained(output_dir)`` could not find it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from test_cache_misses import write_beir
from test_train import config, crash_at_step, weights
from tiny import SENTENCES
from transformers import AutoModel

import embforge
from embforge import Encoder
from embforge.cache import cache_dir
from embforge.cli import main
from embforge.errors import EmbforgeError
from embforge.paths import OUTPUT_MARKER
from embforge.training import run as train_run

pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of its own


def tree(folder):
    """Every file under ``folder`` with its bytes: what must survive a refused command untouched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ 1. merge / export keep what they did not write
def test_merge_into_the_folder_that_holds_its_input_is_refused_and_loses_nothing(tiny_bert, tmp_path, capsys):
    proj = tmp_path / "proj"
    shutil.copytree(tiny_bert, proj / "model")
    (proj / "notes.txt").write_text("mine")
    before = tree(proj)
    args = ["merge", "--models", str(proj / "model"), "--base", str(tiny_bert), "--output_dir", str(proj)]
    for extra in ([], ["--overwrite"]):  # refused even when asked to overwrite
        assert main(args + extra) == 2
        assert "holds the input" in capsys.readouterr().err
        assert tree(proj) == before


def test_merge_and_export_refuse_a_folder_they_did_not_write_unless_overwrite(tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for argv in (["merge", "--models", str(tiny_bert), "--base", str(tiny_bert), "--output_dir", str(out)],
                 ["export", "--model", str(tiny_bert), "--format", "sentence-transformers", "--output_dir", str(out)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "not empty" in err and "--overwrite" in err, err
        assert (out / "precious.txt").read_text() == "keep me"
    # An earlier merge's own folder is replaced without asking; --overwrite replaces anything.
    merged = tmp_path / "merged"
    args = ["merge", "--models", str(tiny_bert), "--base", str(tiny_bert), "--output_dir", str(merged)]
    assert main(args) == 0 and main(args) == 0
    assert json.loads((merged / OUTPUT_MARKER).read_text())["command"] == "merge"
    assert main(["export", "--model", str(tiny_bert), "--format", "sentence-transformers", "--output_dir", str(out),
                 "--overwrite"]) == 0
    assert not (out / "precious.txt").exists() and (out / "model.safetensors").exists()


def test_the_current_directory_is_never_an_output_folder(tiny_bert, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = ["merge", "--models", str(tiny_bert), "--base", str(tiny_bert), "--output_dir", "."]
    for extra in ([], ["--overwrite"]):
        assert main(args + extra) == 2
        assert "current directory" in capsys.readouterr().err
        assert work.is_dir() and not any(work.iterdir())


# ------------------------------------------------------------------ 2. resume only this run
def test_resume_last_never_takes_another_runs_checkpoint(tiny_bert_nodrop, tmp_path, monkeypatch):
    common = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "per_device_train_batch_size": 4}
    old = train_run.train(config(tiny_bert_nodrop, tmp_path, **common)).output_dir
    old_final = weights(old)
    # Another run (other lr and seed) into the same folder is refused, and the old run is untouched.
    other = {**common, "learning_rate": 5e-3, "seed": 7}
    with pytest.raises(EmbforgeError, match="holds another training run .*learning_rate: 0.001 there, 0.005 now"):
        train_run.train(config(tiny_bert_nodrop, tmp_path, **other))
    assert all(torch.equal(old_final[k], v) for k, v in weights(old).items())
    # Resuming the other run finds no checkpoint of its own.
    with pytest.raises(EmbforgeError, match="another training run"):
        train_run.train(config(tiny_bert_nodrop, tmp_path, resume_from_checkpoint="last", **other))
    # With --overwrite_output_dir the old run's outputs go; the new run crashes after its first checkpoint
    # and `last` resumes the new run, not the old run's checkpoint-4.
    with crash_at_step(3):
        train_run.train(config(tiny_bert_nodrop, tmp_path, overwrite_output_dir=True, **other))
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (out / "model.safetensors").exists()
    resumed = train_run.train(config(tiny_bert_nodrop, tmp_path, resume_from_checkpoint="last", **other)).output_dir
    straight = train_run.train(config(tiny_bert_nodrop, tmp_path / "straight", **other)).output_dir
    got, want = weights(resumed), weights(straight)
    assert any(not torch.equal(got[k], old_final[k]) for k in got)
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-6), key


def test_resume_from_a_checkpoint_of_another_run_names_the_difference(tiny_bert_nodrop, tmp_path):
    common = {"max_steps": 2, "save_strategy": "steps", "save_steps": 2, "per_device_train_batch_size": 4}
    train_run.train(config(tiny_bert_nodrop, tmp_path / "a", **common))
    checkpoint = tmp_path / "a" / "out" / "checkpoint-2"
    with pytest.raises(EmbforgeError, match=r"checkpoint-2 belongs to another run: .*seed: 42 there, 3 now"):
        train_run.train(config(tiny_bert_nodrop, tmp_path / "b", resume_from_checkpoint=str(checkpoint), seed=3,
                               **common))


def test_a_failed_run_leaves_no_empty_output_folder(tiny_bert, tmp_path):
    with pytest.raises(EmbforgeError):
        train_run.train(config(tiny_bert, tmp_path, train_group_size=9, strict=True))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 8. the model is at --output_dir
def test_the_trained_model_loads_from_output_dir_with_every_loader(tiny_bert, tmp_path):
    out = train_run.train(config(tiny_bert, tmp_path, max_steps=2)).output_dir
    assert out == tmp_path / "out"
    ours = Encoder.from_pretrained(out).encode(SENTENCES)
    assert np.abs(ours - SentenceTransformer(str(out), device="cpu").encode(SENTENCES)).max() <= 1e-5
    assert AutoModel.from_pretrained(out).config.hidden_size == Encoder.from_pretrained(out).hidden_size
    # A second identical run replaces its own model files and nothing else.
    (out / "mine.txt").write_text("user file")
    train_run.train(config(tiny_bert, tmp_path, max_steps=2))
    assert (out / "mine.txt").read_text() == "user file"
    np.testing.assert_allclose(Encoder.from_pretrained(out).encode(SENTENCES), ours, atol=1e-6)


def test_an_older_final_folder_still_loads_and_an_interrupted_save_is_refused(tiny_bert, tmp_path):
    old = tmp_path / "old-run"
    Encoder.from_pretrained(tiny_bert).save(old / "final")
    np.testing.assert_allclose(Encoder.from_pretrained(old).encode(SENTENCES),
                               Encoder.from_pretrained(tiny_bert).encode(SENTENCES), atol=1e-6)
    out = train_run.train(config(tiny_bert, tmp_path, max_steps=1)).output_dir
    (out / ".embforge-incomplete").write_text("")
    with pytest.raises(EmbforgeError, match="save into this folder was interrupted"):
        Encoder.from_pretrained(out)


def test_a_crash_while_publishing_leaves_a_folder_that_embforge_refuses(tiny_bert, tmp_path, monkeypatch):
    from embforge.training import output

    out = train_run.train(config(tiny_bert, tmp_path, max_steps=1)).output_dir
    real_replace = os.replace

    def crash_on_weights(src, dst):
        if str(dst).endswith("model.safetensors") and ".staging-final" in str(src):
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(output.os, "replace", crash_on_weights)
    with pytest.raises(OSError):
        train_run.train(config(tiny_bert, tmp_path, max_steps=1))
    with pytest.raises(EmbforgeError, match="interrupted"):
        Encoder.from_pretrained(out)


# ------------------------------------------------------------------ 3 and 7. the cache is never stale
def test_weights_changed_in_memory_never_meet_their_old_vectors(tiny_bert, tmp_path):
    data = write_beir(tmp_path / "beir")
    enc = Encoder.from_pretrained(tiny_bert)
    first = embforge.evaluate(encoder=enc, data=str(data), split="test")
    assert first["corpus_from_cache"] is False
    with torch.no_grad():
        for p in enc.backbone.parameters():
            p.mul_(0.5).add_(0.01)
    cached = embforge.evaluate(encoder=enc, data=str(data), split="test")
    fresh = embforge.evaluate(encoder=enc, data=str(data), split="test", no_cache=True)
    assert cached["corpus_from_cache"] is False
    assert cached["metrics"] == fresh["metrics"]
    assert embforge.evaluate(encoder=enc, data=str(data), split="test")["corpus_from_cache"] is True


def test_cache_bytes_damaged_in_place_are_recomputed(tiny_bert, tmp_path, caplog):
    data = write_beir(tmp_path / "beir")
    enc = Encoder.from_pretrained(tiny_bert)
    fresh = embforge.evaluate(encoder=enc, data=str(data), split="test")
    for path in cache_dir().rglob("*.npy"):  # zero the last 64 bytes of each shard file in place: same size
        raw = bytearray(path.read_bytes())
        raw[-64:] = bytes(64)
        path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        again = embforge.evaluate(encoder=enc, data=str(data), split="test")
    assert again["corpus_from_cache"] is False
    assert again["metrics"] == fresh["metrics"]
    assert "fail their checksum" in caplog.text


def test_an_option_left_at_its_default_is_not_part_of_the_run_fingerprint():
    """A later version adds options whose defaults keep the old arithmetic; checkpoints written before it
    must stay resumable, so only options set away from their default identify a run."""
    from embforge.training.config import TrainConfig
    from embforge.training.output import describe_difference, fingerprint, run_settings

    plain = run_settings(TrainConfig(output_dir="o", train_data="t.jsonl"), "d" * 64, "w" * 64)
    kd = run_settings(TrainConfig(output_dir="o", train_data="t.jsonl", teacher_scores="kd"), "d" * 64, "w" * 64)
    assert "teacher_scores" not in plain and "task" not in plain and "streaming" not in plain
    assert kd["teacher_scores"] == "kd" and fingerprint(kd) != fingerprint(plain)
    assert describe_difference(kd, plain) == "teacher_scores: 'default' there, 'kd' now"
