"""The Python API: every CLI command as a function taking the same typed config.

``embforge.train(train_data="t.jsonl", output_dir="out", learning_rate=2e-5)`` and
``embforge train --train_data t.jsonl --output_dir out --learning_rate 2e-5`` build the same Config
dataclass (``embforge/commands/<command>.py``: names, reference-spelling aliases, defaults, choices,
checks) and call the same ``run``; the CLI only parses flags. A keyword that is no field fails with
a did-you-mean, as an unknown flag or YAML key does.

Each function takes an optional ``config`` first: a Config instance, a mapping or a YAML file, with
the keyword arguments on top (defaults < config < keywords, as defaults < YAML < flags). What only
Python can give also works: in-memory training or evaluation data (a list of dicts or records, a
``datasets.Dataset``, a pandas DataFrame) and an already loaded :class:`~embforge.Encoder`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import alias_map, did_you_mean, from_dict, load_yaml
from .errors import EmbforgeError

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import DataclassInstance

    from .commands.data import Config as DataConfig
    from .commands.encode import Config as EncodeConfig
    from .commands.eval import Config as EvalConfig
    from .commands.export import Config as ExportConfig
    from .commands.merge import Config as MergeConfig
    from .commands.mine import Config as MineConfig
    from .commands.run import Config as RunConfig
    from .commands.train import Config as TrainConfig
    from .data.records import RetrievalRecord, ScoredPair
    from .model.encoder import Encoder

C = TypeVar("C", bound="DataclassInstance")
#: What ``config`` may be: a Config instance, a mapping of field names, a YAML file, or nothing.
ConfigLike = Any

# Loss settings that the reference passes to fit() as ``loss_kwargs`` (AnglE); train Config fields.
LOSS_KWARGS = ("cosine_w", "ibn_w", "angle_w", "cosine_tau", "ibn_tau", "angle_tau")


def _is_path(value: Any) -> bool:
    from .data.memory import is_in_memory

    return not is_in_memory(value)


def build_config(cls: type[C], config: ConfigLike = None, fields: Mapping[str, Any] | None = None,
                 objects: tuple[str, ...] = ()) -> C:
    """``cls`` from ``config`` (instance, mapping or YAML path) with ``fields`` on top.

    Fields named in ``objects`` may hold in-memory data instead of a path: they bypass the string
    conversion and are stored wrapped in :class:`~embforge.data.InMemoryData`.
    """
    names = alias_map(cls)
    held: dict[str, Any] = {}

    def split(values: Mapping[str, Any]) -> dict[str, Any]:
        """Keep in-memory values of ``objects`` fields away from from_dict's string conversion."""
        plain = {}
        for key, value in values.items():
            name = names.get(key)
            if name in objects and value is not None and not _is_path(value):
                held[name] = value
            else:
                held.pop(name or key, None)  # a later path replaces earlier in-memory data
                plain[key] = value
        return plain

    if config is None:
        base = None
    elif isinstance(config, cls):
        base = config
    elif isinstance(config, Mapping):
        base = from_dict(cls, split(config), source="config")
    elif _is_path(config):
        base = from_dict(cls, split(load_yaml(config)), source=str(config))
    else:
        raise EmbforgeError(f"config must be a {cls.__module__}.{cls.__qualname__}, a mapping or a YAML file, "
                            f"got {type(config).__name__}")
    plain = split(fields or {})
    cfg = from_dict(cls, plain, source="keyword arguments", base=base) if plain or base is None else copy.copy(base)
    for name in objects:
        value = held.get(name, getattr(cfg, name, None))
        if value is not None and not _is_path(value):
            from .data.memory import InMemoryData

            setattr(cfg, name, InMemoryData(value))
    return cfg


def command(name: str, config: ConfigLike = None, /, **fields: Any) -> Any:
    """Run any ``embforge`` subcommand by name: ``command("merge", ...)`` is ``embforge merge ...`` and
    ``command("csr train", ...)`` is ``embforge csr train ...``. As on the command line, the positional
    argument of ``data`` and ``run`` is their source / pipeline file; of the others, a config.

    The typed functions below are this with a name, a config class and a return type.
    """
    from .cli import COMMANDS

    group, _, sub = name.partition(" ")
    if group not in COMMANDS:
        raise EmbforgeError(f"unknown command {group!r}{did_you_mean(group, COMMANDS)} (known: {', '.join(COMMANDS)})")
    module = importlib.import_module(COMMANDS[group][0])
    subcommands = getattr(module, "SUBCOMMANDS", None)
    if subcommands:
        if sub not in subcommands:
            raise EmbforgeError(f"{group}: unknown subcommand {sub!r}{did_you_mean(sub, subcommands)} "
                                f"(known: {', '.join(subcommands)})")
        spec = subcommands[sub]
        return spec.run(build_config(spec.config, config, fields))
    positional = COMMANDS[group][1]
    if isinstance(positional, str) and config is not None and not isinstance(config, module.Config):
        fields = {positional: config, **fields}
        config = None
    return module.run(build_config(module.Config, config, fields))


# ---------------------------------------------------------------------------------------- commands
def train(config: TrainConfig | ConfigLike = None, /, **fields: Any) -> Path:
    """Train (``embforge train``); returns the final model folder, ``OUTPUT_DIR`` itself.

    ``train_data`` may be a path, a mixture YAML, or in-memory records (list of dicts or records,
    ``datasets.Dataset``, pandas DataFrame), read with the same field rules as a JSONL file.

    >>> embforge.train(train_data=[{"query": "q", "pos": ["p"]}], output_dir="out", max_steps=10)
    """
    from .commands import train as cmd

    return Path(cmd.run(build_config(cmd.Config, config, fields, objects=("train_data",))))


