"""``embforge train --task rerank``: a cross-encoder reranker on the embedder's data, on the Hugging Face Trainer.

Data and losses:
- query groups ``{query, pos, neg}``: each query gives one positive and ``train_group_size - 1`` negatives
  (default 8 passages, FlagEmbedding's reranker default), a batch of B queries is B * G (query, passage)
  pairs, and ``--rerank_loss ce`` (default) takes a softmax cross-entropy over each group, ``bce`` labels
  the positive 1 and the negatives 0, and ``margin_mse`` regresses the margins onto the teacher's
  (``pos_scores`` / ``neg_scores`` in every record);
- scored pairs (``text1, text2, score``): a regression head through ``bce`` on the scores scaled to [0, 1].

Pairs are truncated together to ``--max_length`` (``--passage_max_len``) tokens. The output folder has the
embedder's guarantees (run fingerprint, resumable checkpoints, weights published last, a card); the final
folder loads in :class:`embforge.model.cross_encoder.CrossEncoder`, ``sentence_transformers.CrossEncoder``
and ``AutoModelForSequenceClassification`` with the same scores.

What does not apply: a cross-encoder scores every pair on its own, so there are no in-batch or cross-device
negatives to share (DDP only splits the queries, which the Trainer does), and GradCache has no
batch-coupled embeddings to cache (the loss is a mean over queries: --gradient_accumulation_steps gives the
same gradient at the memory of a smaller batch).
"""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback

from ..cache import parameters_digest
from ..data import load_records
from ..data.records import RetrievalRecord, ScoredPair
from ..errors import EmbforgeError
from ..losses.rerank import RERANK_LOSSES, bce, group_softmax_ce, margin_mse
from ..model.cross_encoder import CrossEncoder
from ..model.rerank_card import save_reranker_card
from ..paths import check_output_folder
from .batches import PairDataset
from .distributed import world
from .output import (
    STAGING_DIR,
    publish_final,
    records_digest,
    run_settings,
    write_run_file,
)
from .peft_modes import lora_targets

if TYPE_CHECKING:  # pragma: no cover
    from ..model.encoder import Encoder
    from .config import TrainConfig
    from .run import TrainResult

logger = logging.getLogger(__name__)

DEFAULT_GROUP_SIZE = 8
#: Embedder options with no meaning for a cross-encoder: given with --task rerank they are an error, not ignored.
NOT_FOR_RERANK = ("gradcache", "negatives_cross_device", "streaming", "teacher_name_or_path", "recipe", "loss",
                  "mrl_dims", "topk_k_list", "apply_ese", "symmetric", "asym", "addxlinear", "apply_billm",
                  "load_kbit", "freezenonbias", "freeze", "save_adapter_only", "speca", "specb",
                  "query_instruction_for_retrieval", "passage_instruction_for_retrieval")
CARD_OPTIONS = ("num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                "learning_rate", "warmup_steps", "weight_decay", "train_group_size", "rerank_loss",
                "passage_max_len", "apply_lora", "lora_r", "lora_alpha", "fp16", "bf16", "seed")


def validate_rerank(cfg: TrainConfig) -> None:
    """Options a reranker run cannot honour, and impossible values, before any model is loaded."""
    from .run import check_numbers

    given = [f"--{name}" for name in NOT_FOR_RERANK if getattr(cfg, name, None) not in (None, False, 0, [])]
    if given:
        raise EmbforgeError(f"--task rerank: {', '.join(given)} do(es) not apply to a cross-encoder (see "
                            "`embforge train --help`; it has no embeddings, in-batch or cross-device negatives)")
    if cfg.train_group_size is not None and cfg.train_group_size < 1:
        raise EmbforgeError(f"--train_group_size must be at least 1, got {cfg.train_group_size}")
    check_numbers(cfg)
    check_output_folder(cfg.output_dir)


def rerank_loss_for(cfg: TrainConfig, pairs: bool) -> str:
    """--rerank_loss, defaulting by data kind, checked against it."""
    loss = cfg.rerank_loss or ("bce" if pairs else "ce")
    kinds = RERANK_LOSSES[loss]
    if pairs and "pairs" not in kinds:
        raise EmbforgeError(f"--rerank_loss {loss} trains on query groups; the data holds scored pairs (use bce)")
    if not pairs and not {"groups", "scored groups"} & set(kinds):
        raise EmbforgeError(f"--rerank_loss {loss} trains on scored pairs; the data holds query groups")
    return loss


