"""The mining driver: a query/pos JSONL or BEIR folder in, the same records with hard negatives out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import MineConfig


def load_input(cfg: MineConfig) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Records and, for a BEIR folder, its corpus as the default pool."""
    from ..data.beir import is_beir_folder, load_beir
    from ..data.retrieval_jsonl import read_query_jsonl

    path = Path(cfg.input_file)  # type: ignore[arg-type]
    if is_beir_folder(path):
        split = load_beir(path, cfg.split)
        records = []
        for qid, rel in split.qrels.items():
            pos_ids = [d for d, g in rel.items() if g > 0 and d in split.corpus]
            if qid in split.queries and pos_ids:
                records.append({"query": split.queries[qid], "pos": [split.corpus[d] for d in pos_ids],
                                "neg": [], "query_id": qid, "pos_ids": pos_ids})
        from ..errors import EmbforgeError

        if not records:
            raise EmbforgeError(f"{path}: no query of split {cfg.split!r} has a positive in the corpus")
        return records, list(split.corpus.values())
    return read_query_jsonl(path), None


def mine(cfg: MineConfig) -> dict[str, Any]:
    """Mine ``cfg.input_file`` into ``cfg.output_file`` (written atomically); returns the statistics."""
    from ..data.retrieval_jsonl import read_candidate_pool
    from ..errors import EmbforgeError
    from ..model import Encoder
    from ..paths import atomic_write_bytes, check_output_file
    from .negatives import mine_negatives, parse_range

    if not cfg.input_file or not cfg.output_file:
        raise EmbforgeError("mine needs --input_file and --output_file")
    # Everything that can be wrong with the flags fails here, before a model is loaded and a pool encoded.
    parse_range(cfg.range_for_sampling)
    for flag in ("negative_number", "batch_size", "max_length"):
        value = getattr(cfg, flag)
        if value is not None and value < 1:
            raise EmbforgeError(f"--{flag} must be at least 1, got {value}")
    if cfg.false_negative_margin is not None and cfg.false_negative_margin < 0:
        raise EmbforgeError(f"--false_negative_margin must be 0 or more, got {cfg.false_negative_margin}")
    check_output_file(cfg.output_file)
    records, pool = load_input(cfg)
    if cfg.candidate_pool:
        pool = read_candidate_pool(cfg.candidate_pool)
    overrides: dict[str, Any] = {"query_instruction": cfg.query_instruction_for_retrieval}
    if cfg.max_length:
        overrides.update(query_max_len=cfg.max_length, passage_max_len=cfg.max_length)
    encoder = Encoder.from_pretrained(cfg.model_name_or_path, **overrides)
    mined, stats = mine_negatives(
        encoder, records, pool, range_for_sampling=cfg.range_for_sampling, negative_number=cfg.negative_number,
        false_negative_margin=cfg.false_negative_margin, seed=cfg.seed, sampling=cfg.sampling,
        use_gpu=cfg.use_gpu_for_searching, batch_size=cfg.batch_size, use_cache=not cfg.no_cache)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in mined)
    atomic_write_bytes(Path(cfg.output_file), body.encode("utf-8"))
    print(f"mined {cfg.negative_number} negatives for {stats.records} queries from a pool of {stats.pool_size} "
          f"(ranks {cfg.range_for_sampling}, search on {stats.device}) -> {cfg.output_file}")
    if cfg.false_negative_margin is not None:
        print(f"false_negative_margin {cfg.false_negative_margin}: dropped {stats.margin_dropped} candidate(s)")
    if stats.padded_records:
        print(f"{stats.padded_records} quer(y/ies) had too few candidates in the band; added "
              f"{stats.padded_negatives} random pool texts")
    hits = [k for k, v in stats.cache_hits.items() if v]
    if hits:
        print(f"embeddings from cache: {', '.join(hits)}")
    return {"records": stats.records, "pool_size": stats.pool_size, "margin_dropped": stats.margin_dropped,
            "padded_records": stats.padded_records, "cache_hits": stats.cache_hits, "timings": stats.timings}
