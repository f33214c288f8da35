"""The Python API: every CLI command as a function taking the same typed config.

``embforge.train(train_data="t.jsonl", output_dir="out", learning_rate=2e-5)`` and
``embforge train --train_data t.jsonl --output_dir out --learning_rate 2e-5`` build the same Config
dataclass (the engine's own: ``embforge.training.config.TrainConfig`` and so on: names,
reference-spelling aliases, defaults, choices) and call the same engine function; the CLI only binds
flags. A keyword that is no field fails with a did-you-mean, as an unknown flag or YAML key does.

Each function takes an optional ``config`` first: a Config instance, a mapping or a YAML file, with
the keyword arguments on top (defaults < config < keywords, as defaults < YAML < flags). What only
Python can give also works: in-memory training or evaluation data (a list of dicts or records, a
``datasets.Dataset``, a pandas DataFrame) and an already loaded :class:`~embforge.Encoder`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import alias_map, did_you_mean
from .data.inspect import DataConfig
from .encoding import EncodeConfig
from .errors import EmbforgeError
from .evaluation.config import EvalConfig
from .exporting import ExportConfig
from .merging import MergeConfig
from .mining.config import MineConfig
from .model.encoder import Encoder as _ModelEncoder
from .pipeline.config import RunConfig
from .scoring import ScoreConfig
from .training.config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import DataclassInstance

    from .data.records import RetrievalRecord, ScoredPair

C = TypeVar("C", bound="DataclassInstance")
#: What ``config`` may be besides a Config instance: a mapping of field names, a YAML file, or nothing.
ConfigLike = Mapping[str, Any] | str | os.PathLike[str] | None

# Loss settings that the reference passes to fit() as ``loss_kwargs`` (AnglE); train Config fields.
LOSS_KWARGS = ("cosine_w", "ibn_w", "angle_w", "cosine_tau", "ibn_tau", "angle_tau")


def _is_path(value: Any) -> bool:
    from .data.memory import is_in_memory

    return not is_in_memory(value)


def build_config(cls: type[C], config: C | ConfigLike = None, fields: Mapping[str, Any] | None = None,
                 objects: tuple[str, ...] = ()) -> C:
    """``cls`` from ``config`` (instance, mapping or YAML path) with ``fields`` on top.

    Fields named in ``objects`` may hold in-memory data instead of a path: they bypass the string
    conversion and are stored wrapped in :class:`~embforge.data.InMemoryData`.
    """
    from .config import build_config as build
    from .data.memory import InMemoryData

    cfg = build(cls, config, fields, objects=objects, is_object=lambda value: not _is_path(value))
    for name in objects:
        value = getattr(cfg, name, None)
        if value is not None and not _is_path(value) and not isinstance(value, InMemoryData):
            setattr(cfg, name, InMemoryData(value))
    return cfg


# name -> (Config class, the engine function that runs it, the Config field that a positional argument
# fills, if any: ``data`` and ``run`` take their source / pipeline file first; the others a config).
COMMANDS: dict[str, tuple[type[Any], str, str | None]] = {
    "encode": (EncodeConfig, "embforge.encoding:encode_file", None),
    "data": (DataConfig, "embforge.data.inspect:inspect", "source"),
    "mine": (MineConfig, "embforge.mining.run:mine", None),
    "score": (ScoreConfig, "embforge.scoring:score", None),
    "eval": (EvalConfig, "embforge.evaluation.run:evaluate", None),
    "train": (TrainConfig, "embforge.api:train", None),
    "merge": (MergeConfig, "embforge.merging:merge", None),
    "export": (ExportConfig, "embforge.exporting:export", None),
    "run": (RunConfig, "embforge.pipeline:run", "pipeline"),
}
CSR_COMMANDS: dict[str, tuple[str, str]] = {
    "embed": ("EmbedConfig", "embed"), "train": ("TrainConfig", "train"), "encode": ("EncodeConfig", "encode"),
}


def _function(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def command(name: str, config: Any = None, /, **fields: Any) -> Any:
    """Run any ``embforge`` subcommand by name: ``command("merge", ...)`` is ``embforge merge ...`` and
    ``command("csr train", ...)`` is ``embforge csr train ...``. As on the command line, the positional
    argument of ``data`` and ``run`` is their source / pipeline file; of the others, a config.

    The typed functions below are this with a name, a config class and a return type.
    """
    group, _, sub = name.partition(" ")
    known = [*COMMANDS, "csr"]
    if group not in known:
        raise EmbforgeError(f"unknown command {group!r}{did_you_mean(group, known)} (known: {', '.join(known)})")
    if group == "csr":
        if sub not in CSR_COMMANDS:
            raise EmbforgeError(f"{group}: unknown subcommand {sub!r}{did_you_mean(sub, CSR_COMMANDS)} "
                                f"(known: {', '.join(CSR_COMMANDS)})")
        from . import csr

        config_name, function = CSR_COMMANDS[sub]
        return getattr(csr, function)(build_config(getattr(csr, config_name), config, fields))
    cls, function, positional = COMMANDS[group]
    if positional and config is not None and not isinstance(config, cls):
        fields = {positional: config, **fields}
        config = None
    return _function(function)(build_config(cls, config, fields))


# ---------------------------------------------------------------------------------------- commands
def train(config: TrainConfig | ConfigLike = None, /, **fields: Any) -> Path:
    """Train (``embforge train``); returns the final model folder, ``OUTPUT_DIR`` itself.

    ``train_data`` may be a path, a mixture YAML, or in-memory records (list of dicts or records,
    ``datasets.Dataset``, pandas DataFrame), read with the same field rules as a JSONL file.

    >>> embforge.train(train_data=[{"query": "q", "pos": ["p"]}], output_dir="out", max_steps=10)
    """
    from .training.run import train as run_training

    return run_training(build_config(TrainConfig, config, fields, objects=("train_data",))).output_dir


def evaluate(config: EvalConfig | ConfigLike = None, /, *, encoder: _ModelEncoder | None = None,
             **fields: Any) -> dict[str, Any]:
    """Evaluate (``embforge eval``); returns the report, with ``report["metrics"]`` the full-dim metrics.

    ``data`` may be a path (BEIR folder, query/pos JSONL, STS-B csv, SICK.txt) or in-memory records:
    scored pairs (AnglE format A, ``text1/text2/label``) give Spearman and Pearson, query/positive
    records give retrieval metrics over all their texts. ``encoder`` evaluates a loaded model instead
    of ``model``; ``max_length`` and ``query_instruction_for_retrieval`` then apply for this call only.

    >>> embforge.evaluate(model="out", data="scifact", split="test")["metrics"]["nDCG@10"]
    """
    from .data import load_records
    from .evaluation.run import evaluate as run_evaluation

    cfg = build_config(EvalConfig, config, fields, objects=("data",))
    records = None
    if cfg.data is not None and not _is_path(cfg.data):
        records = load_records(cfg.data)
        cfg = dataclasses.replace(cfg, data=None)
    if encoder is None:
        return run_evaluation(cfg, records=records)
    if cfg.model_name_or_path is not None:
        raise EmbforgeError("evaluate: give either encoder= or model=, not both")
    settings: dict[str, Any] = {"query_instruction": cfg.query_instruction_for_retrieval}
    if cfg.max_length:
        settings.update(query_max_len=cfg.max_length, passage_max_len=cfg.max_length)
    with _encoder_settings(encoder, settings):
        return run_evaluation(cfg, encoder=encoder, records=records)


def mine(config: MineConfig | ConfigLike = None, /, **fields: Any) -> dict[str, Any]:
    """Mine hard negatives (``embforge mine``) into ``output_file``; returns the statistics.

    >>> embforge.mine(input_file="train.jsonl", output_file="mined.jsonl", range_for_sampling="2-200")
    """
    from .mining.run import mine as run_mining

    return run_mining(build_config(MineConfig, config, fields))


def score(config: ScoreConfig | ConfigLike = None, /, **fields: Any) -> dict[str, Any]:
    """Write teacher scores (``pos_scores`` / ``neg_scores``) into query/pos/neg JSONL (``embforge score``);
    returns the statistics. The teacher is a cross-encoder folder or any embedding model (detected).

    >>> embforge.score(model="reranker", input_file="mined.jsonl", output_file="scored.jsonl")["pairs"]
    """
    from .scoring import score as run_scoring

    return run_scoring(build_config(ScoreConfig, config, fields))


def encode(config: EncodeConfig | ConfigLike = None, /, **fields: Any) -> Path:
    """Embed a text or JSONL file into ``output`` (``embforge encode``); returns the output path.

    For texts already in memory use :meth:`Encoder.encode`.

    >>> embforge.encode(input="corpus.jsonl", field="title+text", output="corpus.npz")
    """
    from .encoding import encode_file

    return encode_file(build_config(EncodeConfig, config, fields))


def inspect_data(source: DataConfig | str | os.PathLike[str] | None = None, /, **fields: Any) -> dict[str, Any]:
    """Check a data source or mixture YAML (``embforge data SOURCE``); returns the report (format, counts).

    >>> embforge.inspect_data("train.jsonl", sample=3)["count"]
    """
    return dict(command("data", source, **fields))


def load_data(source: Any, /, **options: Any) -> list[RetrievalRecord] | list[ScoredPair]:
    """Records of a file, folder, mixture YAML or in-memory data, as training reads them.

    ``options``: ``format``, ``split``, ``strict``, ``skip_bad_records``, ``seed``, ``field_map``
    (see :func:`embforge.data.load_records`).

    >>> embforge.load_data([{"text": "a", "positive": "b"}])[0].pos
    ['b']
    """
    from .data import load_records

    known = ("format", "split", "strict", "skip_bad_records", "seed", "field_map", "bad_records")
    unknown = next((k for k in options if k not in known), None)
    if unknown is not None:
        raise EmbforgeError(f"load_data: unknown option {unknown!r}{did_you_mean(unknown, known)}")
    return load_records(source, **options)


def merge(config: MergeConfig | ConfigLike = None, /, **fields: Any) -> dict[str, Any]:
    """Weighted average of same-architecture models into ``output_dir`` (``embforge merge``); returns a summary.

    >>> embforge.merge(models=["out"], base="default", weights=[0.5, 0.5], output_dir="merged")
    """
    return dict(command("merge", config, **fields))


def export(config: ExportConfig | ConfigLike = None, /, **fields: Any) -> dict[str, Any]:
    """Export a model as ONNX or a sentence-transformers folder (``embforge export``); returns what was written.

    >>> embforge.export(model="out", format="onnx", output_dir="out/onnx")
    """
    return dict(command("export", config, **fields))


def run(pipeline: RunConfig | str | os.PathLike[str] | Mapping[str, Any] | None = None, /,
        **fields: Any) -> dict[str, Any]:
    """Run (or resume) a pipeline YAML (``embforge run PIPELINE``): mine, train, evaluate, merge, report.

    ``pipeline`` is the YAML file, or its content as a mapping; ``fields`` are ``sanity_test``,
    ``output_dir``, ``force``. Returns the final report.

    >>> embforge.run("examples/scifact.yaml", sanity_test=True)["steps"]
    """
    if isinstance(pipeline, Mapping):
        from .pipeline import run as run_pipeline

        return run_pipeline(build_config(RunConfig, None, fields), pipeline=pipeline)
    return dict(command("run", pipeline, **fields))


# ---------------------------------------------------------------------------------------- Encoder
@contextlib.contextmanager
def _encoder_settings(encoder: _ModelEncoder, settings: Mapping[str, Any]) -> Iterator[None]:
    """Apply EncoderConfig overrides for one call and restore the encoder's own afterwards."""
    given = {k: v for k, v in settings.items() if v is not None}
    original = encoder.config
    encoder.config = dataclasses.replace(original, **given) if given else original
    try:
        yield
    finally:
        encoder.config = original


