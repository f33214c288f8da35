"""The encoding engine: a text or JSONL file in, a matrix of embeddings out (.npy or .npz).

The input is streamed into the embedding store (:func:`embforge.store.encode.encode_store`), which
splits it into shards, encodes only those not already there, and under ``torchrun`` shares them out
among the ranks; rank 0 then copies the store into the output file one block at a time, so neither the
texts nor the matrix of a large corpus are ever all in memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import option
from .model.precision import dtype_option, quantize_option
from .store.encode import DTYPES
from .store.layout import EmbeddingStore
from .store.options import max_tokens_option, shard_size_option, store_dir_option


@dataclass
class EncodeConfig:
    input_file: str | None = option(None, "Input: .txt (one text per line) or .jsonl/.json (one object per line).",
                                    aliases=("input",))
    output_file: str | None = option(None, "Output: .npy (the matrix) or .npz (keys 'embeddings' and, when the input "
                                           "has them, 'ids').", aliases=("output",))
    model_name_or_path: str | None = option(None, "Model folder (embforge, sentence-transformers or Hugging Face); "
                                                  "default: the embedded all-MiniLM-L6-v2.", aliases=("model",))
    field: str = option("text", "JSONL field to embed; 'title+text' joins a BEIR corpus's title and text.")
    batch_size: int = option(64, "Texts per forward pass.")
    max_tokens: int | None = max_tokens_option()
    is_query: bool = option(False, "Treat the texts as queries (query instruction and query max length).")
    dim: int | None = option(None, "Keep only the first DIM dimensions (Matryoshka truncation).")
    max_length: int | None = option(None, "Override the model's max tokens per text.", aliases=("max_len",))
    pooling: str | None = option(None, "Override the model's pooling: cls, mean, weightedmean or lasttoken.",
                                 aliases=("sentence_pooling_method",))
    normalize: bool | None = option(None, "Override L2 normalisation.", aliases=("normlized", "normalized"))
    shard_size: int = shard_size_option()
    store_dtype: str = option("float32", "How the store keeps the vectors (the output is float32 either way).",
                              choices=DTYPES)
    store_dir: str | None = store_dir_option()
    no_cache: bool = option(False, "Encode every text again, in a private folder removed afterwards (under "
                                   "--store_dir when given: on several nodes give a shared one).")
    quantize: str | None = quantize_option()
    dtype: str | None = dtype_option()
    compile: bool = option(False, "torch.compile the model first (same vectors to float32 rounding; the compile "
                                  "takes tens of seconds, so it pays on large inputs: see bench/encode.py).")


def encode_file(cfg: EncodeConfig) -> Path:
    """Embed ``cfg.input_file`` into ``cfg.output_file`` (written atomically by rank 0); returns the output path."""
    import torch

    from .data.texts import TextFile
    from .errors import EmbforgeError
    from .model import Encoder
    from .model.precision import apply_precision, compile_towers
    from .paths import check_output_file
    from .store import ranks
    from .store.encode import encode_store, private_root

    if not cfg.input_file or not cfg.output_file:
        raise EmbforgeError("encode needs --input_file and --output_file")
    out = Path(cfg.output_file)
    if out.suffix not in (".npy", ".npz"):
        raise EmbforgeError(f"{out}: output must end in .npy or .npz")
    check_output_file(out)  # before the model loads and the texts are encoded, not after (on every rank)
    for flag in ("batch_size", "max_tokens", "dim", "max_length", "shard_size"):
        value = getattr(cfg, flag)
        if value is not None and value < 1:
            raise EmbforgeError(f"--{flag} must be at least 1, got {value}")
    if cfg.store_dtype not in DTYPES:
        raise EmbforgeError(f"--store_dtype must be one of {', '.join(DTYPES)}, got {cfg.store_dtype!r}")
    texts = TextFile(cfg.input_file, cfg.field)
    rank, world = ranks.join()
    device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if world > 1 and torch.cuda.is_available() else None
    # a None override keeps the folder's own setting, so an unset --max_length changes nothing
    encoder = Encoder.from_pretrained(cfg.model_name_or_path, device=device, pooling=cfg.pooling,
                                      normalize=cfg.normalize, query_max_len=cfg.max_length,
                                      passage_max_len=cfg.max_length)
    apply_precision(encoder, quantize=cfg.quantize, dtype=cfg.dtype)
    if cfg.compile:
        compile_towers(encoder)
    if cfg.dim is not None and cfg.dim > encoder.embedding_dim:
        raise EmbforgeError(f"dim must be between 1 and {encoder.embedding_dim}, got {cfg.dim}")
    store_dir = Path(cfg.store_dir).expanduser() if cfg.store_dir else None
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(private_root(store_dir)) if cfg.no_cache else store_dir
        store, stats = encode_store(encoder, texts, is_query=cfg.is_query, batch_size=cfg.batch_size,
                                    shard_size=cfg.shard_size, dtype=cfg.store_dtype, root=root,
                                    fingerprint="private" if cfg.no_cache else None, max_tokens=cfg.max_tokens)
        if rank == 0:
            width = _write_output(out, store, cfg.dim, bool(encoder.config.normalize),
                                  texts.ids() if out.suffix == ".npz" else None)
            print(f"wrote {store.n_rows} x {width} embeddings to {out} ({stats.shards} shards: "
                  f"{stats.encoded} encoded, {stats.reused} reused)")
    return out


def _write_output(out: Path, store: EmbeddingStore, dim: int | None, normalize: bool, ids: list[str] | None) -> int:
    """Copy the store into ``out`` block by block (memory: one block); returns the width written."""
    import numpy as np

    from .cache import truncate

    width = min(dim or store.dim, store.dim)
    with _temp_sibling(out, ".npy") as matrix_path:
        matrix = np.lib.format.open_memmap(matrix_path, mode="w+", dtype=np.float32, shape=(store.n_rows, width))
        for start, block in store.blocks():
            matrix[start:start + block.shape[0]] = truncate(block, dim, normalize)
        matrix.flush()
        del matrix
        if out.suffix == ".npy":
            _publish(matrix_path, out)
            return width
        with _temp_sibling(out, ".npz") as zip_path:
            with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                zf.write(matrix_path, "embeddings.npy")
                if ids is not None:
                    with zf.open("ids.npy", "w", force_zip64=True) as fh:
                        np.lib.format.write_array(fh, np.asarray(ids), allow_pickle=False)
            _publish(zip_path, out)
    return width


@contextlib.contextmanager
def _temp_sibling(out: Path, suffix: str) -> Iterator[Path]:
    """A temporary file next to ``out`` (same filesystem, so the final rename is atomic), removed unless
    published."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", suffix=suffix, dir=out.parent)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _publish(tmp: Path, out: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; give the file the usual permissions
    os.replace(tmp, out)
