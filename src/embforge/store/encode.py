"""Encoding a text source into the store: streamed, split across ranks shard by shard, resumable.

The source is read once per rank, in order, and cut into consecutive shards of ``shard_size`` texts;
only the texts of the shard being encoded are ever in memory. A shard is named by the digest of its
texts inside a folder named by the model's fingerprint, the side (query or passage) and the dtype, so
the folder is the embedding cache: a shard whose sidecar json exists, matches and verifies is never
encoded again, whichever run, rank or process wrote it. Files are written through a temporary file and
a rename, the json last, so a process killed at any point leaves only complete shards valid and the
rerun encodes the others. Under torchrun, shard ``i`` belongs to rank ``i % world`` (the rule of
:meth:`EmbeddingStore.owned`); one process is the ``world == 1`` case of the same loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import EmbforgeError
from ..paths import atomic_write_bytes
from ..protocols import EncoderLike, encode_texts
from . import ranks
from .fingerprint import TextsDigest, model_fingerprint, store_root, text_hashes
from .layout import EmbeddingStore, Shard

FORMAT = 1  # bump when a shard's files change meaning; older shards then miss instead of being misread
DTYPES = ("float32", "float16")
STALE_SECONDS = 24 * 3600  # a temporary file this old belongs to a dead process
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreStats:
    """What one :func:`encode_store` call did: ``encoded`` and ``reused`` count shards over all ranks."""

    rows: int
    shards: int
    encoded: int
    reused: int


@dataclass(frozen=True)
class _Key:
    """What a shard's json must say for its vectors to be the ones asked for."""

    fingerprint: str
    side: str
    dtype: str

    def expected(self, digest: str, rows: int) -> dict[str, object]:
        return {"format": FORMAT, "fingerprint": self.fingerprint, "side": self.side, "dtype": self.dtype,
                "digest": digest, "rows": rows}


def store_folder(root: Path, fingerprint: str, is_query: bool, dtype: str) -> Path:
    """The folder of one model's vectors of one side in one dtype (the cache key but for the texts)."""
    return Path(root) / f"{fingerprint[:32]}-{'q' if is_query else 'p'}-{dtype}"


