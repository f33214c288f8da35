"""The loss registry: a loss registered from outside trains through the normal train path; the built-in
losses, their data kinds, aliases and defaults come from it; ``resolve`` returns a new Config."""

import json
import logging
import re

import pytest
import torch
import torch.nn.functional as F
from test_train import config

from embforge.cli import main
from embforge.commands.train import Config
from embforge.config import from_dict
from embforge.errors import EmbforgeError
from embforge.losses import distill, ese, registry, topk
from embforge.losses.registry import Groups, LossSpec
from embforge.training import run as train_run
from embforge.training.objective import Objective, build_objective
from embforge.training.recipes import resolve


@pytest.fixture
def triplet():
    """A margin loss over groups, registered as a user would; yields the values of each call."""
    calls = []

    def groups(b: Groups, *, margin: float) -> torch.Tensor:
        own = b.p.view(-1, b.group_size, b.p.shape[-1])[b.query_offset:b.query_offset + b.q.shape[0]]
        cos = torch.einsum("bd,bgd->bg", F.normalize(b.q, dim=-1), F.normalize(own, dim=-1))
        loss = (margin - cos[:, :1] + cos[:, 1:]).clamp(min=0).mean()
        calls.append(float(loss.detach()))
        return loss

    registry.register(LossSpec("triplet", "positive above each negative by a margin", settings={"margin": 0.5},
                               groups=groups, positive=("margin",)))
    yield calls
    registry.unregister("triplet")


def test_a_registered_loss_trains_through_the_normal_train_path(triplet, tiny_bert, tmp_path):
    cfg = config(tiny_bert, tmp_path, loss=["triplet"], loss_weights=[2.0], max_steps=2, train_group_size=2)
    # On fixed embeddings: q1 = (1, 0) has cos 0.6 to its positive and 0.8 to its negative, so
    # relu(0.5 - 0.6 + 0.8) = 0.7; q2 = (0, 1) has cos 1 and 0, relu(0.5 - 1 + 0) = 0; mean 0.35, weight 2.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    objective = build_objective(resolve(cfg), [], with_teacher=False, pairs=False)
    assert isinstance(objective, Objective)
    assert float(objective(q, p)) == pytest.approx(0.7, abs=1e-6)

    triplet.clear()
    result = train_run.train(cfg)
    report = result.report
    assert json.loads((result.output_dir / "train_report.json").read_text()) == json.loads(json.dumps(report))
    logged = [h["loss"] for h in report["log_history"] if "loss" in h]
    assert report["loss"]["loss"] == ["triplet"] and report["global_steps"] == 2
    # the toy computed every step's loss: what it returned (x weight 2) is what the Trainer logged
    assert len(triplet) == 2 and logged == pytest.approx([2 * v for v in triplet], abs=1e-4)


def test_the_registry_holds_the_built_in_losses_with_their_data_kinds():
    assert registry.names() == ("infonce", "cosent", "cosine", "angle")
    assert {n: registry.get(n).kinds for n in registry.names()} == {
        "infonce": ("groups",), "cosent": ("pairs",), "cosine": ("pairs",), "angle": ("groups", "pairs")}
    assert registry.names("pairs") == ("cosent", "cosine", "angle")
    assert [registry.canonical(a) for a in ("MNRL", "info_nce", "cosent_loss", "cosine_similarity", "aoe")] == [
        "infonce", "infonce", "cosent", "cosine", "angle"]
    assert registry.defaults() == {"temperature": 0.02, "cosine_tau": 20.0, "cosine_w": 1.0, "ibn_w": 20.0,
                                   "ibn_tau": 20.0, "angle_w": 1.0, "angle_tau": 20.0}
    with pytest.raises(ValueError, match="'aoe' is already registered"):   # names and aliases stay unique
        registry.register(LossSpec("other", "", groups=lambda b: b.q.sum(), aliases=("aoe",)))


def test_an_unknown_loss_is_refused_naming_every_registered_loss(triplet, tmp_path, capsys):
    with pytest.raises(EmbforgeError, match=r"--loss 'margin' is not a loss; choose from infonce, cosent, "
                                            r"cosine, angle, triplet$"):
        resolve(from_dict(Config, {"output_dir": str(tmp_path), "loss": "Margin"}))
    assert main(["train", "--loss", "nope", "--output_dir", str(tmp_path / "o"), "--use_cpu"]) != 0
    assert "choose from infonce, cosent, cosine, angle, triplet" in capsys.readouterr().err


def test_train_help_states_the_registry_defaults(capsys):
    """`embforge train --help` shows each loss and wrapper default the registry and wrapper modules declare."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split()).split("options of this command", 1)[1]
    fields = {f.name: f for f in Config.__dataclass_fields__.values()}
    declared = {**registry.defaults(), **ese.SETTINGS, **topk.SETTINGS, **distill.SETTINGS}
    unstated = []
    for name, value in declared.items():
        if fields[name].default is not None:    # a concrete Config default: argparse prints it
            assert fields[name].default == value, name
            continue
        help_text = re.search(rf"--{name} (?:\[BOOL\]|[A-Z_]+)(.*?)\(default: None\)", text).group(1)
        stated = re.search(r"(?:\(|; )default ([^,)]+)", help_text)   # "(default 0.02, ..." or "; default 20)"
        if stated is None:
            unstated.append(name)
            continue
        shown = stated.group(1)
        assert shown == str(value).lower() if isinstance(value, (bool, str)) else float(shown) == value, name
    assert unstated == ["apply_topk_to_backbone"]   # the only one whose help names no default


def test_resolve_returns_a_new_config_and_leaves_the_given_one(tmp_path, caplog):
    cfg = from_dict(Config, {"output_dir": str(tmp_path), "sanity_test": True, "max_steps": 10, "loss": "aoe",
                             "topk_k_list": "8,16"})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        out = resolve(cfg)
    assert out is not cfg and isinstance(out, Config)
    assert (out.loss, out.ibn_w, out.temperature, out.apply_topk_to_backbone) == (["angle"], 20.0, 0.02, True)
    assert (cfg.loss, cfg.ibn_w, cfg.temperature, cfg.apply_topk_to_backbone) == (["aoe"], None, None, None)
    # __post_init__ ran again on the copy: --sanity_test's sizes stay, and it does not warn a second time
    assert (out.max_steps, out.per_device_train_batch_size, out.max_examples) == (4, 2, 16)
    assert "--sanity_test replaces" not in caplog.text
