"""The training driver: config -> data -> encoder -> Trainer -> saved model and report."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..cache import parameters_digest
from ..data import load_records
from ..data.memory import is_in_memory
from ..data.records import RetrievalRecord, ScoredPair
from ..data.streaming import StreamSource, StreamSummary
from ..errors import EmbforgeError
from ..model import Encoder
from ..model.card import save_training_card
from ..paths import OUTPUT_MARKER, atomic_write_bytes, check_output_folder
from .attention import set_attention_dropout
from .config import TrainConfig, hyperparameters_of, resolved
from .distributed import world
from .fsdp import full_state_dict, materialized, sharding_summary
from .objective import build_objective
from .output import (
    STAGING_DIR,
    claim,
    prepare_output_dir,
    publish_final,
    records_digest,
    resolve_resume,
    run_settings,
)
from .peft_modes import apply_parameter_efficiency, finalize_for_saving, validate_architecture_options
from .recipes import check_data_kind, check_model_dims, resolve

if TYPE_CHECKING:  # pragma: no cover
    from transformers import TrainerState

logger = logging.getLogger(__name__)


def sanity_data() -> Path:
    """16 SciFact train queries, each with 3 random corpus negatives, shipped in the package for --sanity_test."""
    return Path(str(resources.files("embforge") / "resources" / "sanity.jsonl"))


def validate(cfg: TrainConfig) -> None:
    """Conflicts and impossible values, reported before any model is loaded."""
    if cfg.gradcache and not (cfg.chunk_size or cfg.chunk_tokens):
        raise EmbforgeError("--gradcache needs --chunk_size N (texts per forward pass) or --chunk_tokens N")
    if cfg.chunk_size is not None and cfg.chunk_size <= 0:
        raise EmbforgeError(f"--chunk_size must be positive, got {cfg.chunk_size}")
    if cfg.chunk_tokens is not None and cfg.chunk_tokens <= 0:
        raise EmbforgeError(f"--chunk_tokens must be positive, got {cfg.chunk_tokens}")
    if cfg.attention_dropout is not None and not 0 <= cfg.attention_dropout < 1:
        raise EmbforgeError(f"--attention_dropout must be in [0, 1), got {cfg.attention_dropout}")
    if cfg.train_group_size is not None and cfg.train_group_size < 1:
        raise EmbforgeError(f"--train_group_size must be at least 1, got {cfg.train_group_size}")
    check_numbers(cfg)
    if cfg.streaming:
        check_streaming(cfg)
    if cfg.torch_compile and cfg.apply_lora:
        raise EmbforgeError("--torch_compile with --apply_lora: the compiled LoRA step does not reproduce eager "
                            "training (weights differ by ~5e-4 after 2 steps on a test model); drop one of them")
    if cfg.apply_lora and cfg.freezenonbias:
        raise EmbforgeError("--apply_lora and --freezenonbias are two different ways to train few weights: pick one")
    validate_architecture_options(cfg)
    check_output_folder(cfg.output_dir)


def _require(flag: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise EmbforgeError(f"--{flag} must be {expected}, got {value}")


def check_numbers(cfg: TrainConfig) -> None:
    """Values no run can use: caught here, since a negative learning rate or epoch count otherwise dies
    in torch after the model loaded, or trains for 0 steps and saves the untrained model as the result."""
    _require("learning_rate", cfg.learning_rate, cfg.learning_rate > 0, "positive")
    _require("max_steps", cfg.max_steps, cfg.max_steps >= -1, "-1 (train for --num_train_epochs) or positive")
    if cfg.max_steps <= 0:  # as in the Trainer, a max_steps of 0 or -1 leaves the length to the epochs
        _require("num_train_epochs", cfg.num_train_epochs, cfg.num_train_epochs > 0,
                 "positive (or give --max_steps N)")
    for flag in ("per_device_train_batch_size", "gradient_accumulation_steps", "query_max_len", "passage_max_len"):
        _require(flag, getattr(cfg, flag), getattr(cfg, flag) >= 1, "at least 1")
    for flag in ("weight_decay", "warmup_steps"):
        _require(flag, getattr(cfg, flag), getattr(cfg, flag) >= 0, "0 or more")
    _require("kd_temperature", cfg.kd_temperature, cfg.kd_temperature > 0, "positive")
    if cfg.max_examples is not None:
        _require("max_examples", cfg.max_examples, cfg.max_examples >= 1, "at least 1")
    if cfg.apply_lora:
        _require("lora_r", cfg.lora_r, cfg.lora_r >= 1, "at least 1")
        _require("lora_alpha", cfg.lora_alpha, cfg.lora_alpha > 0, "positive")
        _require("lora_dropout", cfg.lora_dropout, 0 <= cfg.lora_dropout < 1, "in [0, 1)")


def check_streaming(cfg: TrainConfig) -> None:
    """What a stream cannot do: tell its own length, or be a mixture (built in memory)."""
    if cfg.max_steps <= 0:
        raise EmbforgeError("--streaming needs --max_steps N: a stream has no length, so --num_train_epochs "
                            "cannot set the run's length (passes over the data restart until N steps)")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    need = cfg.per_device_train_batch_size * world_size
    _require("stream_buffer", cfg.stream_buffer, cfg.stream_buffer >= need,
             f"at least the global batch ({need} records)")
    source = cfg.train_data
    if cfg.train_format == "mixture" or (source and not is_in_memory(source) and Path(source).is_file()
                                         and Path(source).suffix.lower() in (".yaml", ".yml")):
        raise EmbforgeError(f"--streaming reads one source; {source} is a dataset mixture, which is built in "
                            "memory (drop --streaming, or stream one of its files)")


def training_source(cfg: TrainConfig) -> str | Path:
    source = cfg.train_data or (sanity_data() if cfg.sanity_test else None)
    if source is None:
        raise EmbforgeError("no training data: give --train_data FILE|FOLDER|MIXTURE.yaml (or --sanity_test)")
    return source


def open_stream(cfg: TrainConfig) -> tuple[list[RetrievalRecord] | list[ScoredPair], TrainConfig, StreamSource,
                                           StreamSummary, str]:
    """The lazily read source of --streaming, after one pass at constant memory that validates every record,
    counts and fingerprints them (for resuming) and keeps the few the data-kind checks need. Returns those
    representatives, the completed config, the source, the pass's summary and the records' digest."""
    source = training_source(cfg)
    stream = StreamSource(source, format=cfg.train_format, split=cfg.train_split, strict=cfg.strict,
                          skip_bad_records=cfg.skip_bad_records, max_records=cfg.max_examples)
    summary = StreamSummary()
    digest = records_digest(summary.watch(stream.open()))
    if not summary.count:
        raise EmbforgeError(f"{source}: no training records")
    records, cfg = check_records(cfg, summary.representatives, source)  # type: ignore[arg-type]
    return records, cfg, stream, summary, digest


def load_training_records(cfg: TrainConfig) -> tuple[list[RetrievalRecord] | list[ScoredPair], TrainConfig]:
    """Retrieval records or scored pairs, whichever the data holds and the loss (``cfg.loss``, resolved)
    takes, with the config completed for them (``train_group_size``)."""
    source = training_source(cfg)
    records = load_records(source, format=cfg.train_format, split=cfg.train_split, strict=cfg.strict,
                           skip_bad_records=cfg.skip_bad_records, seed=cfg.seed)
    if cfg.max_examples:
        records = records[: cfg.max_examples]
    if not records:
        raise EmbforgeError(f"{source}: no training records")
    return check_records(cfg, records, source)


def check_records(cfg: TrainConfig, records: list[RetrievalRecord] | list[ScoredPair],
                  source: str | Path) -> tuple[list[RetrievalRecord] | list[ScoredPair], TrainConfig]:
    """The data-kind checks on the records, and the config completed for them."""
    if cfg.teacher_scores == "none":
        warn_unused_scores(records, source)
    if cfg.loss is None:
        cfg = resolve(cfg)
    cfg = check_data_kind(cfg, records, source if isinstance(source, (str, Path)) else "the training data")
    if cfg.teacher_scores != "none":
        check_teacher_scores(cfg, records, source)
    group_size = cfg.train_group_size or 1
    if cfg.strict and group_size > 1:
        need = group_size - 1
        short = next((r for r in records if isinstance(r, RetrievalRecord) and len(r.neg) < need), None)
        if short is not None:
            raise EmbforgeError(f"{short.source or source}: train_group_size={group_size} needs {need} "
                                f"negatives per record, this one has {len(short.neg)} (--strict)")
    return records, cfg


def warn_unused_scores(records: Sequence[RetrievalRecord | ScoredPair], source: object) -> None:
    """Teacher scores in FlagEmbedding data are read only under --teacher_scores (as FlagEmbedding reads them only
    under --knowledge_distillation): without it, say so once per run rather than let the user believe the
    training distils them."""
    fields = [name for name in ("pos_scores", "neg_scores") if any(getattr(r, name, None) is not None for r in records)]
    if fields:
        first = next(r for r in records if any(getattr(r, name, None) is not None for name in fields))
        logger.warning("%s: the records carry %s (first at %s); no loss uses them without --teacher_scores "
                       "kd|margin_mse, so training ignores them", source, " and ".join(fields), first.source or source)


def check_teacher_scores(cfg: TrainConfig, records: Sequence[RetrievalRecord | ScoredPair], source: object) -> None:
    """--teacher_scores needs groups of two or more passages and a teacher score for every text a group can
    draw: checked on every record here, before the model loads (a stream's later records are checked as
    their groups are drawn, ``batches.teacher_scores``)."""
    flag = f"--teacher_scores {cfg.teacher_scores}"
    groups = [r for r in records if isinstance(r, RetrievalRecord)]
    if len(groups) < len(records):
        raise EmbforgeError(f"{flag} distils scores over each query's group; {source} holds scored pairs "
                            "(give {query, pos, neg, pos_scores, neg_scores} records)")
    group_size = resolved(cfg.train_group_size, "train_group_size")
    if group_size < 2:
        raise EmbforgeError(f"{flag} compares the passages of each query's group: it needs --train_group_size 2 "
                            f"or more, got {group_size}")
    for r in groups:
        for side in ("pos", "neg") if r.neg else ("pos",):
            scores, texts = getattr(r, f"{side}_scores"), getattr(r, side)
            if scores is None:
                raise EmbforgeError(f"{r.source or source}: {flag} needs '{side}_scores' (one teacher score per "
                                    f"'{side}' text) in every record; this one has none")
            if len(scores) != len(texts):
                raise EmbforgeError(f"{r.source or source}: field '{side}_scores' has {len(scores)} scores for "
                                    f"{len(texts)} texts")


def build_encoder(cfg: TrainConfig) -> Encoder:
    from .peft_modes import llm_overrides

    overrides = {"pooling": cfg.pooling, "normalize": cfg.normalize, "query_max_len": cfg.query_max_len,
                 "passage_max_len": cfg.passage_max_len, "query_instruction": cfg.query_instruction_for_retrieval,
                 "passage_instruction": cfg.passage_instruction_for_retrieval, **llm_overrides(cfg)}
    kbit = getattr(cfg, "load_kbit", None)
    return Encoder.from_pretrained(cfg.model_name_or_path, device="cuda" if kbit else "cpu", load_kbit=kbit,
                                   is_llm=bool(getattr(cfg, "is_llm", False)), **overrides)


def load_teacher(cfg: TrainConfig, encoder: Encoder) -> Encoder | None:
    """The frozen teacher for distillation; the starting model's own path gives self-distillation."""
    if not cfg.teacher_name_or_path:
        return None
    teacher = Encoder.from_pretrained(cfg.teacher_name_or_path, device="cpu")
    if teacher.tokenizer.get_vocab() != encoder.tokenizer.get_vocab():
        raise EmbforgeError(f"--teacher_name_or_path {cfg.teacher_name_or_path}: the teacher's tokenizer differs "
                            "from the model's; distillation feeds both the same token ids, so they must match")
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def freeze_unused_heads(encoder: Encoder) -> None:
    """BERT's pooler feeds no embedding; left trainable it gets no gradient and breaks DDP's reducer."""
    for tower in encoder.towers():  # both towers of an --asym encoder
        pooler = getattr(tower, "pooler", None)
        if isinstance(pooler, torch.nn.Module):
            pooler.requires_grad_(False)