def encode_store(encoder: EncoderLike, texts: Iterable[str], *, is_query: bool = False, batch_size: int = 64,
                 shard_size: int = 16384, dtype: str = "float32", root: Path | None = None,
                 fingerprint: str | None = None, show_progress: bool | None = None,
                 max_tokens: int | None = None) -> tuple[EmbeddingStore, StoreStats]:
    """The store of ``texts`` under ``encoder``, encoding only the shards not already on disk.

    ``texts`` must be re-iterable (a list, or a file reader such as ``embforge.data.texts.TextFile``).
    ``root`` defaults to the cache root (:func:`store_root`); under torchrun it must be a folder every
    rank can read. Every rank returns the same store; call it on every rank or none.
    """
    if isinstance(texts, (str, bytes)) or iter(texts) is texts:
        raise TypeError("encode_store needs re-iterable texts (a list, or a reader such as "
                        f"embforge.data.texts.TextFile), not a one-shot {type(texts).__name__}: an exhausted "
                        "iterator would give an empty store without a word")
    if dtype not in DTYPES:
        raise EmbforgeError(f"store dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    for name, value in (("shard_size", shard_size), ("batch_size", batch_size)):
        if value < 1:
            raise EmbforgeError(f"{name} must be at least 1, got {value}")
    if max_tokens is not None and max_tokens < 1:
        raise EmbforgeError(f"max_tokens must be at least 1, got {max_tokens}")
    rank, world = ranks.join()
    key = _Key(fingerprint or model_fingerprint(encoder), "q" if is_query else "p", dtype)
    folder = store_folder(root if root is not None else store_root(), key.fingerprint, is_query, dtype)
    if rank == 0:
        _clean_stale(folder)

    entries: list[tuple[str, int]] = []
    done = np.zeros(2, dtype=np.int64)  # (encoded, reused) by this rank
    disable = True if rank != 0 else (None if show_progress is None else not show_progress)
    with tqdm(desc=f"encode {'queries' if is_query else 'passages'}", unit="text", disable=disable) as bar:
        for digest, rows, chunk in _stream_shards(texts, shard_size, lambda i: i % world == rank):
            entries.append((digest, rows))
            if chunk is not None:
                if _verified(folder, digest, rows, key):
                    done[1] += 1
                else:
                    vectors = encode_texts(encoder, chunk, batch_size=batch_size, is_query=is_query,
                                           show_progress=False, max_tokens=max_tokens)
                    _write_shard(folder, digest, np.ascontiguousarray(vectors, dtype=dtype), text_hashes(chunk), key)
                    done[0] += 1
            bar.update(rows)
    ranks.barrier()  # every shard is on disk from here on, whoever wrote it
    store = _assemble(folder, entries, key, encoder.embedding_dim)
    encoded, reused = (int(v) for v in np.sum(ranks.all_gather_array(done), axis=0))
    if rank == 0 and entries:
        _write_manifest(store, key)
    return store, StoreStats(rows=store.n_rows, shards=len(entries), encoded=encoded, reused=reused)


@contextlib.contextmanager
def private_root(parent: Path | None = None) -> Iterator[Path]:
    """A store root no other run reads, removed once every rank is done: the no-cache path runs the
    same code as the cached one. Rank 0 makes it and tells the others; on several nodes ``parent``
    must be a folder they share."""
    rank, _ = ranks.join()
    name = None
    if rank == 0:
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        name = tempfile.mkdtemp(prefix=".embforge-private-", dir=parent)
    path = Path(ranks.broadcast_object(name))
    try:
        yield path
    except BaseException:
        if rank == 0:
            shutil.rmtree(path, ignore_errors=True)
        raise
    ranks.barrier()  # nobody still reads its shards
    if rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def _stream_shards(texts: Iterable[str], shard_size: int, keep: Callable[[int], bool]
                   ) -> Iterator[tuple[str, int, list[str] | None]]:
    """(text digest, rows, texts or None) per shard, in order; texts are kept only for shards ``keep`` picks."""
    index, digest, rows, kept = 0, TextsDigest(), 0, []
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise EmbforgeError(f"text #{n} is {type(text).__name__}, expected str")
        digest.update(text)
        rows += 1
        if keep(index):
            kept.append(text)
        if rows == shard_size:
            yield digest.hexdigest(), rows, kept if keep(index) else None
            index, digest, rows, kept = index + 1, TextsDigest(), 0, []
    if rows:
        yield digest.hexdigest(), rows, kept if keep(index) else None


def _file_digest(path: Path) -> str | None:
    import xxhash

    h = xxhash.xxh3_128()
    try:
        with path.open("rb") as fh:
            while block := fh.read(1 << 24):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _read_meta(folder: Path, digest: str) -> dict[str, object] | None:
    try:
        meta = json.loads((folder / f"{digest}.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        logger.warning("%s: unreadable shard entry; re-encoding the shard", folder / f"{digest}.json")
        return None
    return meta if isinstance(meta, dict) else None


def _verified(folder: Path, digest: str, rows: int, key: _Key) -> bool:
    """Whether the shard is on disk, complete, of this model/side/dtype, and its bytes are as written."""
    meta = _read_meta(folder, digest)
    if meta is None or any(meta.get(k) != v for k, v in key.expected(digest, rows).items()):
        return False
    if (_file_digest(folder / f"{digest}.npy") != meta.get("vectors_xxh3")
            or _file_digest(folder / f"{digest}.hashes.npy") != meta.get("hashes_xxh3")):
        logger.warning("%s: the cached embeddings fail their checksum (damaged on disk); re-encoding the shard",
                       folder / f"{digest}.npy")
        return False
    return True


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _write_shard(folder: Path, digest: str, vectors: np.ndarray, hashes: np.ndarray, key: _Key) -> None:
    """The vectors, the row hashes, then the json that makes them count (each file atomically)."""
    import xxhash

    data, hash_data = _npy_bytes(vectors), _npy_bytes(hashes)
    atomic_write_bytes(folder / f"{digest}.npy", data)
    atomic_write_bytes(folder / f"{digest}.hashes.npy", hash_data)
    meta = {**key.expected(digest, int(vectors.shape[0])), "dim": int(vectors.shape[1]),
            "vectors_xxh3": xxhash.xxh3_128_hexdigest(data), "hashes_xxh3": xxhash.xxh3_128_hexdigest(hash_data)}
    atomic_write_bytes(folder / f"{digest}.json", json.dumps(meta, indent=1).encode())


def _assemble(folder: Path, entries: list[tuple[str, int]], key: _Key, default_dim: int) -> EmbeddingStore:
    """The store over the shards' jsons in source order (every shard was verified or written by its owner)."""
    shards, dims, start = [], set(), 0
    for digest, rows in entries:
        meta = _read_meta(folder, digest)
        if meta is None or any(meta.get(k) != v for k, v in key.expected(digest, rows).items()):
            raise EmbforgeError(f"{folder / (digest + '.json')}: shard missing after every rank finished; under "
                                "torchrun on several nodes the store folder must be one they all share")
        dims.add(int(str(meta["dim"])))
        shards.append(Shard(start, rows, folder / f"{digest}.npy", digest, hashes=folder / f"{digest}.hashes.npy"))
        start += rows
    if len(dims) > 1:
        raise EmbforgeError(f"{folder}: shards of different widths {sorted(dims)} under one fingerprint")
    return EmbeddingStore(folder, tuple(shards), dims.pop() if dims else default_dim, key.dtype)


def _write_manifest(store: EmbeddingStore, key: _Key) -> None:
    """For users and tools (the run's shards in order); the process itself uses the store it built."""
    digests = [s.digest for s in store.shards]
    name = hashlib.sha256("\n".join(digests).encode()).hexdigest()[:32]
    manifest = {"format": FORMAT, "fingerprint": key.fingerprint, "side": key.side, "dtype": key.dtype,
                "dim": store.dim, "rows": store.n_rows,
                "shards": [{"digest": s.digest, "start": s.start, "stop": s.stop} for s in store.shards]}
    atomic_write_bytes(store.root / f"manifest-{name}.json", json.dumps(manifest, indent=1).encode())


def _clean_stale(folder: Path) -> None:
    """Remove temporary files of processes long dead (harmless, but they take space)."""
    now = time.time()
    for path in folder.glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > STALE_SECONDS:
                path.unlink()