def check_groups(records: Sequence[RetrievalRecord], group_size: int, loss: str, source: object) -> None:
    """Records that cannot form a training group, named by file:line: no negative at all (a group of one
    positive has nothing to rank against), or, for MarginMSE, teacher scores missing or not one per text."""
    if loss == "ce" and group_size < 2:
        raise EmbforgeError("--rerank_loss ce ranks the positive among negatives: --train_group_size must be "
                            f"at least 2, got {group_size}")
    short = 0
    for r in records:
        where = r.source or str(source)
        if group_size > 1 and not r.neg:
            raise EmbforgeError(f"{where}: field 'neg' is empty but --task rerank with train_group_size="
                                f"{group_size} needs negatives in every record (mine them, or drop the record)")
        short += len(r.neg) < group_size - 1
        if loss == "margin_mse" and (r.pos_scores is None or r.neg_scores is None or len(r.pos_scores) != len(r.pos)
                                     or len(r.neg_scores) != len(r.neg)):
            raise EmbforgeError(f"{where}: --rerank_loss margin_mse needs teacher scores, 'pos_scores' and "
                                "'neg_scores' with one number per text of 'pos' and 'neg' (embforge score writes them)")
    if short:
        logger.warning("%s: %d record(s) have fewer than train_group_size - 1 = %d negatives; their negatives "
                       "repeat", source, short, group_size - 1)


def sample_indices(record: RetrievalRecord, group_size: int, rng: random.Random) -> tuple[int, list[int]]:
    """(positive index, ``group_size - 1`` negative indices): without replacement while there are enough,
    then every negative once and the rest drawn again. Indices, so teacher scores follow their texts."""
    positive = rng.randrange(len(record.pos))
    need, have = group_size - 1, len(record.neg)
    if need <= have:
        return positive, rng.sample(range(have), need)
    return positive, rng.sample(range(have), have) + [rng.randrange(have) for _ in range(need - have)]


class RerankGroups(Dataset):
    """Item i = (query, [positive, negatives...], their teacher scores or None) for record i in this epoch,
    drawn with the key (seed, epoch, index) as the embedder's groups are, so resuming redraws the same."""

    def __init__(self, records: Sequence[RetrievalRecord], group_size: int, seed: int, with_scores: bool):
        self.records, self.group_size, self.seed, self.with_scores = records, group_size, seed, with_scores
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[str, list[str], list[float] | None]:
        r = self.records[index]
        pos, negs = sample_indices(r, self.group_size, random.Random(f"{self.seed}/{self.epoch}/{index}"))
        texts = [r.pos[pos], *(r.neg[i] for i in negs)]
        if not self.with_scores or r.pos_scores is None or r.neg_scores is None:
            return r.query, texts, None
        return r.query, texts, [float(r.pos_scores[pos]), *(float(r.neg_scores[i]) for i in negs)]


class RerankCollator:
    """Groups or scored pairs -> pair features (B * G rows, query-major), with teacher scores (B, G) or
    pair targets (N,)."""

    def __init__(self, encoder: CrossEncoder):
        self.encoder = encoder

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        if items and isinstance(items[0][1], str):  # scored pairs: (text1, text2, score in [0, 1])
            return {"features": self.encoder.tokenize([a for a, _, _ in items], [b for _, b, _ in items]),
                    "targets": torch.tensor([s for _, _, s in items], dtype=torch.float32)}
        queries = [q for q, group, _ in items for _ in group]
        batch: dict[str, Any] = {"features": self.encoder.tokenize(queries, [p for _, group, _ in items for p in group])}
        if items and items[0][2] is not None:
            batch["teacher"] = torch.tensor([scores for _, _, scores in items], dtype=torch.float32)
        return batch


def rerank_loss(name: str, logits: torch.Tensor, batch: dict[str, Any], group_size: int) -> torch.Tensor:
    """The named loss on a batch's (N,) logits."""
    if "targets" in batch:
        return bce(logits, batch["targets"])
    groups = logits.view(-1, group_size)
    if name == "ce":
        return group_softmax_ce(groups)
    if name == "bce":
        labels = torch.zeros_like(groups)
        labels[:, 0] = 1.0
        return bce(groups, labels)
    teacher = batch["teacher"].to(groups.device)
    return margin_mse(groups[:, 0], groups[:, 1:], teacher[:, 0], teacher[:, 1:])


