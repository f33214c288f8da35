import contextlib
import json
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from tiny import SENTENCES
from transformers import AutoModel

from embforge import Encoder
from embforge.cli import main
from embforge.commands.train import Config
from embforge.config import from_dict
from embforge.errors import EmbforgeError
from embforge.training import run as train_run
from embforge.training.trainer import EmbeddingTrainer

WORDS = "cat dog bird fish house tree car road city water fire light music game science cell".split()


def write_data(path, n=8, negs=3):
    with path.open("w") as fh:
        for i in range(n):
            w = WORDS[i % len(WORDS)]
            record = {"query": f"the {w}", "pos": [f"a {w} in the house", f"the {w} is big"],
                      "neg": [f"{w} and the {WORDS[(i + k + 1) % len(WORDS)]} road" for k in range(negs)]}
            fh.write(json.dumps(record) + "\n")
    return path


def config(model, tmp_path, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    base = {"model_name_or_path": str(model), "train_data": str(write_data(tmp_path / "train.jsonl")),
            "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 4, "max_steps": 3,
            "learning_rate": 1e-3, "report_to": "none", "use_cpu": True, "save_strategy": "no",
            "logging_steps": 1, "disable_tqdm": True, "temperature": 0.05, "query_max_len": 16,
            "passage_max_len": 16}
    base.update(kw)
    return from_dict(Config, base)


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


@contextlib.contextmanager
def crash_at_step(step):
    """Inside the block, training dies as a kill would (KeyboardInterrupt) when it reaches ``step``."""
    original = EmbeddingTrainer.training_step

    def crash(self, *args, **kwargs):
        if self.state.global_step == step:
            raise KeyboardInterrupt("simulated crash")
        return original(self, *args, **kwargs)

    EmbeddingTrainer.training_step = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        EmbeddingTrainer.training_step = original


def steps_trained(monkeypatch):
    """The global step at every ``training_step`` call from now on: which steps a run really trained."""
    seen = []
    original = EmbeddingTrainer.training_step

    def counting(self, *args, **kwargs):
        seen.append(self.state.global_step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EmbeddingTrainer, "training_step", counting)
    return seen


def test_cli_train_writes_a_model_that_loads_everywhere(tiny_bert, tmp_path, capsys):
    data = write_data(tmp_path / "train.jsonl")
    out = tmp_path / "run"
    code = main(["train", "--model_name_or_path", str(tiny_bert), "--train_data", str(data), "--output_dir",
                 str(out), "--max_steps", "3", "--per_device_train_batch_size", "4", "--save_steps", "2",
                 "--report_to", "none", "--use_cpu", "--learning_rate", "1e-3", "--train_group_size", "3",
                 "--normlized", "true", "--sentence_pooling_method", "cls", "--logging_steps", "1"])
    assert code == 0, capsys.readouterr().err
    final = out
    enc = Encoder.from_pretrained(out)  # a training output folder resolves to its final model
    assert enc.config.pooling == "cls"
    ours = enc.encode(SENTENCES)
    theirs = SentenceTransformer(str(final), device="cpu").encode(SENTENCES)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert not np.allclose(ours, Encoder.from_pretrained(tiny_bert, pooling="cls").encode(SENTENCES), atol=1e-4)
    AutoModel.from_pretrained(out / "checkpoint-2")  # checkpoints are complete model folders
    assert not (out / ".staging").exists()
    report = json.loads((out / "train_report.json").read_text())
    assert report["global_steps"] == 3 and report["final_loss"] is not None
    assert (out / "loss.png").stat().st_size > 1000


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tiny_bert_nodrop, tmp_path, monkeypatch):
    common = {"max_steps": 6, "save_strategy": "steps", "save_steps": 3, "per_device_train_batch_size": 4,
              "train_group_size": 2}
    straight = train_run.train(config(tiny_bert_nodrop, tmp_path / "a", **common)).output_dir

    with crash_at_step(4):
        train_run.train(config(tiny_bert_nodrop, tmp_path / "b", **common))
    out_b = tmp_path / "b" / "out"
    assert (out_b / "checkpoint-3").is_dir() and not (out_b / "model.safetensors").exists()
    steps = steps_trained(monkeypatch)
    resumed = train_run.train(config(tiny_bert_nodrop, tmp_path / "b", resume_from_checkpoint="last", **common)).output_dir
    # Retraining from step 0 ends at the same weights too (same seed, same batches): only the steps tell.
    assert steps == [3, 4, 5]

    a, b = weights(straight), weights(resumed)
    base = weights(tiny_bert_nodrop)
    assert any(not torch.equal(a[k], base[k]) for k in a)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_lora_is_merged_at_save_unless_adapter_only(tiny_bert, tmp_path):
    merged = train_run.train(config(tiny_bert, tmp_path / "m", apply_lora=True, lora_r=4,
                                    lora_target_modules=["query", "value"])).output_dir
    assert not (merged / "adapter_model.safetensors").exists()
    w, base = weights(merged), weights(tiny_bert)
    changed = {k for k in w if not torch.equal(w[k], base[k])}
    assert changed and all("query" in k or "value" in k for k in changed)
    ours = Encoder.from_pretrained(merged).encode(SENTENCES)
    assert np.abs(ours - SentenceTransformer(str(merged), device="cpu").encode(SENTENCES)).max() <= 1e-5

    adapter = train_run.train(config(tiny_bert, tmp_path / "a", apply_lora=True, save_adapter_only=True)).output_dir
    assert (adapter / "adapter_model.safetensors").exists()


