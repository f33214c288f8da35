"""The scoring engine (``embforge score``): a query/pos/neg JSONL in, the same records with teacher scores out.

Every record is written back with all of its fields, plus ``pos_scores`` / ``neg_scores`` aligned with
``pos`` / ``neg``: the scores distillation and margin losses read. The teacher is a cross-encoder (a
sequence-classification folder such as ``embforge train --task rerank`` saves; score = its raw logit)
or a bi-encoder (any other model folder; score = the inner product of its vectors, the cosine when the
model normalises, as mining's scores are). Bi-encoder vectors go through the embedding store, so a rerun
encodes nothing and ``torchrun`` shares the shards out; cross-encoder pairs are split across the ranks
(:func:`embforge.model.shared_predict.predict_shared`). Cross-encoder scores are not cached: a rerun
scores again (so ``--dtype`` needs no cache key there; a bi-encoder's vectors are keyed by its weights'
dtype). Rank 0 writes the output, atomically.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import option
from .errors import EmbforgeError
from .model.precision import apply_precision, cross_dtype_option, load_dtype

TEACHERS = ("cross", "bi")


@dataclass
class ScoreConfig:
    model_name_or_path: str | None = option(None, "Teacher model folder: a cross-encoder (a sequence-classification "
                                                  "folder, e.g. from train --task rerank) or any embedding model; "
                                                  "default: the embedded all-MiniLM-L6-v2.",
                                            aliases=("model", "teacher"))
    input_file: str | None = option(None, "FlagEmbedding JSONL {query, pos, neg} (e.g. mine's output).",
                                    aliases=("input",))
    output_file: str | None = option(None, "Where to write the records with pos_scores / neg_scores (atomically).",
                                     aliases=("output",))
    teacher_type: str | None = option(None, "cross or bi; default: detected from the folder (config.json "
                                            "architectures ending in ForSequenceClassification = cross).",
                                      choices=TEACHERS)
    batch_size: int = option(32, "Pairs (cross-encoder) or texts (bi-encoder) per forward pass.")
    max_length: int | None = option(None, "Override the model's max tokens per pair (cross) or per text (bi).",
                                    aliases=("max_len",))
    query_instruction_for_retrieval: str | None = option(None, "Bi-encoder: instruction prepended to queries "
                                                               "(default: the model's own).",
                                                         aliases=("query_instruction",))
    shard_size: int = option(16384, "Bi-encoder: texts per shard of the embedding store (the unit shared out "
                                    "among ranks and kept when a run is killed).")
    store_dir: str | None = option(None, "Bi-encoder: where the embedding store lives (default: the embedding "
                                         "cache). On several nodes it must be a folder every node sees.")
    no_cache: bool = option(False, "Bi-encoder: encode every text again, in a private store removed afterwards.")
    dtype: str = cross_dtype_option("the teacher (cross- or bi-encoder; a bi-encoder's vectors are cached per "
                                    "dtype)")


def teacher_kind(name_or_path: str | None) -> str:
    """``"cross"`` for a sequence-classification folder, ``"bi"`` for anything else."""
    from .model.io import model_root
    from .paths import resolve_model_path

    folder = model_root(resolve_model_path(name_or_path))
    config = folder / "config.json"
    if (folder / "modules.json").exists() or not config.exists():
        return "bi"  # a sentence-transformers or embforge embedder
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError) as exc:
        raise EmbforgeError(f"{config}: cannot read the model's config ({exc}); expected a JSON object") from exc
    return "cross" if any(str(a).endswith("ForSequenceClassification") for a in architectures) else "bi"


def check(cfg: ScoreConfig) -> None:
    """Everything that can be wrong with the flags, before a model is loaded."""
    from .paths import check_output_file

    if not cfg.input_file or not cfg.output_file:
        raise EmbforgeError("score needs --input_file and --output_file")
    if cfg.teacher_type is not None and cfg.teacher_type not in TEACHERS:
        raise EmbforgeError(f"--teacher_type must be one of {', '.join(TEACHERS)}, got {cfg.teacher_type!r}")
    for flag in ("batch_size", "max_length", "shard_size"):
        value = getattr(cfg, flag)
        if value is not None and value < 1:
            raise EmbforgeError(f"--{flag} must be at least 1, got {value}")
    load_dtype(cfg.dtype)  # float16 on CPU is refused before a model is loaded
    check_output_file(cfg.output_file)


def score(cfg: ScoreConfig) -> dict[str, Any]:
    """Score every (query, pos) and (query, neg) pair of ``cfg.input_file`` into ``cfg.output_file``;
    returns the statistics (records, pairs, teacher, timings, store shards for a bi-encoder)."""
    from .data.retrieval_jsonl import read_query_jsonl
    from .paths import atomic_open
    from .store import ranks

    check(cfg)
    ranks.join()
    t0 = time.perf_counter()
    records = read_query_jsonl(cfg.input_file)  # type: ignore[arg-type]
    kind = cfg.teacher_type or teacher_kind(cfg.model_name_or_path)
    pairs = [(r["query"], t) for r in records for key in ("pos", "neg") for t in r.get(key) or ()]
    stats: dict[str, Any] = {"records": len(records), "pairs": len(pairs), "teacher": kind}
    flat = _cross_scores(cfg, pairs) if kind == "cross" else _bi_scores(cfg, records, pairs, stats)
    t1 = time.perf_counter()
    stats["timings"] = {"score_s": t1 - t0}
    if not ranks.is_main():
        ranks.barrier()
        return stats
    with atomic_open(cfg.output_file) as fh:  # type: ignore[arg-type]
        at = 0
        for record in records:
            out = dict(record)
            for key in ("pos", "neg"):
                n = len(record.get(key) or ())
                out[f"{key}_scores"] = [float(s) for s in flat[at:at + n]]
                at += n
            fh.write(json.dumps(out, ensure_ascii=False) + "\n")
    ranks.barrier()
    print(f"scored {len(pairs)} pairs of {len(records)} records with a {kind}-encoder teacher "
          f"({t1 - t0:.1f} s) -> {cfg.output_file}")
    return stats


def _cross_scores(cfg: ScoreConfig, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    import os

    import torch

    from .model.cross_encoder import CrossEncoder
    from .model.shared_predict import predict_shared
    from .store import ranks

    world = ranks.join()[1]
    device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if world > 1 and torch.cuda.is_available() else None
    teacher = CrossEncoder.from_pretrained(cfg.model_name_or_path, max_length=cfg.max_length, device=device,
                                           dtype=load_dtype(cfg.dtype, device))
    return predict_shared(teacher, pairs, batch_size=cfg.batch_size, show_progress_bar=len(pairs) > 8 * cfg.batch_size)


def _bi_scores(cfg: ScoreConfig, records: Sequence[dict[str, Any]], pairs: Sequence[tuple[str, str]],
               stats: dict[str, Any]) -> np.ndarray:
    from .cache import model_fingerprint
    from .model import Encoder
    from .store.encode import encode_store, private_root

    overrides: dict[str, Any] = {"query_instruction": cfg.query_instruction_for_retrieval}
    if cfg.max_length:
        overrides.update(query_max_len=cfg.max_length, passage_max_len=cfg.max_length)
    encoder = apply_precision(Encoder.from_pretrained(cfg.model_name_or_path, **overrides), dtype=cfg.dtype)
    queries = list(dict.fromkeys(r["query"] for r in records))
    texts = list(dict.fromkeys(t for _, t in pairs))
    root = Path(cfg.store_dir).expanduser() if cfg.store_dir else None
    with contextlib.ExitStack() as stack:
        if cfg.no_cache:
            root = stack.enter_context(private_root(root))
        args: dict[str, Any] = dict(batch_size=cfg.batch_size, shard_size=cfg.shard_size, root=root,
                                    fingerprint="private" if cfg.no_cache else model_fingerprint(encoder))
        q_store, q_run = encode_store(encoder, queries, is_query=True, **args)
        t_store, t_run = encode_store(encoder, texts, is_query=False, show_progress=True, **args)
        q_emb = q_store.to_array()
        q_row = {q: i for i, q in enumerate(queries)}
        t_row = {t: i for i, t in enumerate(texts)}
        q_idx = np.array([q_row[q] for q, _ in pairs], dtype=np.int64)
        t_idx = np.array([t_row[t] for _, t in pairs], dtype=np.int64)
        out = np.empty(len(pairs), dtype=np.float32)
        for start in range(0, len(pairs), 65536):  # the passages' rows a block at a time, not all in memory
            end = start + 65536
            out[start:end] = np.einsum("ij,ij->i", q_emb[q_idx[start:end]], t_store.rows(t_idx[start:end]))
    stats["store"] = {"encoded": q_run.encoded + t_run.encoded, "reused": q_run.reused + t_run.reused}
    return out
