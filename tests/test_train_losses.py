"""Training with every loss of embforge.losses: each run lowers its loss; recipes; bad input fails early."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train import config

from embforge.cli import build_parser
from embforge.commands.train import Config
from embforge.config import config_from_args, from_dict
from embforge.errors import EmbforgeError
from embforge.training import run as train_run
from embforge.training.recipes import resolve

WORDS = "cat dog bird fish house tree car road city water fire light music game science cell".split()


def write_pairs(path, n=8):
    """AnglE format A with graded labels: the same word twice scores high, different words low."""
    with path.open("w") as fh:
        for i in range(n):
            w, v = WORDS[i], WORDS[(i + 5) % len(WORDS)]
            label = [5.0, 4.0, 0.5, 3.0, 1.0, 4.5, 2.0, 0.0][i % 8]
            text2 = f"a {w} in the house" if label >= 2.5 else f"the {v} is big"
            fh.write(json.dumps({"text1": f"the {w} and {WORDS[(i + 3) % len(WORDS)]}", "text2": text2,
                                 "label": label}) + "\n")
    return path


def losses_of(out_dir):
    report = json.loads((out_dir / "train_report.json").read_text())
    return [h["loss"] for h in report["log_history"] if "loss" in h]


def pair_config(model, tmp_path, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    base = {"train_data": str(write_pairs(tmp_path / "pairs.jsonl")), "per_device_train_batch_size": 8}
    base.update(kw)
    return config(model, tmp_path, **base)


# One batch holds the whole (8-record) data set, so every step sees the same batch: its loss must fall.
RUNS = {
    "cosent": ("pairs", {"loss": ["cosent"], "cosine_tau": 5.0}),
    "cosine": ("pairs", {"loss": ["cosine"]}),
    "angle-format-a": ("pairs", {"recipe": "angle", "ibn_w": 1.0, "angle_tau": 5.0, "cosine_tau": 5.0,
                                 "ibn_tau": 5.0}),
    "angle-format-b": ("groups", {"loss": ["angle"], "train_group_size": 2, "ibn_w": 1.0}),
    "mrl-infonce": ("groups", {"mrl_dims": [32, 16, 8], "mrl_weights": [1.0, 1.0, 0.5]}),
    "topk-infonce": ("groups", {"topk_k_list": [4, 8], "topk_mode": "value"}),
    "ese-cosent": ("pairs", {"loss": ["cosent"], "apply_ese": True, "ese_compression_size": 8}),
    "infonce+angle": ("groups", {"loss": ["infonce", "angle"], "loss_weights": [1.0, 0.1]}),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_training_lowers_each_loss(tiny_bert_nodrop, tmp_path, name):
    kind, kw = RUNS[name]
    common = {"max_steps": 6, "learning_rate": 2e-3, "per_device_train_batch_size": 8}
    cfg = (pair_config if kind == "pairs" else config)(tiny_bert_nodrop, tmp_path, **common, **kw)
    train_run.train(cfg)
    losses = losses_of(tmp_path / "out")
    assert len(losses) == 6 and losses[-1] < losses[0], losses


def test_self_distillation_starts_at_zero_and_keeps_the_model_near_its_teacher(tiny_bert_nodrop, tmp_path):
    cfg = config(tiny_bert_nodrop, tmp_path, teacher_name_or_path=str(tiny_bert_nodrop), loss=["infonce"],
                 distill_w=10.0, max_steps=6, per_device_train_batch_size=8, learning_rate=2e-3)
    train_run.train(cfg)
    plain = config(tiny_bert_nodrop, tmp_path / "plain", max_steps=6, per_device_train_batch_size=8,
                   learning_rate=2e-3)
    train_run.train(plain)
    base = load_file(str(tiny_bert_nodrop / "model.safetensors"))

    def drift(folder):
        w = load_file(str(folder / "model.safetensors"))
        return sum((w[k] - base[k]).pow(2).sum().item() for k in w)

    assert drift(tmp_path / "out") < drift(tmp_path / "plain" / "out")


@pytest.mark.parametrize("extra", [{"loss": ["cosent"]}, {"recipe": "angle", "apply_ese": True,
                                                         "ese_compression_size": 8}],
                         ids=["cosent", "angle+ese"])
def test_gradcache_matches_plain_training_for_pair_losses(tiny_bert_nodrop, tmp_path, extra):
    common = {"max_steps": 2, "optim": "sgd", "per_device_train_batch_size": 8, **extra}
    plain = train_run.train(pair_config(tiny_bert_nodrop, tmp_path / "p", **common)).output_dir
    cached = train_run.train(pair_config(tiny_bert_nodrop, tmp_path / "g", gradcache=True, chunk_size=3, **common)).output_dir
    a, b = load_file(str(plain / "model.safetensors")), load_file(str(cached / "model.safetensors"))
    base = load_file(str(tiny_bert_nodrop / "model.safetensors"))
    assert any(not torch.equal(a[k], base[k]) for k in a)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


@pytest.mark.parametrize("kind, overrides, message", [
    ("groups", {"mrl_dims": [64, 32]}, "64 is larger than the model's embedding dimension 32"),
    ("groups", {"mrl_dims": [16, 32]}, "strictly descending"),
    ("groups", {"mrl_dims": [32, 16], "mrl_weights": [1.0]}, "--mrl_weights has 1 value.* --mrl_dims has 2"),
    ("groups", {"mrl_weights": [1.0]}, "--mrl_weights needs --mrl_dims"),
    ("groups", {"topk_k_list": [8, 64]}, "--topk_k_list 8,64: 64 is larger"),
    ("groups", {"topk_k_list": [8], "topk_weights": [1.0, 2.0]}, "--topk_weights has 2"),
    ("groups", {"apply_topk_to_backbone": True}, "--apply_topk_to_backbone needs --topk_k_list"),
    ("groups", {"loss": ["cosent"]}, "train.jsonl: holds query/positive records .* --loss cosent needs scored"),
    ("pairs", {"loss": ["infonce"]}, "pairs.jsonl: holds scored pairs .* --loss infonce needs query/positive"),
    ("pairs", {"loss": ["cosent", "cosine"], "loss_weights": [1.0]}, "--loss_weights has 1 value"),
    ("pairs", {"loss": ["arcface"]}, "'arcface' is not a loss"),
    ("pairs", {"loss": ["cosent"], "apply_ese": True, "ese_compression_size": 32}, "must be smaller than"),
    ("pairs", {"recipe": "angle", "cosine_w": 0.0, "ibn_w": 0.0, "angle_w": 0.0}, "trains nothing"),
])
def test_bad_loss_settings_fail_before_any_step(tiny_bert, tmp_path, monkeypatch, kind, overrides, message):
    from embforge.training.trainer import EmbeddingTrainer

    def never(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(EmbeddingTrainer, "train", never)
    make = pair_config if kind == "pairs" else config
    with pytest.raises(EmbforgeError, match=message):
        train_run.train(make(tiny_bert, tmp_path, **overrides))


def test_teacher_with_another_tokenizer_is_refused(tiny_bert, tiny_llama, tmp_path):
    with pytest.raises(EmbforgeError, match="the teacher's tokenizer differs"):
        train_run.train(config(tiny_bert, tmp_path, teacher_name_or_path=str(tiny_llama)))


def resolved(argv, yaml_text=None, tmp_path=None):
    args = build_parser().parse_args(["train", *argv])
    yaml_path = None
    if yaml_text is not None:
        yaml_path = tmp_path / "cfg.yaml"
        yaml_path.write_text(yaml_text)
    cfg = config_from_args(Config, args, str(yaml_path) if yaml_path else None)
    cfg = resolve(cfg)
    return cfg


def test_recipes_fill_only_what_was_not_given(tmp_path):
    cfg = resolved(["--recipe", "flag"])
    assert (cfg.loss, cfg.temperature, cfg.train_group_size) == (["infonce"], 0.02, 2)
    cfg = resolved(["--recipe", "sgpt"])
    assert (cfg.pooling, cfg.freezenonbias, cfg.temperature, cfg.apply_lora) == ("weightedmean", True, 0.05, False)
    # an explicit value wins, even when it equals the built-in default
    cfg = resolved(["--recipe", "sgpt", "--freezenonbias", "false", "--temperature", "0.02"])
    assert (cfg.freezenonbias, cfg.temperature, cfg.pooling) == (False, 0.02, "weightedmean")
    cfg = resolved(["--recipe", "angle", "--ibn_w", "0"])
    assert (cfg.loss, cfg.cosine_w, cfg.ibn_w, cfg.angle_w, cfg.angle_tau) == (["angle"], 1.0, 0.0, 1.0, 20.0)
    cfg = resolved(["--recipe", "mrl"])
    assert (cfg.apply_lora, cfg.mrl_dims, cfg.train_group_size) == (True, "auto", 1)
    cfg = resolved([])
    assert (cfg.loss, cfg.temperature, cfg.apply_lora, cfg.freezenonbias, cfg.train_group_size) == (
        ["infonce"], 0.02, False, False, None)  # group size: 2 once the data shows query records


def test_recipes_and_yaml_and_flags_keep_their_precedence(tmp_path):
    # recipe on the command line, a value in YAML: the YAML value was given, so it wins over the recipe
    cfg = resolved(["--recipe", "sgpt"], "temperature: 0.1\n", tmp_path)
    assert (cfg.temperature, cfg.pooling) == (0.1, "weightedmean")
    # recipe in YAML, a flag overrides one of its values
    cfg = resolved(["--temperature", "0.3"], "recipe: sgpt\n", tmp_path)
    assert (cfg.temperature, cfg.freezenonbias) == (0.3, True)
    # a flag's recipe replaces the YAML's, and the new recipe's values apply
    cfg = resolved(["--recipe", "topk-lora"], "recipe: sgpt\n", tmp_path)
    assert (cfg.topk_k_list, cfg.apply_lora, cfg.freezenonbias, cfg.pooling) == ("auto", True, False, None)


def test_reference_spellings_are_accepted(tmp_path):
    cfg = resolved(["--w1", "2", "--w3", "0.5", "--apply_ese", "1", "--ese_compression_size", "64",
                    "--loss", "multiple_negatives_ranking_loss", "--topk_k_list", "16,32", "--topk_weights", "1,2",
                    "--matryoshka_dims", "384,64"])
    assert (cfg.cosine_w, cfg.angle_w, cfg.apply_ese, cfg.ese_compression_size) == (2.0, 0.5, True, 64)
    assert (cfg.loss, cfg.topk_k_list, cfg.topk_weights, cfg.mrl_dims) == (["infonce"], [16, 32], [1.0, 2.0],
                                                                          [384, 64])
    assert cfg.apply_topk_to_backbone is True


def test_python_api_config_takes_the_same_fields(tiny_bert, tmp_path):
    cfg = from_dict(Config, {"loss": "cosent", "mrl_dims": "32,16", "output_dir": str(tmp_path)})
    cfg = resolve(cfg)
    assert cfg.loss == ["cosent"] and cfg.mrl_dims == [32, 16]


@pytest.mark.parametrize("extra", [["--loss", "cosent"], ["--recipe", "angle", "--mrl_dims", "32,16"]],
                         ids=["cosent", "angle+mrl"])
def test_pair_losses_across_two_processes_equal_one_process(tiny_bert_nodrop, tmp_path, extra):
    """Pair losses rank the gathered batch: 2 processes x 2 pairs must train like 1 process x 4 pairs."""
    import os
    import subprocess
    import sys

    from test_distributed import args, free_port

    data = write_pairs(tmp_path / "pairs.jsonl")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launch = {"single": ([], 4, []),
              "ddp": (["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                       "--master_port", str(free_port())], 2, ["--ddp_backend", "gloo"])}
    trained = {}
    for name, (launcher, batch, more) in launch.items():
        cmd = [sys.executable, *launcher, "-m", "embforge.cli",
               *args(tiny_bert_nodrop, data, tmp_path / name, batch, extra), *more]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        trained[name] = load_file(str(tmp_path / name / "model.safetensors"))
    base = load_file(str(tiny_bert_nodrop / "model.safetensors"))
    a, b = trained["single"], trained["ddp"]
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-4
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), (key, (a[key] - b[key]).abs().max())