@dataclass(frozen=True)
class TrainResult:
    """What a training run gives back: the folder of its final model (``OUTPUT_DIR`` itself) and its
    report (also written to ``OUTPUT_DIR/train_report.json``), for the card and the pipeline to use."""

    output_dir: Path
    report: dict[str, Any]


def is_main_process() -> bool:
    """Rank 0 of a torchrun/accelerate launch (the process group may not exist yet), or a lone process."""
    return int(os.environ.get("RANK", "0")) == 0


def claim_run(out: Path, cfg: TrainConfig, settings: dict[str, Any]) -> str | None:
    """Claim ``out`` for the run ``settings`` describe and return the checkpoint to resume from, if any.
    One process checks, clears and claims the folder; the others only read it."""
    if is_main_process():
        resuming = bool(cfg.resume_from_checkpoint) and str(cfg.resume_from_checkpoint).lower() not in ("false",
                                                                                                      "none")
        prepare_output_dir(out, settings, resuming=resuming, overwrite=cfg.overwrite_output_dir)
        claim(out, settings)
    return resolve_resume(out, cfg.resume_from_checkpoint, settings)


def train(cfg: TrainConfig, encoder: Encoder | None = None) -> TrainResult:
    """Train and save the final model in ``OUTPUT_DIR``; returns it with the run's report.

    ``encoder``, when given, is trained itself (``Encoder.fit``) instead of a model loaded from
    ``cfg.model_name_or_path``. An output folder this call created is removed again if training fails
    before writing anything there, so a failed run leaves no empty folder behind.
    """
    out = Path(cfg.output_dir)
    created = not out.exists() and is_main_process()
    try:
        return _train(cfg, out, encoder)
    except BaseException:
        if created and out.is_dir() and {p.name for p in out.iterdir()} <= {OUTPUT_MARKER}:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train(cfg: TrainConfig, out: Path, given: Encoder | None) -> TrainResult:
    from .trainer import EmbeddingTrainer

    if cfg.task == "rerank":
        from .rerank import train_reranker

        return train_reranker(cfg, out, given)
    cfg = resolve(cfg)
    validate(cfg)
    stream, summary = None, None
    if cfg.streaming:
        records, cfg, stream, summary, digest = open_stream(cfg)
    else:
        records, cfg = load_training_records(cfg)
        digest = records_digest(records)
    encoder = build_encoder(cfg) if given is None else given
    settings = run_settings(cfg, digest, parameters_digest(encoder))
    resume = claim_run(out, cfg, settings)
    cfg = check_model_dims(cfg, encoder.embedding_dim)
    teacher = load_teacher(cfg, encoder)
    ese_layers = list(range(1, int(encoder.backbone.config.num_hidden_layers))) if cfg.apply_ese else []
    if cfg.attention_dropout is not None:
        set_attention_dropout(encoder.towers(), cfg.attention_dropout)
    apply_parameter_efficiency(encoder, cfg)
    freeze_unused_heads(encoder)
    if cfg.activation_checkpointing:  # `gradient_checkpointing`, its deprecated alias, is mirrored into it
        kwargs = dict(cfg.activation_checkpointing_kwargs or {})
        every_n_layers, offload = kwargs.pop("every_n_layers", 1), kwargs.pop("offload", False)
        for tower in encoder.towers():
            tower.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False, **kwargs},
                                                  every_n_layers=every_n_layers, offload=offload)
        cfg = copy.copy(cfg)  # the Trainer would redo it on the Encoder; the config given stays as it was
        cfg.activation_checkpointing = cfg.gradient_checkpointing = False
    pairs = isinstance(records[0], ScoredPair)
    objective = build_objective(cfg, ese_layers, with_teacher=teacher is not None, pairs=pairs)
    trainer = EmbeddingTrainer(encoder=encoder, records=records, objective=objective, args=cfg,
                               group_size=resolved(cfg.train_group_size, "train_group_size"),
                               query_instruction=encoder.config.query_instruction,
                               passage_instruction=encoder.config.passage_instruction, strict=cfg.strict,
                               gradcache_chunk=cfg.chunk_size if cfg.gradcache else None,
                               gradcache_tokens=cfg.chunk_tokens if cfg.gradcache else None, pairs=pairs,
                               teacher=teacher, ese_layers=ese_layers, run_settings=settings, stream=stream,
                               stream_buffer=cfg.stream_buffer,
                               score_range=(summary.low, summary.high) if summary and pairs else None)
    result = trainer.train(resume_from_checkpoint=resume)

    report = training_report(cfg, trainer.state, result.metrics, summary.count if summary else len(records))
    gathered = None
    if trainer.is_fsdp_enabled:  # collectives: every rank takes part, rank 0 ends up with the whole model
        report["fsdp"] = sharding_summary(trainer.model)
        gathered = full_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        finalize_for_saving(encoder, cfg)
        write_report(out, report)
        staging = out / STAGING_DIR
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        with materialized(encoder, gathered):
            encoder.save_to(staging)
        save_training_card(staging, out, report, hyperparameters_of(cfg))
        publish_final(out, staging, settings)
        logger.info("saved the final model to %s", out)
    trainer.accelerator.wait_for_everyone()
    if given is not None:  # the object now holds the trained weights, as a loaded model would
        given.name_or_path = str(out)
        given.eval()
    return TrainResult(out, report)


