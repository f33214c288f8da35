"""``EmbeddingTrainer``: the Hugging Face Trainer, taught to train an Encoder contrastively.

What it changes, and why:
- the data loader: a no-duplicate batch sampler that builds the *global* batch and gives each
  process its slice, so cross-device negatives never include a copy of a positive;
- the loss: InfoNCE (or any objective of ``objective.py``) over embeddings, gathered across
  processes with their gradient; scored-pair data gets pair batches (text1, text2, score);
- what an embedding is: with ESE the shallower layers' pooled outputs travel beside the last one;
- the step, under GradCache: chunked forward/backward with cached embedding gradients;
- the epoch of a stream: the Trainer sees one endless epoch, so ``save_strategy=epoch`` saves where the
  stream marks the end of a pass over the data;
- saving: every checkpoint is a complete Encoder folder (AutoModel / SentenceTransformer load it),
  staged in a hidden folder and renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SaveStrategy

from ..data.sampling import NoDuplicateBatchSampler
from ..errors import EmbforgeError
from ..model.encoder import load_backbone_weights
from ..model.pooling import pool
from .attention import training_attention
from .batches import GroupCollator, GroupDataset, PairCollator, PairDataset, StreamingDataset
from .distributed import world
from .fsdp import default_layer_classes, materialized, restore_cpu_plugin
from .gradcache import Features, gradcache_step, split_features
from .objective import InfoNCEObjective, Objective
from .output import write_run_file

if TYPE_CHECKING:  # pragma: no cover
    from ..data.records import RetrievalRecord, ScoredPair
    from ..data.streaming import Drawn, StreamSource
    from ..model.encoder import Encoder

#: A collated batch: the tokenised sides (query/passage or text1/text2), and the scores of scored pairs.
Batch = dict[str, Any]
#: A streamed batch's key: whether its global batch is the last of a pass over the data (``Drawn.ends_pass``).
ENDS_PASS = "embforge_ends_pass"


class _EpochCallback(TrainerCallback):
    """Tell the sampler and the dataset which epoch is starting (also after a resume mid-epoch)."""

    def __init__(self, trainer: EmbeddingTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        epoch = int(math.floor(state.epoch + 1e-6)) if state.epoch else 0
        self.trainer.set_epoch(epoch)


class _PassEndCallback(TrainerCallback):
    """``save_strategy=epoch`` on a stream: save after the step that trained the last batch of a pass over the
    data (the Trainer's own epoch end comes only when the run stops, where it must not save twice)."""

    def __init__(self, trainer: EmbeddingTrainer):
        self.trainer = trainer
        self.saved_step = -1

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer.pass_ended and args.save_strategy == SaveStrategy.EPOCH:
            control.should_save = True
        self.trainer.pass_ended = False

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.saved_step = state.global_step

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.saved_step == state.global_step:
            control.should_save = False


class _PassMarkedStream(StreamingDataset):
    """The stream's micro-batches with each item paired with its batch's end-of-pass mark."""

    def item(self, drawn: Drawn) -> tuple[Any, bool]:
        return super().item(drawn), drawn.ends_pass


class _PassMarkCollator:
    """Collates the items, adding the batch's end-of-pass mark (the same on every item and every rank)."""

    def __init__(self, collator: PairCollator | GroupCollator):
        self.collator = collator

    def __call__(self, marked: list[tuple[Any, bool]]) -> Batch:
        batch = self.collator([item for item, _ in marked])
        batch[ENDS_PASS] = any(end for _, end in marked)
        return batch


class _ThroughputCallback(TrainerCallback):
    """Show samples/s (queries per second, all processes) on the progress bar and in the logs."""

    def __init__(self, trainer: Trainer, samples_per_step: int):
        self.trainer = trainer
        self.samples_per_step = samples_per_step
        self.start: float | None = None
        self.steps = 0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import time

        if self.start is None:
            self.start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import time

        self.steps += 1
        rate = self.steps * self.samples_per_step / max(time.perf_counter() - (self.start or 0), 1e-9)
        state.embforge_samples_per_second = rate
        for cb in self.trainer.callback_handler.callbacks:
            bar = getattr(cb, "training_bar", None)
            if bar is not None:
                bar.set_postfix(samples_s=f"{rate:.1f}", refresh=False)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if logs is not None and "loss" in logs and hasattr(state, "embforge_samples_per_second"):
            logs["samples_per_second"] = round(state.embforge_samples_per_second, 2)


def embed_with_layers(model: Any, features: dict[str, torch.Tensor], is_query: bool,
                      layers: list[int]) -> torch.Tensor:
    """``[last layer | layer l_1 | layer l_2 ...]``: the encoder's embedding, then the same pooling (and
    dense head, and normalisation) applied to shallower hidden states, from the one forward pass.

    The backbone is asked for its hidden states through hooks, so the Encoder's own forward (and a
    DDP wrapper around it) runs unchanged.
    """
    encoder = getattr(model, "module", model)
    tower = encoder.query_backbone if is_query and encoder.query_backbone is not None else encoder.backbone
    captured: dict[str, Any] = {}

    def ask(module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        kwargs["output_hidden_states"] = True
        return args, kwargs

    def keep(module: Any, args: Any, kwargs: Any, output: Any) -> None:
        captured["hidden"] = output.hidden_states

    hooks = [tower.register_forward_pre_hook(ask, with_kwargs=True),
             tower.register_forward_hook(keep, with_kwargs=True)]
    try:
        final = model(features, is_query=is_query)
    finally:
        for hook in hooks:
            hook.remove()
    mask = features["attention_mask"].to(final.device)
    out = [final]
    for layer in layers:
        hidden = captured["hidden"][layer]
        if encoder.head is not None:
            hidden = encoder.head.tokens(hidden)
        emb = pool(hidden, mask, encoder.config.pooling)
        if encoder.head is not None:
            emb = encoder.head.pooled(emb)
        if encoder.config.normalize:
            emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
        out.append(emb.to(final.dtype))
    return torch.cat(out, dim=-1)


class EmbeddingTrainer(Trainer):
    def __init__(self, *, encoder: Encoder, records: Sequence[RetrievalRecord] | Sequence[ScoredPair],
                 objective: InfoNCEObjective | Objective, group_size: int,
                 query_instruction: str | None, passage_instruction: str | None, strict: bool = False,
                 gradcache_chunk: int | None = None, gradcache_tokens: int | None = None, pairs: bool = False,
                 teacher: Any = None,
                 ese_layers: list[int] | None = None, run_settings: dict[str, Any] | None = None,
                 stream: StreamSource | None = None, stream_buffer: int = 0,
                 score_range: tuple[float, float] | None = None, **kwargs: Any):
        """``stream``: read the records lazily instead (``records`` then only feeds the data-kind checks),
        holding at most ``stream_buffer`` of them; ``score_range`` is the scored pairs' (min, max) then.
        GradCache runs when ``gradcache_chunk`` (texts per chunk) or ``gradcache_tokens`` (padded tokens per
        chunk) is given."""
        self.skip_trained_batches = not kwargs["args"].ignore_data_skip
        if stream is not None:  # the stream skips trained batches itself, before any tokenisation
            kwargs["args"] = copy.copy(kwargs["args"])
            kwargs["args"].ignore_data_skip = True
        if kwargs["args"].torch_compile:
            import torch._inductor.config as inductor

            # Dropout through aten's generator, as in eager mode: compiling must not change the masks drawn.
            inductor.fallback_random = True
        super().__init__(model=encoder, **kwargs)
        self.encoder = encoder
        if self.is_fsdp_enabled:
            default_layer_classes(self.accelerator.state.fsdp_plugin, encoder)
        self.records = records
        self.objective = objective
        self.gradcache_chunk = gradcache_chunk
        self.gradcache_tokens = gradcache_tokens
        self.pairs = pairs
        self.teacher = teacher
        self.ese_layers = list(ese_layers or [])
        self.run_settings = run_settings  # written into every checkpoint, checked when resuming
        self.stream, self.stream_buffer = stream, stream_buffer
        if pairs:
            self.dataset = PairDataset(cast("Sequence[ScoredPair]", records), passage_instruction, score_range)
            self.collator: PairCollator | GroupCollator = PairCollator(encoder)
        else:
            scored = isinstance(objective, Objective) and objective.score_loss != "none"
            self.dataset = GroupDataset(cast("Sequence[RetrievalRecord]", records), group_size, self.args.seed, query_instruction, passage_instruction,
                                        strict, with_scores=scored)
            self.collator = GroupCollator(encoder, group_size)
        self.sampler: NoDuplicateBatchSampler | None = None
        self.streaming: StreamingDataset | None = None
        self.pass_ended = False  # a streamed batch of the current step ended a pass over the data
        self._staging: str | None = None
        self.add_callback(_EpochCallback(self))
        if stream is not None:
            self.add_callback(_PassEndCallback(self))
        self.add_callback(_ThroughputCallback(self, self.args.per_device_train_batch_size * world()[1]
                                              * self.args.gradient_accumulation_steps))

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        # --fsdp on CPU processes: accelerate drops the plugin and the run would be DDP (see fsdp.py).
        self.is_fsdp_enabled = restore_cpu_plugin(self.accelerator, self.args.fsdp_plugin_args)

    # ------------------------------------------------------------------ data
    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        if self.streaming is not None:  # a stream is one Trainer epoch: this runs once, with the resumed step
            trained = self.state.global_step * self.args.gradient_accumulation_steps
            self.streaming.start = trained if self.skip_trained_batches else 0

    def get_train_dataloader(self) -> DataLoader:
        rank, size = world()
        if self.stream is not None:
            return self._stream_dataloader(rank, size)
        self.sampler = NoDuplicateBatchSampler(
            self.records, self.args.per_device_train_batch_size, seed=self.args.seed,
            # Every process must hold the same number of queries for the gathered loss to be valid.
            drop_last=self.args.dataloader_drop_last or self.objective.cross_device,
            num_replicas=size, rank=rank)
        if len(self.sampler) == 0:
            raise EmbforgeError(
                f"no full batch of {self.args.per_device_train_batch_size * size} records without duplicate texts "
                f"can be formed from {len(self.records)} records; use a smaller batch or more data")
        loader = DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=self.collator,
                            num_workers=self.args.dataloader_num_workers)
        loader = self.accelerator.prepare(loader)
        # The sampler is already rank-aware: make accelerate's sharding wrapper a passthrough.
        wrapper = getattr(loader, "batch_sampler", None)
        if wrapper is not None and getattr(wrapper, "batch_sampler", None) is self.sampler:
            wrapper.num_processes, wrapper.process_index = 1, 0
        return loader

    def _stream_dataloader(self, rank: int, size: int) -> DataLoader:
        from ..data.streaming import DuplicateFreeStream

        assert self.stream is not None
        batch = self.args.per_device_train_batch_size
        batches = DuplicateFreeStream(self.stream.open, batch * size, self.stream_buffer, self.args.seed,
                                      label=self.stream.source)
        self.streaming = _PassMarkedStream(batches, self.dataset, batch, rank)
        # Not through accelerate.prepare: for an IterableDataset it would have process 0 read the data and
        # send each process a share; here every process reads the stream and takes its own slice.
        return DataLoader(self.streaming, batch_size=None, collate_fn=_PassMarkCollator(self.collator),
                          num_workers=self.args.dataloader_num_workers)

    # ------------------------------------------------------------------ loss and step
    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            last = self._last_checkpoint()
            raise EmbforgeError(
                f"the loss became {loss.item()} at step {self.state.global_step + 1}; stopping. "
                + (f"The last good checkpoint is {last}." if last else "No checkpoint was saved yet.")
                + " Try a lower learning rate or a higher temperature.")

    def _last_checkpoint(self) -> str | None:
        from transformers.trainer_utils import get_last_checkpoint

        out = self.args.output_dir
        return get_last_checkpoint(out) if out and os.path.isdir(out) else None

    def _sides(self, inputs: Batch) -> tuple[Features, Features, bool]:
        """(first side, second side, whether the first side is queries): groups or scored pairs."""
        if "text1" in inputs:
            return inputs["text1"], inputs["text2"], False
        return inputs["query"], inputs["passage"], True

    def _embed(self, model: Any, features: Features, is_query: bool) -> torch.Tensor:
        if self.ese_layers:
            return embed_with_layers(model, features, is_query, self.ese_layers)
        return model(features, is_query=is_query)

    def _teacher_embed(self, features: Features, is_query: bool) -> torch.Tensor:
        with torch.no_grad():  # a decorator would hide the signature from the type checker
            teacher = self.teacher
            if teacher.device != self.encoder.device:
                teacher.to(self.encoder.device)
            chunks = (split_features(features, self.gradcache_chunk, self.gradcache_tokens)
                      if self.gradcache_chunk or self.gradcache_tokens else [features])
            return torch.cat([teacher(c, is_query=is_query) for c in chunks])

    def _extras(self, inputs: Batch, first: Features, second: Features, first_is_query: bool) -> dict[str, Any]:
        """What the objective needs beyond the embeddings (nothing for plain InfoNCE)."""
        extras: dict[str, Any] = {}
        if "scores" in inputs:
            extras["scores"] = inputs["scores"].to(self.encoder.device)
        if "teacher_scores" in inputs:
            extras["teacher_scores"] = inputs["teacher_scores"].to(self.encoder.device)
        if self.teacher is not None:
            extras["teacher"] = (self._teacher_embed(first, first_is_query), self._teacher_embed(second, False))
        return extras

    def compute_loss(self, model: Any, inputs: Batch, return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        first, second, first_is_query = self._sides(inputs)
        q = self._embed(model, first, first_is_query)
        p = self._embed(model, second, False)
        loss = self.objective(q, p, **self._extras(inputs, first, second, first_is_query))
        self._check_finite(loss.detach())
        return (loss, {"q": q, "p": p}) if return_outputs else loss

    def training_step(self, model: Any, inputs: Batch, num_items_in_batch: Any = None) -> torch.Tensor:
        self.pass_ended |= bool(inputs.pop(ENDS_PASS, False))
        if not (self.gradcache_chunk or self.gradcache_tokens):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        first, second, first_is_query = self._sides(inputs)
        extras = self._extras(inputs, first, second, first_is_query)
        no_sync = (lambda: model.no_sync()) if hasattr(model, "no_sync") else None
        loss = gradcache_step(lambda f, is_query: self._embed(model, f, is_query and first_is_query), first, second,
                              lambda q, p: self.objective(q, p, **extras), self.gradcache_chunk, no_sync=no_sync,
                              loss_scale=1.0 / self.current_gradient_accumulation_steps,
                              chunk_tokens=self.gradcache_tokens)
        self._check_finite(loss)
        return loss / self.current_gradient_accumulation_steps

    def train(self, *args: Any, **kwargs: Any) -> Any:
        # The same dropout masks as sdpa with fewer passes over the scores (attention.py), but equal only to
        # ~1e-7, so it is opt-in: a default run keeps the arithmetic its published figures were measured with.
        if not getattr(self.args, "training_attention", False):
            return super().train(*args, **kwargs)
        with training_attention(self.encoder.towers()):
            return super().train(*args, **kwargs)

    # ------------------------------------------------------------------ saving and loading
    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        if not self.args.should_save:  # under FSDP every rank gets here, with the gathered weights on rank 0
            return
        folder = Path(output_dir or self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with materialized(self.encoder, state_dict if self.is_fsdp_enabled else None):
            self.encoder.save_to(folder)
        torch.save(self.args, folder / "training_args.bin")

    def _get_output_dir(self, trial: Any) -> str:
        return self._staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = super()._get_output_dir(trial)
        self._staging = os.path.join(run_dir, ".staging")
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            if self.run_settings is not None:
                write_run_file(Path(run_dir, ".staging", name), self.run_settings)
            final = os.path.join(run_dir, name)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(os.path.join(run_dir, ".staging", name), final)
            shutil.rmtree(os.path.join(run_dir, ".staging"), ignore_errors=True)
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        if self.is_fsdp_enabled:  # the whole Encoder's weights, from accelerate's pytorch_model_fsdp.bin
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        folder = Path(resume_from_checkpoint)
        load_backbone_weights(self.encoder.backbone, folder)
        self.encoder.load_extra_weights(folder)  # dense head, query tower
