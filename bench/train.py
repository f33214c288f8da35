"""Training throughput and GradCache cost: embforge vs sentence-transformers on the same work.

Why: issue #4 asks whether ``embforge train`` is at least as fast as sentence-transformers'
trainer, and whether GradCache really buys a large batch for the memory of a small one at a
bounded time cost. This script measures all three on CPU, in one run:

    python bench/train.py [--batch_size 32] [--max_length 256] [--steps 10] [--warmup 2] [--rounds 2]
                          [--mem_batch 256] [--mem_chunk 16] [--mem_small 16] [--mem_max_length 128]
                          [--mem_steps 1] [--time_repeats 1]
                          [--skip_throughput] [--skip_gradcache] [--profile]

1. Throughput (samples/s = queries per second). Both libraries train the embedded
   all-MiniLM-L6-v2 on the same SciFact train pairs (each of the 809 queries with its first
   relevant doc; no hard negatives, so in-batch negatives only: embforge ``train_group_size=1``,
   ST ``MultipleNegativesRankingLoss`` whose scale 20 is embforge's temperature 0.05), with the
   same batch size, max length on both sides, AdamW, learning rate, constant schedule, no warmup,
   grad-norm clipping 1.0, and a no-duplicates batch sampler on both. Each library runs on the
   Hugging Face Trainer; a TrainerCallback timestamps every optimizer step, so model loading and
   saving are never timed. A step's wall time runs from the previous step's end to its own end, so
   it includes fetching and tokenising the batch (the Trainer collates before ``on_step_begin``).
   ``--rounds`` rounds alternate the order of the libraries (ST first, then embforge first, ...),
   each round doing ``--warmup`` untimed and ``--steps`` timed steps; the least disturbed round of
   each library gives its figure (the machine is shared with other work), the median step is
   printed too. The breakdown splits a step into data (collation, timed by wrapping the collator),
   forward+loss (wrapping ``compute_loss``), backward (+ grad clipping) and optimizer, and prints
   the mean padded tokens per step to show both did the same work.

2. GradCache peak memory: a fresh subprocess per configuration (plain ``--mem_small``, plain
   ``--mem_batch``, GradCache ``--mem_batch`` with ``--mem_chunk``), so no configuration inherits
   another's heap. torch allocates CPU tensors with malloc, invisible to tracemalloc, so the method
   is the process's resident set: the worker loads the model, runs one tiny warm-up step (which
   creates AdamW's state and every lazy buffer, all of which are the same in every configuration),
   then records its current RSS (VmRSS), resets the kernel's peak-RSS mark (writing 5 to
   ``/proc/self/clear_refs``, Linux >= 4.0), runs the measured steps and reads the peak (VmHWM).
   "step peak" is VmHWM - baseline: everything the training step itself holds at its worst moment
   (tokenised batch, activations, gradients, optimizer temporaries). ``ru_maxrss`` alone cannot be
   reset and would report model loading's peak instead; it is used (as a delta) only where
   clear_refs is not writable, and the output says so. The steps in the workers are the ones
   EmbeddingTrainer runs: embforge's GroupCollator, InfoNCEObjective, ``gradcache_step`` for
   GradCache or forward/objective/backward for plain, then clipping and AdamW, without the Trainer
   loop around them (it adds nothing to the peak but a second process start).

   RSS is what the allocator holds, not only live tensors: with glibc's default dynamic mmap
   threshold, freed blocks of a few to 32 MB stay in the heap, which inflates a step that
   allocates and frees chunk-sized activations 2 x (batch / chunk) times (GradCache). Run with
   ``MALLOC_MMAP_THRESHOLD_=131072`` in the environment (inherited by the workers) to see live
   memory instead; that setting makes every step much slower, so never time with it.

3. GradCache time: the same workers time their measured steps, so plain and GradCache are timed
   on the same batch (the first ``--mem_batch`` pairs); time per sample and the ratio are
   printed. ``--time_repeats N`` runs the plain/GradCache pair N times, alternating, and keeps the
   best of each.

``--profile`` adds a torch.profiler operator table and a cProfile summary of embforge steps.

With the defaults a run takes about 25 minutes on 2 CPU cores shared with other work
(``--steps 5 --warmup 1``: about 16); lower ``--steps``/``--rounds`` or ``--mem_batch`` to go faster.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import logging
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from _common import SCIFACT, sgemm_peak, transformer_flops
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

LR = 2e-5
TEMPERATURE = 0.05  # = 1 / MultipleNegativesRankingLoss's default scale of 20
SEED = 42


def scifact_pairs() -> list[tuple[str, str]]:
    """(query, first relevant doc) for every SciFact train query, in qrels order."""
    from embforge.data.beir import iter_training_records

    return [(r.query, r.pos[0]) for r in iter_training_records(SCIFACT, "train")]


# ---------------------------------------------------------------------------------------------- timing
class StepClock(TrainerCallback):
    """Per optimizer step: wall time since the previous step's end, and its phases."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.collate = 0.0        # seconds spent in the collator since the last step end
        self.forward = 0.0        # seconds spent in compute_loss during this step
        self.tokens = 0           # padded token positions collated since the last step end
        self.flops = 0.0          # forward FLOPs of those padded tokens (bench/_common.transformer_flops)
        self._last = self._begin = self._pre = self._opt = 0.0

    def reset(self) -> None:
        self.steps.clear()

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()
        self.collate = self.forward = self.flops = 0.0
        self.tokens = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._begin = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._pre = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self._opt = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.steps.append({
            "wall": now - self._last,
            "data": self._begin - self._last,
            "collate": self.collate,
            "forward": self.forward,
            "backward": self._pre - self._begin - self.forward,
            "optimizer": self._opt - self._pre,
            "other": now - self._opt,
            "tokens": self.tokens,
            "flops": self.flops,
        })
        self._last = now
        self.collate = self.forward = self.flops = 0.0
        self.tokens = 0


