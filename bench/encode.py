"""Encode throughput: embforge vs sentence-transformers on the same model, texts and batch size.

    python bench/encode.py [--docs 1000] [--batch_size 32] [--max_length 256] [--repeats 3]

Runs alternate between the two libraries so both see the same machine state; prints sentences/s
of each and the ratio (embforge / sentence-transformers), and checks that the vectors agree.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import best_time, scifact_docs
from sentence_transformers import SentenceTransformer

from embforge import Encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    texts = scifact_docs(args.docs)
    ours = Encoder.from_pretrained(None, device="cpu", query_max_len=args.max_length,
                                   passage_max_len=args.max_length)
    peer = SentenceTransformer(ours.name_or_path, device="cpu")
    peer.max_seq_length = args.max_length

    a = ours.encode(texts, batch_size=args.batch_size, show_progress=False)
    b = peer.encode(texts, batch_size=args.batch_size)
    diff = float(np.abs(a - b).max())

    times = {"embforge": float("inf"), "sentence-transformers": float("inf")}
    for _ in range(args.repeats):  # interleaved, best of each
        times["sentence-transformers"] = min(times["sentence-transformers"], best_time(
            lambda: peer.encode(texts, batch_size=args.batch_size), 1))
        times["embforge"] = min(times["embforge"], best_time(
            lambda: ours.encode(texts, batch_size=args.batch_size, show_progress=False), 1))

    rate = {k: len(texts) / v for k, v in times.items()}
    print(f"model all-MiniLM-L6-v2 | {len(texts)} SciFact docs | batch {args.batch_size} | "
          f"max_length {args.max_length} | torch threads {torch.get_num_threads()}")
    for name, r in rate.items():
        print(f"  {name:<22} {r:8.1f} sentences/s  ({times[name]:.2f} s)")
    print(f"  ratio embforge / sentence-transformers: {rate['embforge'] / rate['sentence-transformers']:.3f}")
    print(f"  max |difference| of vectors: {diff:.2e}")


if __name__ == "__main__":
    main()