class _EpochCallback(TrainerCallback):
    def __init__(self, dataset: RerankGroups | PairDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.dataset.set_epoch(int(state.epoch + 1e-6) if state.epoch else 0)


class RerankTrainer(Trainer):
    """The Trainer with the reranker's loss; every checkpoint also carries the run's fingerprint."""

    def __init__(self, *, encoder: CrossEncoder, loss: str, group_size: int, run_settings: dict[str, Any] | None,
                 dataset: RerankGroups | PairDataset, **kwargs: Any):
        super().__init__(model=encoder.model, train_dataset=dataset, data_collator=RerankCollator(encoder),
                         processing_class=encoder.tokenizer, **kwargs)
        self.model_accepts_loss_kwargs = False  # the loss is ours and a mean: the Trainer scales it for accumulation
        self.loss_name, self.group_size, self.run_settings = loss, group_size, run_settings
        self.add_callback(_EpochCallback(dataset))

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        logits = model(**inputs["features"]).logits.squeeze(-1)
        loss = rerank_loss(self.loss_name, logits, inputs, self.group_size)
        if not torch.isfinite(loss.detach()):
            raise EmbforgeError(f"the reranker loss became {loss.item()} at step {self.state.global_step + 1}; "
                                "stopping. Try a lower learning rate.")
        return (loss, {"logits": logits}) if return_outputs else loss

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save and self.run_settings is not None:
            folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
            if folder.is_dir():  # a checkpoint without it is never resumed: it may be incomplete
                write_run_file(folder, self.run_settings)


def apply_lora(encoder: CrossEncoder, cfg: TrainConfig) -> None:
    """LoRA adapters on the backbone; the new score head trains whole (peft's SEQ_CLS modules_to_save)."""
    from peft import LoraConfig, get_peft_model

    model_type = getattr(encoder.hf_model.config, "model_type", None)
    config = LoraConfig(task_type="SEQ_CLS", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=lora_targets(model_type, cfg.lora_target_modules))
    encoder.model = get_peft_model(encoder.model, config)


def train_reranker(cfg: TrainConfig, out: Path, given: Encoder | None = None) -> TrainResult:
    """Train and save the reranker in ``out`` (``cfg.output_dir``); the caller cleans up on failure."""
    from transformers import set_seed

    from .run import TrainResult, claim_run, training_source, write_report

    if given is not None:
        raise EmbforgeError("--task rerank trains a cross-encoder from --model_name_or_path, not a given Encoder")
    validate_rerank(cfg)
    source = training_source(cfg)
    records = load_records(source, format=cfg.train_format, split=cfg.train_split, strict=cfg.strict,
                           skip_bad_records=cfg.skip_bad_records, seed=cfg.seed)
    records = records[: cfg.max_examples] if cfg.max_examples else records
    pairs = isinstance(records[0], ScoredPair)
    loss = rerank_loss_for(cfg, pairs)
    group_size = cfg.train_group_size or DEFAULT_GROUP_SIZE
    dataset: RerankGroups | PairDataset
    if pairs:
        dataset = PairDataset(records)  # type: ignore[arg-type]
    else:
        check_groups(records, group_size, loss, source)  # type: ignore[arg-type]
        dataset = RerankGroups(records, group_size, cfg.seed, with_scores=loss == "margin_mse")  # type: ignore[arg-type]
    set_seed(cfg.seed)  # the new score head starts from the seed: same run, same weights, same fingerprint
    encoder = CrossEncoder.from_pretrained(cfg.model_name_or_path, max_length=cfg.passage_max_len, device="cpu")
    settings = run_settings(cfg, records_digest(records), parameters_digest(encoder.model))
    resume = claim_run(out, cfg, settings)
    if cfg.apply_lora:
        apply_lora(encoder, cfg)
    trainer = RerankTrainer(encoder=encoder, loss=loss, group_size=group_size, run_settings=settings,
                            dataset=dataset, args=cfg)
    result = trainer.train(resume_from_checkpoint=resume)
    history = trainer.state.log_history
    report: dict[str, Any] = {
        "task": "rerank", "model": cfg.model_name_or_path or "all-MiniLM-L6-v2 (embedded)",
        "train_data": str(cfg.train_data or "sanity"), "records": len(records), "rerank_loss": loss,
        "train_group_size": None if pairs else group_size, "max_length": encoder.max_length,
        "world_size": world()[1], "global_steps": trainer.state.global_step,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None), "log_history": history,
    }
    if trainer.is_world_process_zero():
        encoder.merge_adapters()
        write_report(out, report)
        staging = out / STAGING_DIR
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        encoder.save_to(staging)
        options = {k: getattr(cfg, k) for k in CARD_OPTIONS if getattr(cfg, k, None) not in (None, False, -1)}
        save_reranker_card(staging, out, report, options | {"rerank_loss": loss, "train_group_size": None if pairs else group_size},
                           encoder.max_length)
        publish_final(out, staging, settings)
        logger.info("saved the final reranker to %s", out)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(out, report)