def training_report(cfg: TrainConfig, state: TrainerState, metrics: dict[str, float],
                    n_records: int) -> dict[str, Any]:
    """The run's report: what was trained on what, for how long, and the loss history."""
    history = state.log_history
    return {
        "model": cfg.model_name_or_path or "all-MiniLM-L6-v2 (embedded)",
        "train_data": str(cfg.train_data or "sanity"),
        "records": n_records,
        "loss": {"recipe": cfg.recipe, "loss": cfg.loss, "weights": cfg.loss_weights, "mrl_dims": cfg.mrl_dims,
                 "topk_k_list": cfg.topk_k_list, "apply_ese": cfg.apply_ese,
                 "teacher": cfg.teacher_name_or_path, "teacher_scores": cfg.teacher_scores},
        "world_size": world()[1],
        "global_steps": state.global_step,
        "train_runtime_s": metrics.get("train_runtime"),
        "samples_per_second": getattr(state, "embforge_samples_per_second", None),
        "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
        "log_history": history,
    }


def write_report(out: Path, report: dict[str, Any]) -> None:
    """``train_report.json`` and, when the run logged a loss, ``loss.png``."""
    atomic_write_bytes(out / "train_report.json", json.dumps(report, indent=2, default=str).encode())
    points = [(h["step"], h["loss"]) for h in report["log_history"] if "loss" in h]
    if points:
        plot_loss(points, out / "loss.png")


def plot_loss(points: list[tuple[int, float]], path: Path) -> None:
    from ..figures import pyplot, save_png

    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in points], [v for _, v in points], marker="o" if len(points) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("embforge train")
    ax.grid(alpha=0.3)
    save_png(fig, path, dpi=100)