def fit(encoder: _ModelEncoder, train_data: Any, *, loss: str | list[str] | None = None,
        output_dir: str | os.PathLike[str] | None = None, loss_kwargs: Mapping[str, Any] | None = None,
        **training_args: Any) -> Path:
    """Train ``encoder`` itself (``Encoder.fit``) and save it to ``output_dir``; returns that folder.

    Training starts from the encoder's current weights and settings (pooling, normalisation, lengths,
    instructions) and updates this very object. ``training_args`` are train Config fields;
    ``loss_kwargs`` (AnglE's ``cosine_w``, ``ibn_w``, ``angle_w`` and their taus) are train Config fields too.
    """
    from .training.run import train as run_training

    names = alias_map(TrainConfig)
    fields = {names.get(k, k): v for k, v in training_args.items()}
    for key, value in (loss_kwargs or {}).items():
        if key not in names:
            raise EmbforgeError(f"loss_kwargs: unknown key {key!r}{did_you_mean(key, [*LOSS_KWARGS, *names])}")
        if names[key] in fields:
            raise EmbforgeError(f"loss_kwargs: {key!r} is also given as a keyword argument; give it once")
        fields[names[key]] = value
    if "model_name_or_path" in fields:
        raise EmbforgeError("fit trains this encoder; model_name_or_path is for embforge.train")
    if loss is not None:
        fields["loss"] = loss
    if output_dir is not None:
        fields["output_dir"] = str(output_dir)
    own = encoder.config
    for key, value in (("pooling", own.pooling), ("normalized", own.normalize), ("query_max_len", own.query_max_len),
                       ("passage_max_len", own.passage_max_len),
                       ("query_instruction_for_retrieval", own.query_instruction or None),
                       ("passage_instruction_for_retrieval", own.passage_instruction or None)):
        fields.setdefault(key, value)
    fields["train_data"] = train_data
    fields["model_name_or_path"] = encoder.name_or_path  # for the record (card, run fingerprint); not loaded
    cfg = build_config(TrainConfig, None, fields, objects=("train_data",))
    return run_training(cfg, encoder=encoder).output_dir