def test_bitfit_changes_only_bias_terms(tiny_bert, tmp_path):
    out = train_run.train(config(tiny_bert, tmp_path, freezenonbias=True)).output_dir
    w, base = weights(out), weights(tiny_bert)
    changed = {k for k in w if not torch.equal(w[k], base[k])}
    assert changed and all(k.endswith("bias") for k in changed)


def test_gradcache_training_matches_plain_training(tiny_bert_nodrop, tmp_path):
    plain = train_run.train(config(tiny_bert_nodrop, tmp_path / "p", max_steps=2, optim="sgd", learning_rate=1e-2)).output_dir
    cached = train_run.train(config(tiny_bert_nodrop, tmp_path / "g", max_steps=2, optim="sgd", learning_rate=1e-2,
                                    gradcache=True, chunk_size=3)).output_dir
    a, b, base = weights(plain), weights(cached), weights(tiny_bert_nodrop)
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-3  # both trained, not both stood still
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


@pytest.mark.parametrize("cached", [{}, {"gradcache": True, "chunk_size": 3}], ids=["plain", "gradcache"])
def test_gradient_accumulation_equals_one_large_batch(tiny_bert_nodrop, tmp_path, monkeypatch, cached):
    """Without in-batch negatives a query's loss sees only its own group, so the mean loss over 8 queries is
    the mean of the two 4-query halves' means: 2 accumulated micro-batches of 4 must take the step of one batch
    of 8, provided each half's loss is divided by 2 and the halves are the large batches' records, in order."""
    data = write_data(tmp_path / "train16.jsonl", n=16)  # 2 steps per epoch: the order of batches matters
    # SGD and no clipping: a gradient twice too large moves the weights twice as far instead of being clipped.
    common = {"train_data": str(data), "max_steps": 3, "optim": "sgd", "learning_rate": 0.05, "max_grad_norm": 0,
              "use_inbatch_neg": False, "train_group_size": 3, **cached}
    large = train_run.train(config(tiny_bert_nodrop, tmp_path / "l", per_device_train_batch_size=8, **common)).output_dir
    steps = steps_trained(monkeypatch)
    accumulated = train_run.train(config(tiny_bert_nodrop, tmp_path / "a", per_device_train_batch_size=4,
                                         gradient_accumulation_steps=2, **common)).output_dir
    assert steps == [0, 0, 1, 1, 2, 2]  # two micro-batches per optimizer step

    a, b, base = weights(large), weights(accumulated), weights(tiny_bert_nodrop)
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-3
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=lambda m, key=key: f"{key}: {m}")


def test_teacher_scores_in_the_data_are_reported_once_as_unused(tiny_bert, tmp_path, caplog):
    """No loss reads pos_scores/neg_scores yet: training must say it drops them, once, not per record."""
    scored = tmp_path / "scored.jsonl"
    lines = write_data(tmp_path / "train.jsonl").read_text().splitlines()
    scored.write_text("".join(json.dumps({**json.loads(line), "pos_scores": [0.9, 0.8], "neg_scores": [0.1] * 3})
                              + "\n" for line in lines))
    with caplog.at_level(logging.WARNING):
        train_run.train(config(tiny_bert, tmp_path / "s", train_data=str(scored), max_steps=1))
    warned = [r.getMessage() for r in caplog.records if "no loss uses them" in r.getMessage()]
    assert len(warned) == 1 and "pos_scores and neg_scores" in warned[0] and "scored.jsonl:1" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train_run.train(config(tiny_bert, tmp_path / "plain", max_steps=1))
    assert not [r for r in caplog.records if "_scores" in r.getMessage()]


