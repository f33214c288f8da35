"""``embforge csr embed | train | encode``: CSR sparse autoencoders over embeddings.

A command group: each subcommand has its own typed Config (embforge/csr/config.py) and run function;
the CLI builds one nested parser per entry of SUBCOMMANDS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..csr.config import EmbedConfig, EncodeConfig, TrainConfig

HELP = "CSR sparse autoencoders: embed texts to .npz, train a CSR model, encode to sparse codes."


@dataclass(frozen=True)
class Subcommand:
    config: type
    run: Callable[[Any], Any]
    help: str
    positional: str | None = None  # as in embforge.cli.COMMANDS: "config" for an optional YAML file


def run_embed(cfg: EmbedConfig) -> Any:
    from ..csr import embed

    return embed(cfg)


def run_train(cfg: TrainConfig) -> Any:
    from ..csr import train

    return train(cfg)


def run_encode(cfg: EncodeConfig) -> Any:
    from ..csr import encode

    return encode(cfg)


SUBCOMMANDS: dict[str, Subcommand] = {
    "embed": Subcommand(EmbedConfig, run_embed, "Precompute embeddings (with labels / query pairs when the data "
                                                "has them) into an .npz for csr train."),
    "train": Subcommand(TrainConfig, run_train, "Train a CSR sparse autoencoder on an .npz of embeddings.", "config"),
    "encode": Subcommand(EncodeConfig, run_encode, "Encode dense embeddings (or texts, with a stacked folder) to "
                                                   "sparse codes: indices + values."),
}
