"""The mining driver: a query/pos JSONL or BEIR folder in, the same records with hard negatives out.

Under ``torchrun`` every rank runs this: the ranks share the pool's encoding and the search (see
:mod:`embforge.store`), and rank 0 alone writes the output and prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .config import MineConfig


def load_input(cfg: MineConfig) -> tuple[list[dict[str, Any]], Iterable[str] | None]:
    """Records and, for a BEIR folder, its corpus (a stream) as the default pool."""
    from ..data.beir import is_beir_folder, qrels_split, read_queries
    from ..data.retrieval_jsonl import read_query_jsonl
    from ..data.texts import BeirCorpus
    from ..errors import EmbforgeError

    path = Path(cfg.input_file)  # type: ignore[arg-type]
    if not is_beir_folder(path):
        return read_query_jsonl(path), None
    qrels = qrels_split(path, cfg.split)
    queries = read_queries(path / "queries.jsonl")
    corpus = BeirCorpus(path)
    wanted = {d for rel in qrels.values() for d, g in rel.items() if g > 0}
    texts = {d: t for d, t in corpus.records() if d in wanted}  # only the positives' texts, in one pass
    records = []
    for qid, rel in qrels.items():
        pos_ids = [d for d, g in rel.items() if g > 0 and d in texts]
        if qid in queries and pos_ids:
            records.append({"query": queries[qid], "pos": [texts[d] for d in pos_ids], "neg": [],
                            "query_id": qid, "pos_ids": pos_ids})
    if not records:
        raise EmbforgeError(f"{path}: no query of split {cfg.split!r} has a positive in the corpus")
    return records, corpus


def check(cfg: MineConfig) -> None:
    """Everything that can be wrong with the flags, before a model is loaded and a pool encoded."""
    from ..errors import EmbforgeError
    from ..model.precision import load_dtype
    from ..paths import check_output_file
    from .negatives import parse_range

    if not cfg.input_file or not cfg.output_file:
        raise EmbforgeError("mine needs --input_file and --output_file")
    parse_range(cfg.range_for_sampling)
    for flag in ("negative_number", "batch_size", "max_tokens", "max_length", "shard_size", "nprobe"):
        value = getattr(cfg, flag)
        if value is not None and value < 1:
            raise EmbforgeError(f"--{flag} must be at least 1, got {value}")
    if cfg.false_negative_margin is not None and cfg.false_negative_margin < 0:
        raise EmbforgeError(f"--false_negative_margin must be 0 or more, got {cfg.false_negative_margin}")
    if cfg.reranker:
        load_dtype(cfg.reranker_dtype, flag="--reranker_dtype")  # float16 on CPU: refused before any loading
    check_output_file(cfg.output_file)


def mine(cfg: MineConfig) -> dict[str, Any]:
    """Mine ``cfg.input_file`` into ``cfg.output_file`` (written atomically); returns the statistics."""
    from ..data.retrieval_jsonl import CandidatePool
    from ..model import Encoder
    from ..model.precision import apply_precision
    from ..paths import atomic_open
    from ..store import ranks
    from .negatives import mine_negatives

    check(cfg)
    ranks.join()
    records, pool = load_input(cfg)
    if cfg.candidate_pool:
        pool = CandidatePool(cfg.candidate_pool)
    overrides: dict[str, Any] = {"query_instruction": cfg.query_instruction_for_retrieval}
    if cfg.max_length:
        overrides.update(query_max_len=cfg.max_length, passage_max_len=cfg.max_length)
    encoder = apply_precision(Encoder.from_pretrained(cfg.model_name_or_path, **overrides), quantize=cfg.quantize,
                              dtype=cfg.dtype)
    reranker = None
    if cfg.reranker:
        from ..model.cross_encoder import CrossEncoder
        from ..model.precision import load_dtype

        reranker = CrossEncoder.from_pretrained(cfg.reranker, dtype=load_dtype(cfg.reranker_dtype,
                                                                               flag="--reranker_dtype"))
    mined, stats = mine_negatives(
        encoder, records, pool, range_for_sampling=cfg.range_for_sampling, negative_number=cfg.negative_number,
        false_negative_margin=cfg.false_negative_margin, seed=cfg.seed, sampling=cfg.sampling,
        use_gpu=cfg.use_gpu_for_searching, batch_size=cfg.batch_size, use_cache=not cfg.no_cache,
        shard_size=cfg.shard_size, index=cfg.index, nprobe=cfg.nprobe, store_dir=cfg.store_dir, reranker=reranker,
        max_tokens=cfg.max_tokens)
    result = {"records": stats.records, "pool_size": stats.pool_size, "margin_dropped": stats.margin_dropped,
              "padded_records": stats.padded_records, "cache_hits": stats.cache_hits, "index": stats.index,
              "recall": stats.recall, "encoded_shards": stats.encoded_shards, "reused_shards": stats.reused_shards,
              "timings": stats.timings, "reranker": cfg.reranker}
    if not ranks.is_main():
        ranks.barrier()
        return result
    with atomic_open(cfg.output_file) as fh:  # type: ignore[arg-type]
        for record in mined:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    ranks.barrier()
    print(f"mined {cfg.negative_number} negatives for {stats.records} queries from a pool of {stats.pool_size} "
          f"(ranks {cfg.range_for_sampling}, search {stats.index} on {stats.device}) -> {cfg.output_file}")
    if stats.recall is not None:
        print(f"--index {stats.index}: recall@{cfg.range_for_sampling.split('-')[-1]} against exact search "
              f"{stats.recall:.4f} (on a sample of queries)")
    if cfg.false_negative_margin is not None or reranker is not None:
        judge = f" by the reranker {cfg.reranker}" if reranker is not None else ""
        print(f"false_negative_margin {cfg.false_negative_margin or 0.0}{judge}: dropped {stats.margin_dropped} "
              "candidate(s)")
    if stats.padded_records:
        print(f"{stats.padded_records} quer(y/ies) had too few candidates in the band; added "
              f"{stats.padded_negatives} random pool texts")
    hits = [k for k, v in stats.cache_hits.items() if v]
    if hits:
        print(f"embeddings from cache: {', '.join(hits)}")
    return result