@pytest.mark.parametrize("overrides, message", [
    ({"fp16": True, "bf16": True}, "--fp16 and --bf16 conflict"),
    ({"deepspeed": "ds.json"}, "--deepspeed needs the deepspeed package"),
    ({"gradcache": True}, "--gradcache needs --chunk_size"),
    ({"train_group_size": 9, "strict": True}, "train.jsonl:1: train_group_size=9 needs 8 negatives"),
    ({"temperature": 0}, "--temperature must be positive"),
])
def test_bad_configs_fail_before_training(tiny_bert, tmp_path, overrides, message):
    with pytest.raises(EmbforgeError, match=message):
        train_run.train(config(tiny_bert, tmp_path, **overrides))
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_unwritable_output_and_unknown_flag(tiny_bert, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EmbforgeError, match="cannot write to .*file/out: .*file is not a writable folder"):
        train_run.train(config(tiny_bert, tmp_path, output_dir=str(tmp_path / "file" / "out")))
    with pytest.raises(SystemExit) as exc:
        main(["train", "--learnig_rate", "1e-4"])
    assert exc.value.code == 2


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tiny_bert, tmp_path, monkeypatch):
    from embforge.training.objective import InfoNCEObjective

    original = InfoNCEObjective.__call__
    calls = {"n": 0}

    def nan_on_third(self, q, p):
        calls["n"] += 1
        loss = original(self, q, p)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(InfoNCEObjective, "__call__", nan_on_third)
    with pytest.raises(EmbforgeError, match="loss became nan at step 3.*checkpoint-2"):
        train_run.train(config(tiny_bert, tmp_path, save_strategy="steps", save_steps=2))
    assert (tmp_path / "out" / "checkpoint-2" / "model.safetensors").exists()
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.e2e
def test_sanity_test_with_the_default_model(tmp_path):
    out = train_run.train(from_dict(Config, {"sanity_test": True, "output_dir": str(tmp_path / "s"),
                                             "report_to": "none", "use_cpu": True, "disable_tqdm": True})).output_dir
    assert (out / "model.safetensors").exists()
    assert len(list((tmp_path / "s").glob("checkpoint-*"))) == 1


@pytest.mark.parametrize("flag", ["gradient_checkpointing", "activation_checkpointing"])
def test_activation_checkpointing_takes_the_same_steps_with_dropout(tiny_bert, tmp_path, monkeypatch, flag):
    """Checkpointing recomputes each layer in the backward pass with its dropout masks replayed, so it
    trades time for memory without changing the arithmetic: the weights are bit-equal to a plain run."""
    from transformers.models.bert.modeling_bert import BertAttention

    calls = []
    original = BertAttention.forward
    monkeypatch.setattr(BertAttention, "forward", lambda self, *a, **kw: calls.append(1) or original(self, *a, **kw))
    plain = train_run.train(config(tiny_bert, tmp_path / "p")).output_dir
    plain_calls, calls[:] = len(calls), []
    checkpointed = train_run.train(config(tiny_bert, tmp_path / "c", **{flag: True})).output_dir
    assert len(calls) == 2 * plain_calls  # every layer ran again in the backward pass
    a, b, base = weights(plain), weights(checkpointed), weights(tiny_bert)
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-3
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 runs on the GPU there")
def test_bf16_without_a_gpu_is_cpu_autocast(tiny_bert, tmp_path, monkeypatch):
    """--bf16 on a machine without a GPU trains under CPU autocast instead of failing on --use_cpu."""
    cfg = config(tiny_bert, tmp_path, bf16=True, use_cpu=False)
    assert cfg.use_cpu and cfg.bf16
    seen = []
    original = torch.nn.Linear.forward
    monkeypatch.setattr(torch.nn.Linear, "forward",
                        lambda self, x: seen.append(original(self, x).dtype) or original(self, x))
    folder = train_run.train(cfg).output_dir
    assert torch.bfloat16 in seen
    assert all(torch.isfinite(w).all() for w in weights(folder).values())
