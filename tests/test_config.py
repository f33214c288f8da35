import argparse
from dataclasses import dataclass

import pytest

from embforge.config import add_arguments, config_from_args, from_dict, option
from embforge.errors import EmbforgeError


@dataclass
class Demo:
    dims: list[int] | None = option(None, "dims")
    normalized: bool = option(True, "norm", aliases=("normlized",))
    lr: float = option(1e-5, "learning rate", aliases=("learning_rate",))
    pooling: str = option("mean", "pooling", choices=("cls", "mean"))


def parse(argv, yaml_path=None):
    parser = argparse.ArgumentParser()
    add_arguments(parser, Demo)
    return config_from_args(Demo, parser.parse_args(argv), yaml_path)


def test_flags_win_over_yaml_which_wins_over_defaults(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("dims: 64,32\nlearning_rate: 3e-5\nnormlized: false\n")
    cfg = parse(["--lr", "1e-4"], y)
    assert cfg == Demo(dims=[64, 32], normalized=False, lr=1e-4, pooling="mean")
    assert parse(["--dims", "8,4", "2"]).dims == [8, 4, 2]
    assert parse(["--normlized", "False"]).normalized is False
    assert parse(["--normalized"]).normalized is True


def test_unknown_and_bad_values_fail_clearly(tmp_path):
    with pytest.raises(EmbforgeError, match="unknown key 'learnig_rate' \\(did you mean 'learning_rate'\\?\\)"):
        from_dict(Demo, {"learnig_rate": 1})
    with pytest.raises(EmbforgeError, match="dims expects comma-separated integers, got 'x'"):
        from_dict(Demo, {"dims": "x"})
    with pytest.raises(EmbforgeError, match="pooling must be one of cls, mean"):
        from_dict(Demo, {"pooling": "max"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1\n")
    with pytest.raises(EmbforgeError, match="bad.yaml:2: invalid YAML"):
        parse([], bad)


def test_train_config_accepts_reference_spellings_of_trainer_fields():
    from embforge.commands.train import Config

    cfg = from_dict(Config, {"warmup_ratio": 0.1, "lr": 3e-5, "normlized": False, "chunksize": 4,
                             "sentence_pooling_method": "cls", "output_dir": "/tmp/unused", "use_cpu": True})
    assert (cfg.warmup_steps, cfg.learning_rate, cfg.normalize, cfg.chunk_size, cfg.pooling) == \
        (0.1, 3e-5, False, 4, "cls")