def evaluate_encoder(encoder: _ModelEncoder, data: Any, **fields: Any) -> dict[str, Any]:
    """``Encoder.evaluate``: :func:`evaluate` for a loaded encoder. The embedding cache is keyed by the
    weights in memory, so an encoder changed since it was loaded never reads its old vectors."""
    return evaluate(encoder=encoder, data=data, **fields)


class Encoder(_ModelEncoder):
    """The model's :class:`~embforge.model.encoder.Encoder` with the API's verbs, ``fit`` and ``evaluate``.

    ``embforge.Encoder.from_pretrained(...)`` gives this class; the engines work with the model layer's
    base class, which knows nothing of training or evaluation.
    """

    def fit(self, train_data: Any, *, loss: str | list[str] | None = None,
            output_dir: str | os.PathLike[str] | None = None, loss_kwargs: dict[str, Any] | None = None,
            **training_args: Any) -> Path:
        """Train this encoder in place with ``embforge train``; returns the saved final folder.

        ``train_data``: a path or in-memory records (list of dicts, datasets.Dataset, DataFrame);
        ``training_args`` and ``loss_kwargs`` (cosine_w, ibn_w, angle_w, taus) are train Config fields.
        """
        return fit(self, train_data, loss=loss, output_dir=output_dir, loss_kwargs=loss_kwargs, **training_args)

    def evaluate(self, data: Any, **fields: Any) -> dict[str, Any]:
        """The ``embforge eval`` report for this encoder: Spearman/Pearson for scored pairs, retrieval
        metrics for BEIR or query/pos data (``report["metrics"]``); ``fields`` are eval Config fields."""
        return evaluate_encoder(self, data, **fields)
