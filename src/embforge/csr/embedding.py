"""``csr embed``: texts -> the npz that ``csr train`` reads (see csr/data.py for the keys)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import EmbforgeError
from ..protocols import EncoderLike
from .config import EmbedConfig


def _labels(path: Path, field: str, n: int) -> np.ndarray | None:
    """The JSONL's labels when every line has ``field``; None when none does; an error when only some do."""
    from ..data.jsonl import iter_dicts

    values = [obj.get(field) for _, obj in iter_dicts(path)]
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        line = present.index(False) + 1
        raise EmbforgeError(f"{path}: record {line} has no {field!r} while others do; label every record or none")
    if len(values) != n:
        return None
    if all(isinstance(v, (int, bool)) for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray([str(v) for v in values])


def embed(cfg: EmbedConfig, encoder: EncoderLike | None = None) -> Path:
    """Encode ``cfg.data`` with ``cfg.model_name_or_path`` (or the given encoder) and write ``cfg.output_file``."""
    from ..cache import encode_cached, model_fingerprint
    from ..data.beir import is_beir_folder, load_beir
    from ..data.texts import read_texts
    from ..model import Encoder
    from ..paths import atomic_write_bytes, check_output_file

    if not cfg.data or not cfg.output_file:
        raise EmbforgeError("csr embed needs --data and --output")
    data, out = Path(cfg.data), Path(cfg.output_file)
    if out.suffix != ".npz":
        raise EmbforgeError(f"{out}: output must end in .npz")
    if not data.exists():
        raise EmbforgeError(f"{data}: not found (expected a BEIR folder, a .txt or a .jsonl file)")
    if cfg.batch_size <= 0:
        raise EmbforgeError(f"--batch_size must be positive, got {cfg.batch_size}")
    check_output_file(out)
    arrays: dict[str, np.ndarray] = {}
    queries: list[str] = []
    pair_rows: list[int] = []
    if is_beir_folder(data):
        split = load_beir(data, cfg.split) if cfg.with_queries else None
        from ..data.beir import read_corpus

        corpus = split.corpus if split is not None else read_corpus(data / "corpus.jsonl")
        ids = list(corpus)
        texts = [corpus[d] for d in ids]
        if split is not None:
            row = {d: i for i, d in enumerate(ids)}
            for qid, rel in split.qrels.items():
                for doc, grade in rel.items():
                    if grade > 0 and qid in split.queries and doc in row:
                        queries.append(split.queries[qid])
                        pair_rows.append(row[doc])
            if not queries:
                raise EmbforgeError(f"{data}: split {cfg.split!r} has no query with a relevant document in the corpus")
    elif data.is_file():
        texts, id_list = read_texts(data, cfg.field)
        ids = id_list or []
        if data.suffix.lower() in (".jsonl", ".json"):
            labels = _labels(data, cfg.label_field, len(texts))
            if labels is not None:
                arrays["labels"] = labels
    else:
        raise EmbforgeError(f"{data}: a folder without corpus.jsonl and qrels/ (expected a BEIR folder)")
    if encoder is None:
        encoder = Encoder.from_pretrained(cfg.model_name_or_path)
    fp = model_fingerprint(encoder) if not cfg.no_cache else None
    emb, _ = encode_cached(encoder, texts, batch_size=cfg.batch_size, use_cache=not cfg.no_cache,
                           show_progress=True, fingerprint=fp)
    arrays["embeddings"] = emb
    if ids:
        arrays["ids"] = np.asarray(ids)
    if queries:
        unique = list(dict.fromkeys(queries))
        q_emb = encoder.encode(unique, batch_size=cfg.batch_size, is_query=True)
        where_q = {t: i for i, t in enumerate(unique)}
        arrays["queries"] = q_emb[[where_q[t] for t in queries]]
        arrays["pair_index"] = np.asarray(pair_rows, dtype=np.int64)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=True, **arrays)  # uncompressed, so csr train can memory-map it
    atomic_write_bytes(out, buf.getvalue())
    extra = f", {len(queries)} query/document pairs" if queries else ""
    extra += ", labels" if "labels" in arrays else ""
    print(f"wrote {emb.shape[0]} x {emb.shape[1]} embeddings{extra} to {out}")
    return out
