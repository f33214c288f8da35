"""Sparse codes as (indices, values) pairs: what ``csr encode`` writes and sparse retrieval reads.

Each row has exactly k (index, value) pairs; a value can be 0 when fewer than k pre-activations
were positive (TopK before ReLU), which keeps the arrays rectangular.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import EmbforgeError
from .model import CSRModel

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp


@dataclass
class SparseCodes:
    indices: np.ndarray  # (n, k) int32
    values: np.ndarray  # (n, k) float32
    hidden_size: int
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def to_scipy(self) -> sp.csr_matrix:
        """(n, hidden_size) scipy CSR matrix; explicit zeros dropped."""
        import scipy.sparse as sp

        n, k = self.indices.shape
        # copies: scipy sorts and prunes its arrays in place, which must not touch ours
        m = sp.csr_matrix((self.values.astype(np.float32).ravel().copy(), self.indices.ravel().copy(),
                           np.arange(0, n * k + 1, k)), shape=(n, self.hidden_size))
        m.eliminate_zeros()
        m.sort_indices()
        return m

    def dense(self) -> np.ndarray:
        out = np.zeros((len(self), self.hidden_size), dtype=np.float32)
        np.put_along_axis(out, self.indices.astype(np.int64), self.values, axis=1)
        return out

    def save(self, path: str | Path) -> Path:
        from ..paths import atomic_write_bytes

        path = Path(path)
        arrays = {"indices": self.indices, "values": self.values, "hidden_size": np.asarray(self.hidden_size)}
        if self.ids is not None:
            arrays["ids"] = np.asarray(self.ids)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=True, **arrays)
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> SparseCodes:
        path = Path(path)
        if not path.is_file():
            raise EmbforgeError(f"{path}: file not found")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("indices", "values", "hidden_size") if k not in z.files]
            if missing:
                raise EmbforgeError(f"{path}: not a sparse-codes file (missing {', '.join(missing)}; "
                                    "expected the output of 'embforge csr encode')")
            return cls(z["indices"], z["values"], int(z["hidden_size"]), z["ids"] if "ids" in z.files else None)


def encode_dense(model: CSRModel, embeddings: np.ndarray, k: int | None = None, batch_size: int = 4096,
                 ids: np.ndarray | None = None, show_progress: bool = False) -> SparseCodes:
    """Sparse codes of dense rows (any array-like, memory-mapped included), batch by batch."""
    with torch.no_grad():  # a decorator would hide the signature from the type checker
        k = k or model.settings.topk
        if not 0 < k <= model.hidden_size:
            raise EmbforgeError(f"topk must be between 1 and {model.hidden_size}, got {k}")
        if embeddings.ndim != 2 or embeddings.shape[1] != model.settings.embed_dim:
            raise EmbforgeError(f"embeddings have shape {embeddings.shape}; this CSR model expects (n, "
                                f"{model.settings.embed_dim})")
        n = embeddings.shape[0]
        device = next(model.parameters()).device
        indices = np.empty((n, k), dtype=np.int32)
        values = np.empty((n, k), dtype=np.float32)
        model.eval()
        for s in tqdm(range(0, n, batch_size), desc="csr encode", disable=not show_progress):
            x = torch.from_numpy(np.array(embeddings[s:s + batch_size], dtype=np.float32)).to(device)
            codes = model.encode(x, k)
            indices[s:s + batch_size] = codes.indices.cpu().numpy()
            values[s:s + batch_size] = codes.values.cpu().numpy()
        return SparseCodes(indices, values, model.hidden_size, ids)
