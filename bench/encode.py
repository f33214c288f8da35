"""Encode throughput against the peer and against the machine: embforge vs sentence-transformers (torch,
and its ONNX backend when it loads), with GFLOP/s beside the sgemm peak measured in the same run.

    python bench/encode.py [--docs 300] [--lengths 256,128] [--batch_size 32] [--repeats 2]
                           [--max_tokens 0] [--quantize] [--bfloat16] [--compile]

Runs alternate between the contenders so all see the same machine state (best of ``--repeats`` each).
FLOPs come from ``transformer_flops`` on the tokens actually run: the unpadded count (the work the texts
need) and the padded count (the work the batches do); GFLOP/s uses the padded count, the one the
hardware executes. ``--max_tokens`` adds embforge with a token budget per batch (0: batch_size x length),
``--quantize`` and ``--bfloat16`` add the opt-in precisions (vectors change: their cosine to fp32 is
printed), ``--compile`` adds torch.compile of the backbone.
"""

from __future__ import annotations

import argparse
import copy
import os

import numpy as np
import torch
from _common import best_time, scifact_docs, sgemm_peak, transformer_flops

from embforge import Encoder
from embforge.model.encoder import _batches
from embforge.model.precision import apply_precision


def flops(encoder: Encoder, texts: list[str], batch_size: int, max_tokens: int | None) -> tuple[float, float]:
    """(unpadded, padded) forward FLOPs of encoding ``texts`` as ``Encoder.encode`` batches them."""
    cfg = encoder.backbone.config
    shape = (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size)
    lengths = sorted((len(x) for x in encoder.token_ids(texts)), reverse=True)
    unpadded = sum(transformer_flops(n, shape[0], shape[1], shape[2], n) for n in lengths)
    padded = sum(transformer_flops(len(r) * lengths[r[0]], shape[0], shape[1], shape[2], lengths[r[0]])
                 for r in _batches(lengths, batch_size, max_tokens))
    return unpadded, padded


def st_onnx(path: str, max_length: int):
    """sentence-transformers' ONNX backend on the default model, or the reason it cannot run here."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path, device="cpu", backend="onnx")
    except Exception as exc:  # optimum missing, no onnx file and no network to export one, ...
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    model.max_seq_length = max_length
    return model, ""


def run_length(args: argparse.Namespace, texts: list[str], length: int, peak: float) -> None:
    from sentence_transformers import SentenceTransformer

    bs = args.batch_size
    ours = Encoder.from_pretrained(None, device="cpu", query_max_len=length, passage_max_len=length)
    peer = SentenceTransformer(ours.name_or_path, device="cpu")
    peer.max_seq_length = length
    budget = args.max_tokens or bs * length
    runs = {"sentence-transformers": lambda: peer.encode(texts, batch_size=bs),
            "embforge": lambda: ours.encode(texts, batch_size=bs, show_progress=False),
            f"embforge max_tokens={budget}": lambda: ours.encode(texts, batch_size=bs, max_tokens=budget,
                                                                 show_progress=False)}
    onnx, why = st_onnx(ours.name_or_path, length)
    if onnx is not None:
        runs["sentence-transformers onnx"] = lambda: onnx.encode(texts, batch_size=bs)
    if args.quantize:
        int8 = apply_precision(copy.deepcopy(ours), quantize="int8")
        runs["embforge --quantize int8"] = lambda: int8.encode(texts, batch_size=bs, show_progress=False)
    if args.bfloat16:
        bf16 = apply_precision(copy.deepcopy(ours), dtype="bfloat16")
        runs["embforge --dtype bfloat16"] = lambda: bf16.encode(texts, batch_size=bs, show_progress=False)
    if args.compile:
        compiled = copy.deepcopy(ours)
        compiled.backbone = torch.compile(compiled.backbone, dynamic=True)
        runs["embforge torch.compile"] = lambda: compiled.encode(texts, batch_size=bs, show_progress=False)

    reference = peer.encode(texts, batch_size=bs)
    vectors = {name: np.asarray(fn()) for name, fn in runs.items()}  # also the warm-up (compile happens here)
    times = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):  # interleaved, best of each
        for name, fn in runs.items():
            times[name] = min(times[name], best_time(fn, 1))

    unpadded, padded = flops(ours, texts, bs, None)
    unpadded_b, padded_b = flops(ours, texts, bs, budget)
    print(f"\nmax_length {length} | {len(texts)} SciFact docs | batch {bs} | unpadded {unpadded / len(texts) / 1e9:.2f} "
          f"GFLOP/doc, padded {padded / len(texts) / 1e9:.2f} (budget batches {padded_b / len(texts) / 1e9:.2f})")
    if onnx is None:
        print(f"  sentence-transformers onnx: skipped ({why})")
    st_rate = len(texts) / times["sentence-transformers"]
    for name, seconds in times.items():
        rate = len(texts) / seconds
        work = padded_b if "max_tokens" in name else padded
        diff = float(np.abs(vectors[name] - reference).max())
        cos = float((vectors[name] * reference).sum(1).min())
        print(f"  {name:<30} {rate:7.2f} docs/s  x{rate / st_rate:5.3f} ST  "
              f"{work / seconds / 1e9:6.1f} GFLOP/s padded ({unpadded / seconds / 1e9:6.1f} unpadded) "
              f"= {100 * work / seconds / 1e9 / peak:4.1f} % of peak  max|diff| {diff:.1e}  min cos {cos:.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--lengths", default="256,128")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max_tokens", type=int, default=0)
    parser.add_argument("--quantize", action="store_true")
    parser.add_argument("--bfloat16", action="store_true")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    texts = scifact_docs(args.docs)
    peak = sgemm_peak()
    print(f"all-MiniLM-L6-v2 | torch threads {torch.get_num_threads()} | load average {os.getloadavg()[0]:.2f} | "
          f"sgemm peak {peak:.1f} GFLOP/s (2048^3, best of 5)")
    for length in (int(x) for x in args.lengths.split(",")):
        if length != int(args.lengths.split(",")[0]):  # the peak of a shared machine moves: measure it again
            peak = sgemm_peak()
            print(f"\nsgemm peak now {peak:.1f} GFLOP/s; load average {os.getloadavg()[0]:.2f}")
        run_length(args, texts, length, peak)
    print("\n(the int8 and bfloat16 rows are set against the float32 sgemm peak: their own kernels have other "
          "ceilings, so above 100 % is possible)")
    after = sgemm_peak()
    print(f"\nsgemm peak again at the end: {after:.1f} GFLOP/s; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