class TimedCollator:
    """Wraps a collate function, adding its time and padded token count to a StepClock."""

    def __init__(self, inner: Any, clock: StepClock):
        self.inner = inner
        self.clock = clock

    def __getattr__(self, name: str) -> Any:  # valid_label_columns etc. of ST's collator
        return getattr(self.inner, name)

    def __call__(self, items: Any) -> Any:
        start = time.perf_counter()
        out = self.inner(items)
        self.clock.collate += time.perf_counter() - start
        self.clock.tokens += sum(ids.numel() for ids in _input_ids(out))
        self.clock.flops += sum(transformer_flops(ids.numel(), *MODEL_SHAPE, seq_len=ids.shape[1])
                                for ids in _input_ids(out))
        return out


#: all-MiniLM-L6-v2: hidden, layers, intermediate (for transformer_flops).
MODEL_SHAPE = (384, 6, 1536)


def _input_ids(batch: Any) -> list[torch.Tensor]:
    """Every padded (rows, length) input_ids tensor of a collated batch (one per side)."""
    if isinstance(batch, dict):
        return [t for k, v in batch.items()
                for t in ([v] if k.endswith("input_ids") and torch.is_tensor(v) else _input_ids(v))]
    return []


def time_compute_loss(trainer: Any, clock: StepClock) -> None:
    inner = trainer.compute_loss

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            clock.forward += time.perf_counter() - start

    trainer.compute_loss = timed


OPTIM = "adamw_torch_fused"  # both libraries' default (TrainingArguments'); --optim changes it for both


def common_args(out: str, batch_size: int, max_steps: int) -> dict[str, Any]:
    return dict(output_dir=out, per_device_train_batch_size=batch_size, max_steps=max_steps, learning_rate=LR,
                warmup_steps=0, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
                optim=OPTIM, save_strategy="no", report_to="none", logging_steps=10**6, disable_tqdm=True,
                seed=SEED, dataloader_num_workers=0, use_cpu=True)


# ---------------------------------------------------------------------------------------------- trainers
def embforge_trainer(pairs, batch_size: int, max_len: int, max_steps: int, out: str, clock: StepClock,
                     gradcache_chunk: int | None = None, attention_dropout: float | None = None,
                     torch_compile: bool = False):
    from embforge.commands.train import Config
    from embforge.config import from_dict
    from embforge.data.records import RetrievalRecord
    from embforge.training.attention import set_attention_dropout
    from embforge.training.objective import InfoNCEObjective
    from embforge.training.run import build_encoder, validate
    from embforge.training.trainer import EmbeddingTrainer

    settings = common_args(out, batch_size, max_steps)
    settings.update(train_group_size=1, temperature=TEMPERATURE, query_max_len=max_len, passage_max_len=max_len,
                    gradcache=gradcache_chunk is not None, chunk_size=gradcache_chunk, torch_compile=torch_compile,
                    training_attention=True)  # opt-in in embforge; the figures in the README are with it
    cfg = from_dict(Config, settings)
    validate(cfg)
    records = [RetrievalRecord(query=q, pos=[p]) for q, p in pairs]
    encoder = build_encoder(cfg)  # what `embforge train` loads: the embedded model when model is None
    if attention_dropout is not None:  # opt-in, changes the training: reported as its own row
        set_attention_dropout(encoder.towers(), attention_dropout)
    objective = InfoNCEObjective(temperature=cfg.temperature, group_size=1)
    trainer = EmbeddingTrainer(encoder=encoder, records=records, objective=objective, args=cfg, group_size=1,
                               query_instruction=encoder.config.query_instruction,
                               passage_instruction=encoder.config.passage_instruction,
                               gradcache_chunk=gradcache_chunk, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)
    trainer.collator = TimedCollator(trainer.collator, clock)
    time_compute_loss(trainer, clock)
    return trainer


