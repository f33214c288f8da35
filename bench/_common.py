"""Shared bits of the benchmark scripts: data loading and a fair timer."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO / "examples" / "data" / "scifact"


def scifact_docs(n: int) -> list[str]:
    docs = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line, _ in zip(fh, range(n)):
            obj = json.loads(line)
            docs.append(f"{obj['title']} {obj['text']}".strip())
    return docs


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` runs: the least disturbed by other work on a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def scifact_embeddings(n_docs: int, max_length: int = 128):
    """The default model's (all-MiniLM-L6-v2) embeddings of the first ``n_docs`` SciFact documents, at
    ``max_length`` tokens, through embforge's embedding cache (a rerun reads them from disk)."""
    from transformers.utils import logging as hf_logging

    from embforge import Encoder
    from embforge.cache import encode_cached

    hf_logging.disable_progress_bar()  # keep the printed figures readable
    encoder = Encoder.from_pretrained(None, device="cpu", query_max_len=max_length, passage_max_len=max_length)
    emb, _ = encode_cached(encoder, scifact_docs(n_docs), batch_size=32, show_progress=False)
    return emb


def write_tiny_bert(folder: Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A small random BERT with a word-level vocabulary (as tests/tiny.py builds one), for benches that
    time the machinery around a model rather than the model."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w.lower() for doc in scifact_docs(300) for w in doc.split() if w.isalpha()})[:4000]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, model_max_length=128)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=128)
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def peak_memory() -> dict[str, float]:
    """This process's peak resident set (VmHWM, file-backed memmap pages included) in GB."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(("VmHWM:", "RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 2**20
    return out


class AnonPeak:
    """The peak of RssAnon (memory the process owns, memmapped files not counted), sampled every
    ``interval`` seconds in a thread: the kernel keeps a peak for the whole RSS only."""

    def __init__(self, interval: float = 0.02):
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, peak_memory().get("RssAnon", 0.0))

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, peak_memory().get("RssAnon", 0.0))


def sgemm_peak(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a float32 matmul on this machine, now (best of ``repeats``): the ceiling every encode and
    training figure is compared with, measured in the same run because the same kind of machine varies."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm up the BLAS threads
    seconds = best_time(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def transformer_flops(tokens: int, hidden: int, layers: int, intermediate: int, seq_len: int) -> float:
    """Forward FLOPs of an encoder over ``tokens`` tokens in sequences of ``seq_len``: the dense
    projections (4 h^2 for q/k/v/o plus 2 h i for the MLP, 2 FLOPs per multiply-add) and attention
    (2 matmuls of seq_len x h per token)."""
    dense = 2 * (4 * hidden * hidden + 2 * hidden * intermediate)
    attention = 2 * 2 * seq_len * hidden
    return float(tokens * layers * (dense + attention))
