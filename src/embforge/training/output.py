"""The training output folder: which run owns it, which checkpoints resume it, and the final model in it.

A run is identified by a fingerprint of what decides its weights (the base model, the training data
and every setting that changes the arithmetic), so a checkpoint is only ever resumed by the run that
wrote it, and a folder holding another run's outputs is never silently mixed with or replaced by a
new one. The final model's files live in ``--output_dir`` itself, as with the Hugging Face Trainer, so
``AutoModel.from_pretrained(output_dir)`` works; they are staged and renamed in one by one, weights
last, behind an "incomplete" marker that embforge's loader refuses, so a crash never leaves a folder
that loads half-old, half-new weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EmbforgeError
from ..model.io import INCOMPLETE_MARKER
from ..paths import OUTPUT_MARKER, atomic_write_bytes, check_output_dir, output_owner, write_output_marker

if TYPE_CHECKING:  # pragma: no cover
    from .config import TrainConfig

logger = logging.getLogger(__name__)

RUN_FILE = "embforge_run.json"
STAGING_DIR = ".staging-final"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_SUFFIXES = (".safetensors", ".bin")

# TrainingArguments fields that change the weights a run reaches. Everything embforge adds on top of
# TrainingArguments counts too. The rest (where to log and save, progress bars, workers) may differ
# between a run and its resumption.
_TRAINER_FIELDS = (
    "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
    "num_train_epochs", "max_steps", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "seed",
    "data_seed", "per_device_train_batch_size", "gradient_accumulation_steps", "optim", "optim_args", "fp16",
    "bf16", "dataloader_drop_last", "gradient_checkpointing", "label_smoothing_factor",
)
_NOT_IDENTITY = {"resume_from_checkpoint", "overwrite_output_dir", "strict", "skip_bad_records"}


def run_settings(cfg: TrainConfig, data_digest: str, model_identity: str) -> dict[str, Any]:
    """What identifies a run, as readable settings (shown side by side when two runs differ)."""
    from transformers import TrainingArguments

    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    # embforge's own options count only when they differ from their default: a new option whose default
    # keeps the old arithmetic leaves the checkpoints of earlier versions resumable
    names = [f.name for f in dataclasses.fields(cfg) if f.name not in inherited and f.name not in _NOT_IDENTITY
             and getattr(cfg, f.name) != _default(f)]
    settings: dict[str, Any] = {name: _plain(getattr(cfg, name)) for name in (*_TRAINER_FIELDS, *names)
                                if hasattr(cfg, name)}
    settings["train_data"] = f"{cfg.train_data or 'sanity'} (records {data_digest[:12]})"
    settings["model_name_or_path"] = f"{cfg.model_name_or_path or 'default'} (weights {model_identity[:12]})"
    settings["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    return settings


def _default(f: dataclasses.Field[Any]) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _plain(value: Any) -> Any:
    value = getattr(value, "value", value)  # enums such as lr_scheduler_type
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def records_digest(records: Iterable[Any]) -> str:
    """Hash of the training records as read (texts, order, scores): the data a run saw, whatever its files.
    Where a record came from (its ``source`` file:line) is not part of it."""
    h = hashlib.sha256()
    for rec in records:
        fields = {k: v for k, v in dataclasses.asdict(rec).items() if k != "source"}
        h.update(json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def describe_difference(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    keys = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    return "; ".join(f"{k}: {theirs.get(k, 'default')!r} there, {ours.get(k, 'default')!r} now"
                     for k in keys) or "no listed setting"


def _read_run(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "fingerprint" in data else None


def write_run_file(folder: Path, settings: dict[str, Any]) -> None:
    atomic_write_bytes(folder / RUN_FILE, (json.dumps({"fingerprint": fingerprint(settings), "settings": settings},
                                                      indent=2, default=str) + "\n").encode())


def checkpoints(out: Path) -> list[Path]:
    """``checkpoint-N`` folders of ``out``, by step."""
    found = [(int(m.group(1)), p) for p in out.glob("checkpoint-*") if p.is_dir() and (m := CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def prepare_output_dir(out: Path, settings: dict[str, Any], *, resuming: bool, overwrite: bool) -> None:
    """Refuse a folder that holds something other than this run's outputs, before any work.

    A folder of another training run is refused unless ``overwrite`` (HF's ``overwrite_output_dir``),
    which then removes that run's outputs (its checkpoints and final model), and nothing else.
    """
    if out.is_dir() and any(out.iterdir()):
        owner = output_owner(out)
        if owner is None or owner.get("command") != "train":
            check_output_dir(out, command="train", overwrite=overwrite, flag="--overwrite_output_dir")
        else:
            run = owner.get("run")
            theirs: dict[str, Any] = run if isinstance(run, dict) else {}
            if fingerprint(theirs) != fingerprint(settings):
                if not overwrite:
                    raise EmbforgeError(
                        f"{out} holds another training run ({describe_difference(settings, theirs)}); "
                        "refusing to mix or replace it. Give a new --output_dir, or --overwrite_output_dir to "
                        "replace that run's checkpoints and model")
                if not resuming:
                    remove_run_outputs(out, owner)
    else:
        check_output_dir(out, command="train", overwrite=overwrite, flag="--overwrite_output_dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".embforge-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise EmbforgeError(f"cannot write to the output folder {out}: {exc.strerror}") from exc


def claim(out: Path, settings: dict[str, Any]) -> None:
    """Mark ``out`` as this run's, keeping the list of final-model files an earlier save recorded."""
    owner = output_owner(out) or {}
    files = owner.get("files") if owner.get("command") == "train" else None
    write_output_marker(out, "train", run=settings, files=files or [])


def remove_run_outputs(out: Path, owner: dict[str, Any]) -> None:
    """Delete what an earlier run wrote (checkpoints, final model, report), on --overwrite_output_dir."""
    named = [str(f) for f in owner.get("files") or []] + ["train_report.json", "loss.png", STAGING_DIR,
                                                           INCOMPLETE_MARKER]
    for path in [*checkpoints(out), *(out / n for n in named)]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    logger.info("%s: removed the previous run's checkpoints and model (--overwrite_output_dir)", out)


def resolve_resume(out: Path, resume: Any, settings: dict[str, Any]) -> str | None:
    """The checkpoint to resume from: ``last`` means this run's latest; a path must belong to this run."""
    if not resume or (isinstance(resume, str) and resume.lower() in ("false", "none", "")):
        return None
    ours = fingerprint(settings)
    if isinstance(resume, bool) or str(resume).lower() in ("true", "last"):
        found = checkpoints(out)
        mine = [c for c in found if (r := _read_run(c)) is not None and r["fingerprint"] == ours]
        if mine:
            return str(mine[-1])
        if not found:
            raise EmbforgeError(f"{out}: no checkpoint to resume from")
        other = _read_run(found[-1])
        detail = describe_difference(settings, other["settings"]) if other else "it has no run fingerprint"
        raise EmbforgeError(f"{out}: no checkpoint of this run to resume; {found[-1].name} belongs to another run "
                            f"({detail})")
    path = Path(resume)
    if not path.is_dir():
        raise EmbforgeError(f"checkpoint not found: {resume}")
    other = _read_run(path)
    if other is None:
        logger.warning("%s carries no run fingerprint (written by an older embforge): resuming without "
                       "checking that it belongs to this run", path)
    elif other["fingerprint"] != ours:
        raise EmbforgeError(f"{path} belongs to another run: {describe_difference(settings, other['settings'])}")
    return str(path)


def publish_final(out: Path, staging: Path, settings: dict[str, Any]) -> None:
    """Move the staged final model's files into ``out``: weights last, behind the incomplete marker."""
    owner = output_owner(out) or {}
    previous = {str(f) for f in owner.get("files") or []}
    names = sorted(p.name for p in staging.iterdir() if p.name != OUTPUT_MARKER)
    names.sort(key=lambda n: n.endswith(WEIGHT_SUFFIXES))  # stable: weights go last
    incomplete = out / INCOMPLETE_MARKER
    incomplete.write_text("an embforge save into this folder did not finish; the model here is not usable\n")
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            old = out / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(staging / name, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging / name, target)
    for name in sorted(previous - set(names)):  # files of the previous final model that this one lacks
        stale = out / name
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    write_output_marker(out, "train", run=settings, files=names)
    incomplete.unlink()
    shutil.rmtree(staging, ignore_errors=True)