def st_trainer(pairs, batch_size: int, max_len: int, max_steps: int, out: str, clock: StepClock):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from embforge.paths import default_model_path

    model = SentenceTransformer(str(default_model_path()), device="cpu")
    model.max_seq_length = max_len
    data = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    args = Args(**common_args(out, batch_size, max_steps), batch_sampler=BatchSamplers.NO_DUPLICATES)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                         loss=MultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE),
                                         callbacks=[clock])
    trainer.remove_callback(PrinterCallback)
    trainer.data_collator = TimedCollator(trainer.data_collator, clock)
    time_compute_loss(trainer, clock)
    return trainer


# ---------------------------------------------------------------------------------------------- 1. throughput
def throughput(args: argparse.Namespace, pairs) -> None:
    tmp = tempfile.mkdtemp(prefix="embforge-bench-train-")
    max_steps = args.warmup + args.steps
    opt_in = f"embforge attn-dropout {args.attention_dropout:g}" if args.attention_dropout is not None else None
    names = ["sentence-transformers", "embforge"] + ([opt_in] if opt_in else [])
    clocks = {name: StepClock() for name in names}
    trainers = {
        "sentence-transformers": st_trainer(pairs, args.batch_size, args.max_length, max_steps, f"{tmp}/st",
                                            clocks["sentence-transformers"]),
        "embforge": embforge_trainer(pairs, args.batch_size, args.max_length, max_steps, f"{tmp}/ef",
                                     clocks["embforge"], torch_compile=args.torch_compile),
    }
    if opt_in:
        trainers[opt_in] = embforge_trainer(pairs, args.batch_size, args.max_length, max_steps, f"{tmp}/ef2",
                                            clocks[opt_in], attention_dropout=args.attention_dropout,
                                            torch_compile=args.torch_compile)
    peaks = [sgemm_peak()]
    rounds: dict[str, list[list[dict[str, float]]]] = {name: [] for name in trainers}
    for r in range(args.rounds):
        order = list(trainers) if r % 2 == 0 else list(reversed(trainers))
        for name in order:
            clocks[name].reset()
            trainers[name].train()
            measured = clocks[name].steps[args.warmup:]
            rounds[name].append(measured)
            total = sum(s["wall"] for s in measured)
            print(f"  round {r + 1} {name:<22} {len(measured) * args.batch_size / total:6.2f} samples/s", flush=True)
        peaks.append(sgemm_peak())  # between rounds: the ceiling moves with the machine's load

    print(f"\n== Training throughput | all-MiniLM-L6-v2 | {len(pairs)} SciFact train pairs | batch {args.batch_size} | "
          f"max_length {args.max_length} (both sides) | {args.steps} steps after {args.warmup} warm-up, "
          f"best of {args.rounds} round(s) | torch threads {torch.get_num_threads()}")
    rate, median = {}, {}
    for name, per_round in rounds.items():
        best = min(per_round, key=lambda steps: sum(s["wall"] for s in steps))
        total = sum(s["wall"] for s in best)
        rate[name] = len(best) * args.batch_size / total
        median[name] = args.batch_size / statistics.median(s["wall"] for steps in per_round for s in steps)
        print(f"  {name:<22} {rate[name]:7.2f} samples/s  (best round {total:.1f} s; median step "
              f"{median[name]:.2f} samples/s)")
    print(f"  ratio embforge / sentence-transformers: {rate['embforge'] / rate['sentence-transformers']:.3f} "
          f"(median steps: {median['embforge'] / median['sentence-transformers']:.3f}; target >= 1.3)")
    if opt_in:
        print(f"  ratio {opt_in} (opt-in, changes the training) / sentence-transformers: "
              f"{rate[opt_in] / rate['sentence-transformers']:.3f}")
    peak = max(peaks)
    print(f"  sgemm peak in this run: {peak:.1f} GFLOP/s (best of {len(peaks)} measurements, "
          f"min {min(peaks):.1f}); a step's FLOPs = 3 x forward (forward + backward) on the padded tokens:")
    for name, per_round in rounds.items():
        steps = [s for r in per_round for s in r]
        flops = 3 * statistics.mean(s["flops"] for s in steps)
        fwd = statistics.mean(s["flops"] for s in steps)
        best_wall = min(s["wall"] for s in steps)
        print(f"    {name:<22} {flops / 1e9:6.0f} GFLOP/step  {flops / best_wall / 1e9:6.1f} GFLOP/s at the fastest "
              f"step ({100 * flops / best_wall / 1e9 / peak:4.1f} % of peak); forward alone "
              f"{fwd / statistics.mean(s['forward'] for s in steps) / 1e9:6.1f} GFLOP/s")
    print("  where the time goes, mean seconds per step over all measured steps "
          "(data includes collate; backward includes grad clipping):")
    keys = ("wall", "data", "collate", "forward", "backward", "optimizer", "other")
    print(f"    {'':<22}" + "".join(f"{k:>10}" for k in keys) + f"{'tokens':>10}")
    for name, per_round in rounds.items():
        steps = [s for r in per_round for s in r]
        print(f"    {name:<22}" + "".join(f"{statistics.mean(s[k] for s in steps):10.3f}" for k in keys)
              + f"{statistics.mean(s['tokens'] for s in steps):10.0f}")
    print("    (tokens = padded token positions per step, queries + passages: equal work when they agree)")
    if args.profile:
        profile_embforge(trainers["embforge"], clocks["embforge"], args)


