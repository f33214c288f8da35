"""Time `embforge` mining against sentence-transformers' `mine_hard_negatives` on SciFact train.

Same model (the embedded all-MiniLM-L6-v2), same pool (the 5,183-document corpus), same queries
(the 809 train queries), and a band without sampling (the best-ranked non-positives), so both must
choose the same negatives. The cold comparison encodes from scratch on both sides; the warm
figure is embforge's second run, which reads the pool and query embeddings from its on-disk cache.

    python bench/mine.py [--negative_number 15] [--batch_size 64] [--limit 0] [--pool 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]


def load(folder: Path, limit: int):
    from embforge.data.beir import load_beir

    split = load_beir(folder, "train")
    records, pairs = [], []
    for qid, rel in split.qrels.items():
        pos = [split.corpus[d] for d, g in rel.items() if g > 0 and d in split.corpus]
        if qid in split.queries and pos:
            records.append({"query": split.queries[qid], "pos": pos, "query_id": qid})
            pairs += [(split.queries[qid], p) for p in pos]
    if limit:
        records = records[:limit]
        keep = {r["query"] for r in records}
        pairs = [p for p in pairs if p[0] in keep]
    return records, pairs, list(split.corpus.values())


def run_embforge(records, pool, n, batch_size, use_cache):
    from embforge.mining import mine_negatives
    from embforge.model import Encoder

    t0 = time.perf_counter()
    encoder = Encoder.from_pretrained(None, device="cpu")
    max_pos = max(len(r["pos"]) for r in records)
    out, stats = mine_negatives(encoder, records, pool, range_for_sampling=(0, n + max_pos), negative_number=n,
                                sampling="top", batch_size=batch_size, use_cache=use_cache)
    return time.perf_counter() - t0, {r["query"]: r["neg"] for r in out}, stats


def run_st(pairs, pool, n, batch_size):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from embforge.paths import default_model_path

    t0 = time.perf_counter()
    model = SentenceTransformer(str(default_model_path()), device="cpu")
    data = Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    mined = mine_hard_negatives(data, model, corpus=pool, range_min=0, num_negatives=n, sampling_strategy="top",
                                output_format="n-tuple", batch_size=batch_size, use_faiss=True, verbose=False)
    seconds = time.perf_counter() - t0
    negs = {}
    for row in mined:
        negs.setdefault(row["query"], [row[f"negative_{i}"] for i in range(1, n + 1)])
    return seconds, negs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO / "examples" / "data" / "scifact"))
    ap.add_argument("--negative_number", type=int, default=15)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N queries (smoke test)")
    ap.add_argument("--pool", type=int, default=0, help="use only the first N corpus documents as the pool (both "
                                                         "sides; for a busy machine)")
    args = ap.parse_args()

    import datasets  # noqa: F401  (imports happen before the clocks start, for both sides)
    import faiss  # noqa: F401
    import sentence_transformers  # noqa: F401
    import torch
    import transformers  # noqa: F401

    records, pairs, pool = load(Path(args.data), args.limit)
    pool = pool[:args.pool] if args.pool else pool
    n = args.negative_number
    print(f"{len(records)} queries ({len(pairs)} query-positive pairs), pool {len(pool)} docs, {n} negatives, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}",
          flush=True)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["EMBFORGE_CACHE"] = cache  # empty: the first embforge run is cold
        t_ours, ours, stats = run_embforge(records, pool, n, args.batch_size, use_cache=True)
        assert not any(stats.cache_hits.values())
        print(f"embforge cold: {t_ours:.1f} s (encode {stats.timings['encode_s']:.1f} s, search "
              f"{stats.timings['search_s']:.2f} s)", flush=True)
        t_st, theirs = run_st(pairs, pool, n, args.batch_size)
        print(f"sentence-transformers mine_hard_negatives: {t_st:.1f} s", flush=True)
        t_warm, warm, stats_w = run_embforge(records, pool, n, args.batch_size, use_cache=True)
        assert all(stats_w.cache_hits.values()) and warm == ours
        print(f"embforge warm (embedding cache): {t_warm:.1f} s", flush=True)

    common = [q for q in ours if q in theirs]
    overlap = sum(len(set(ours[q]) & set(theirs[q])) for q in common) / (n * len(common))
    identical = sum(ours[q] == theirs[q] for q in common)
    print(f"cold speed-up: {t_st / t_ours:.2f}x   warm speed-up: {t_st / t_warm:.1f}x   (load average now "
          f"{os.getloadavg()[0]:.2f}: 2 shared cores make single figures noisy)")
    print(f"negatives: overlap {overlap:.4f} over {len(common)} queries ({len(theirs)} in ST output); "
          f"identical lists {identical}/{len(common)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
