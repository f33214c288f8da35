"""Precomputed embeddings in ``.npz`` (or ``.npy``) files, the input of CSR training.

Uncompressed ``.npz`` members and ``.npy`` files are memory-mapped, so a multi-GB matrix costs no
RAM until rows are touched; compressed members have to be inflated and are loaded whole. Other
tools' key names are accepted so their files need no conversion.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from ..errors import EmbforgeError

EMBEDDING_KEYS = ("embeddings", "embedding", "emb", "embs", "data", "X", "x", "features", "vectors")
LABEL_KEYS = ("labels", "label", "y", "targets")
ID_KEYS = ("ids", "id", "doc_ids")
_LOCAL_HEADER = 30  # bytes before the name in a zip local file header


@dataclasses.dataclass
class EmbeddingSet:
    """An (N, D) matrix with optional per-row labels and ids."""

    embeddings: np.ndarray
    labels: np.ndarray | None = None
    ids: np.ndarray | None = None
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def memory_mapped(self) -> bool:
        return isinstance(self.embeddings, np.memmap)


def mapped_member(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray | None:
    """A memmap over a stored (uncompressed) .npy member, or None when it cannot be mapped."""
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with path.open("rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(_LOCAL_HEADER)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        start = info.header_offset + _LOCAL_HEADER + name_len + extra_len
        fh.seek(start)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            return None
        if dtype.hasobject:
            return None
        offset = fh.tell()
    if int(np.prod(shape)) == 0:
        return None
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


def _pick(keys: list[str], wanted: tuple[str, ...]) -> str | None:
    return next((k for k in wanted if k in keys), None)


def load_npz(path: str | Path, embeddings_key: str | None = None, labels_key: str | None = None) -> EmbeddingSet:
    """Load embeddings (+ labels, ids when present); a clear error naming the file and key otherwise."""
    path = Path(path)
    if not path.is_file():
        raise EmbforgeError(f"{path}: file not found")
    if path.suffix.lower() == ".npy":
        try:
            emb = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise EmbforgeError(f"{path}: not a readable .npy file: {exc}") from exc
        return _checked(EmbeddingSet(emb, path=path), "array")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise EmbforgeError(f"{path}: not a readable .npz file: {exc}") from exc
    with archive:
        keys = list(archive.files)
        emb_key = embeddings_key or _pick(keys, EMBEDDING_KEYS)
        if emb_key is None or emb_key not in keys:
            raise EmbforgeError(f"{path}: no embeddings array; expected one of {', '.join(EMBEDDING_KEYS)} "
                                f"(found: {', '.join(keys) or 'none'})")
        lab_key = labels_key or _pick(keys, LABEL_KEYS)
        if labels_key and labels_key not in keys:
            raise EmbforgeError(f"{path}: no array named {labels_key!r} (found: {', '.join(keys)})")
        id_key = _pick(keys, ID_KEYS)

        def member(key: str) -> np.ndarray:
            with zipfile.ZipFile(path) as zf:
                mapped = mapped_member(path, zf, f"{key}.npy")
            if mapped is not None:
                return mapped
            try:
                return np.asarray(archive[key])
            except ValueError as exc:  # object arrays need pickle, which we never enable
                raise EmbforgeError(f"{path}: array {key!r} holds Python objects; save it as numbers or strings") from exc

        emb = member(emb_key)
        labels = archive[lab_key] if lab_key else None
        ids = archive[id_key] if id_key else None
    return _checked(EmbeddingSet(emb, labels, ids, path), emb_key, lab_key)


def _checked(s: EmbeddingSet, emb_key: str, lab_key: str | None = None) -> EmbeddingSet:
    emb = s.embeddings
    if emb.ndim != 2:
        raise EmbforgeError(f"{s.path}: {emb_key!r} must be a 2-D (rows, dims) matrix, got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
        raise EmbforgeError(f"{s.path}: {emb_key!r} must hold real numbers, got dtype {emb.dtype}")
    for name, arr in (("labels" if lab_key is None else lab_key, s.labels), ("ids", s.ids)):
        if arr is not None and (arr.ndim < 1 or arr.shape[0] != emb.shape[0]):
            raise EmbforgeError(f"{s.path}: {name!r} has {arr.shape[0] if arr.ndim else 0} rows but "
                                f"{emb_key!r} has {emb.shape[0]}")
    return s