def profile_embforge(trainer: Any, clock: StepClock, args: argparse.Namespace) -> None:
    from torch.profiler import ProfilerActivity, profile

    trainer.args.max_steps = 3
    print("\n== --profile: embforge, 3 steps (1 warm-up included) under torch.profiler, by self CPU time")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print("== --profile: the same under cProfile, by cumulative time")
    profiler = cProfile.Profile()
    profiler.enable()
    trainer.train()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
    print(text.getvalue())


# ---------------------------------------------------------------------------------------------- 2+3. GradCache
def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        return int(re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.M).group(1))


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration in a fresh process: warm-up, baseline RSS, reset the peak, measured steps."""
    import resource

    from embforge.model import Encoder
    from embforge.training.attention import training_attention
    from embforge.training.batches import GroupCollator
    from embforge.training.gradcache import gradcache_step
    from embforge.training.objective import InfoNCEObjective

    torch.manual_seed(SEED)
    length = spec["max_length"]
    encoder = Encoder.from_pretrained(None, device="cpu", query_max_len=length, passage_max_len=length)
    encoder.train()
    objective = InfoNCEObjective(temperature=TEMPERATURE, group_size=1)
    collator = GroupCollator(encoder, 1)
    items = [(q, [p]) for q, p in scifact_pairs()[: spec["batch"]]]
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0, fused=True)  # TrainingArguments' default
    chunk, chunk_tokens = spec.get("chunk"), spec.get("chunk_tokens")

    def step(batch) -> None:
        features = collator(batch)  # tokenising is part of a training step's work and memory
        if chunk or chunk_tokens:
            gradcache_step(lambda f, is_query: encoder(f, is_query=is_query), features["query"],
                           features["passage"], objective, chunk, chunk_tokens=chunk_tokens)
        else:
            loss = objective(encoder(features["query"], is_query=True), encoder(features["passage"], is_query=False))
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    attention = training_attention(encoder.towers())  # as EmbeddingTrainer.train runs every step
    attention.__enter__()
    step(items[:2])  # AdamW state and lazy buffers: the same in every configuration, not the step's cost
    gc.collect()
    baseline = _status_kb("VmRSS")
    resettable = _reset_peak()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        step(items)
        times.append(time.perf_counter() - start)
    if resettable:
        growth = _status_kb("VmHWM") - baseline
    else:  # lower bound: the high-water mark from loading may hide part of the step's peak
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - max(maxrss_before, baseline)
    return {"growth_mb": growth / 1024, "baseline_mb": baseline / 1024, "times": times,
            "method": "VmHWM after clear_refs" if resettable else "ru_maxrss delta (lower bound)"}


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def gradcache_costs(args: argparse.Namespace) -> None:
    big, small, chunk, length = args.mem_batch, args.mem_small, args.mem_chunk, args.mem_max_length
    base = {"max_length": length, "steps": args.mem_steps}
    configs = {
        f"plain batch {small}": {**base, "batch": small},
        f"plain batch {big}": {**base, "batch": big},
        f"GradCache batch {big}, chunk {chunk}": {**base, "batch": big, "chunk": chunk},
    }
    if args.mem_chunk_tokens:
        configs[f"GradCache batch {big}, {args.mem_chunk_tokens} tok"] = {**base, "batch": big,
                                                                          "chunk_tokens": args.mem_chunk_tokens}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for name, spec in configs.items():
        results[name].append(run_worker(spec))
        print(f"  {name}: done", flush=True)
    plain_big, cached = f"plain batch {big}", f"GradCache batch {big}, chunk {chunk}"
    for i in range(1, args.time_repeats):  # extra alternating pairs for the time comparison only
        for name in ([plain_big, cached] if i % 2 else [cached, plain_big]):
            results[name].append(run_worker(configs[name]))
            print(f"  {name}: repeat {i + 1} done", flush=True)

    print(f"\n== GradCache peak memory | max_length {length} | {args.mem_steps} measured step(s) after a warm-up, "
          "fresh process each")
    print(f"  method: {results[plain_big][0]['method']} around the measured steps, minus the RSS at its start")
    peak = {name: min(r["growth_mb"] for r in rs) for name, rs in results.items()}
    for name, rs in results.items():
        print(f"  {name:<32} step peak {peak[name]:8.0f} MB   (process RSS before the step {rs[0]['baseline_mb']:.0f} MB)")
    small_name = f"plain batch {small}"
    print(f"  ratio GradCache {big} / plain {small}: {peak[cached] / peak[small_name]:.2f} (target <= 1.3); "
          f"plain {big} / plain {small}: {peak[plain_big] / peak[small_name]:.2f}")

    timed = [name for name in results if name != f"plain batch {small}"]
    best = {name: min(t for r in results[name] for t in r["times"]) for name in timed}
    print(f"\n== GradCache time | the same {big} pairs, max_length {length} | best of "
          f"{args.time_repeats * args.mem_steps} step(s) each")
    for name, t in best.items():
        print(f"  {name:<32} {t:7.2f} s/step  {1000 * t / big:7.1f} ms/sample")
    for name in timed[1:]:
        print(f"  ratio {name} / plain time per sample: {best[name] / best[plain_big]:.3f} (target <= 1.25)")


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    global OPTIM
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=256, help="max tokens of queries and passages")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and library")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating which library goes first")
    parser.add_argument("--mem_batch", type=int, default=256, help="large batch: plain and GradCache")
    parser.add_argument("--mem_chunk", type=int, default=16, help="GradCache chunk size")
    parser.add_argument("--mem_small", type=int, default=16, help="small plain batch to compare GradCache with")
    parser.add_argument("--mem_max_length", type=int, default=128)
    parser.add_argument("--mem_steps", type=int, default=1, help="measured steps per memory/time worker")
    parser.add_argument("--time_repeats", type=int, default=1, help="plain/GradCache worker pairs for the timing")
    parser.add_argument("--optim", default=OPTIM, help="optimizer of both libraries (TrainingArguments --optim)")
    parser.add_argument("--torch_compile", action="store_true", help="embforge rows with TrainingArguments.torch_compile")
    parser.add_argument("--attention_dropout", type=float, default=None,
                        help="add an opt-in embforge row with this attention dropout (changes the training)")
    parser.add_argument("--mem_chunk_tokens", type=int, default=None,
                        help="also time GradCache with this token budget per chunk")
    parser.add_argument("--skip_throughput", action="store_true")
    parser.add_argument("--skip_gradcache", action="store_true")
    parser.add_argument("--profile", action="store_true", help="profile 3 embforge steps (torch.profiler, then cProfile) after the throughput")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args._worker:
        print(json.dumps(worker(json.loads(args._worker))))
        return

    OPTIM = args.optim
    print(f"machine load average at the start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores", flush=True)
    start = time.perf_counter()
    if not args.skip_throughput:
        throughput(args, scifact_pairs())
    if not args.skip_gradcache:
        print()
        gradcache_costs(args)
    print(f"\n(total {time.perf_counter() - start:.0f} s; machine load average at the end: "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