def evaluate(config: EvalConfig | ConfigLike = None, /, *, encoder: Encoder | None = None,
             **fields: Any) -> dict[str, Any]:
    """Evaluate (``embforge eval``); returns the report, with ``report["metrics"]`` the full-dim metrics.

    ``data`` may be a path (BEIR folder, query/pos JSONL, STS-B csv, SICK.txt) or in-memory records:
    scored pairs (AnglE format A, ``text1/text2/label``) give Spearman and Pearson, query/positive
    records give retrieval metrics over all their texts. ``encoder`` evaluates a loaded model instead
    of ``model``; ``max_length`` and ``query_instruction_for_retrieval`` then apply for this call only.

    >>> embforge.evaluate(model="out", data="scifact", split="test")["metrics"]["nDCG@10"]
    """
    from .commands import eval as cmd
    from .data import load_records

    cfg = build_config(cmd.Config, config, fields, objects=("data",))
    records = None
    if cfg.data is not None and not _is_path(cfg.data):
        records = load_records(cfg.data)
        cfg.data = None
    if encoder is None:
        return cmd.run(cfg, records=records)
    if cfg.model is not None:
        raise EmbforgeError("evaluate: give either encoder= or model=, not both")
    settings: dict[str, Any] = {"query_instruction": cfg.query_instruction_for_retrieval}
    if cfg.max_length:
        settings.update(query_max_len=cfg.max_length, passage_max_len=cfg.max_length)
    with _encoder_settings(encoder, settings):
        return cmd.run(cfg, encoder=encoder, records=records)


def mine(config: MineConfig | ConfigLike = None, /, **fields: Any) -> dict[str, Any]:
    """Mine hard negatives (``embforge mine``) into ``output_file``; returns the statistics.

    >>> embforge.mine(input_file="train.jsonl", output_file="mined.jsonl", range_for_sampling="2-200")
    """
    from .commands import mine as cmd

    return cmd.run(build_config(cmd.Config, config, fields))


def encode(config: EncodeConfig | ConfigLike = None, /, **fields: Any) -> Path:
    """Embed a text or JSONL file into ``output`` (``embforge encode``); returns the output path.

    For texts already in memory use :meth:`Encoder.encode`.

    >>> embforge.encode(input="corpus.jsonl", field="title+text", output="corpus.npz")
    """
    from .commands import encode as cmd

    return cmd.run(build_config(cmd.Config, config, fields))


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
        from .commands import run as cmd
        from .pipeline import run_pipeline

        cfg = build_config(cmd.Config, None, fields)
        return run_pipeline(pipeline, sanity_test=cfg.sanity_test, output_dir=cfg.output_dir, force=cfg.force)
    return dict(command("run", pipeline, **fields))


# ---------------------------------------------------------------------------------------- Encoder
@contextlib.contextmanager
def _encoder_settings(encoder: Encoder, settings: Mapping[str, Any]) -> Iterator[None]:
    """Apply EncoderConfig overrides for one call and restore the encoder's own afterwards."""
    given = {k: v for k, v in settings.items() if v is not None}
    original = encoder.config
    encoder.config = dataclasses.replace(original, **given) if given else original
    try:
        yield
    finally:
        encoder.config = original


def fit(encoder: Encoder, train_data: Any, *, loss: str | list[str] | None = None,
        output_dir: str | os.PathLike[str] | None = None, loss_kwargs: Mapping[str, Any] | None = None,
        **training_args: Any) -> Path:
    """Train ``encoder`` in place (``Encoder.fit``); returns the saved final folder.

    Runs ``embforge train`` starting from the encoder's current weights and settings (pooling,
    normalisation, lengths, instructions), then loads the trained weights back into it.
    ``training_args`` are train Config fields; ``loss_kwargs`` (AnglE's ``cosine_w``, ``ibn_w``,
    ``angle_w`` and their taus) are train Config fields too.
    """
    from .commands import train as cmd

    names = alias_map(cmd.Config)
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
    cfg = build_config(cmd.Config, None, fields, objects=("train_data",))
    out = Path(cfg.output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The starting weights are an input of the run, so they live beside the output folder, not in it.
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.fit-start-", dir=out.parent) as start:
        cfg.model_name_or_path = str(encoder.save(Path(start) / "model"))
        final = Path(cmd.run(cfg))
    _adopt(encoder, final)
    return final


def _adopt(encoder: Encoder, folder: Path) -> None:
    """Load a saved model into an existing encoder object (training may add towers or a head)."""
    from .model.encoder import Encoder

    trained = Encoder.from_pretrained(folder, device=str(encoder.device))
    encoder.backbone = trained.backbone
    encoder.query_backbone = trained.query_backbone
    encoder.head = trained.head
    encoder.tokenizer = trained.tokenizer
    encoder.config = trained.config
    encoder.name_or_path = trained.name_or_path
    encoder.train(trained.training)


def evaluate_encoder(encoder: Encoder, data: Any, **fields: Any) -> dict[str, Any]:
    """``Encoder.evaluate``: :func:`evaluate` for a loaded encoder. The embedding cache is keyed by the
    weights in memory, so an encoder changed since it was loaded never reads its old vectors."""
    return evaluate(encoder=encoder, data=data, **fields)
