"""An Encoder with a CSR head on top, saved as one folder and loaded back as one object.

Layout: the Encoder's own folder (loads with AutoModel, SentenceTransformer and embforge.Encoder,
unchanged) plus a ``csr/`` subfolder holding the CSR model (csr_config.json, model.safetensors).
Tools that do not know CSR still see the dense model; ``load_stacked`` sees both.

sentence-transformers 6.2: ``SparseEncoder(folder)`` does *not* pick up the head. It treats the
folder as a dense model and appends a freshly initialised SparseAutoEncoder (random codes), and it
refuses module paths containing ``..``, so ``csr/`` cannot be a SparseEncoder folder that reuses
the parent's transformer. The head is therefore also written in SparseAutoEncoder's own format
(``csr/sparse_autoencoder/``; same pre-bias, encoder and latent bias, and the same TopK-then-ReLU
inference), and :func:`to_sparse_encoder` composes the two; its codes equal ours exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EmbforgeError
from .model import CONFIG_NAME, CSRModel
from .sparse import SparseCodes, encode_dense

if TYPE_CHECKING:  # pragma: no cover
    from ..model.encoder import Encoder

CSR_SUBFOLDER = "csr"
ST_SAE_SUBFOLDER = "sparse_autoencoder"


def write_st_sparse_autoencoder(csr: CSRModel, folder: Path) -> Path:
    """The head in sentence-transformers' SparseAutoEncoder layout (config.json + model.safetensors)."""
    import json

    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    st = csr.settings
    config = {"input_dim": st.embed_dim, "hidden_dim": st.hidden_size, "k": st.topk, "k_aux": st.auxk,
              "normalize": False, "dead_threshold": st.dead_threshold}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file({"pre_bias": csr.pre_bias.detach().cpu().clone(),
               "encoder.weight": csr.encoder.weight.detach().cpu().clone(),
               "latent_bias": csr.latent_bias.detach().cpu().clone(),
               "stats_last_nonzero": torch.zeros(st.hidden_size, dtype=torch.long)}, str(folder / "model.safetensors"))
    return folder


def save_stacked(encoder: Encoder, csr: CSRModel, folder: str | os.PathLike[str]) -> Path:
    """Write encoder + CSR head atomically to ``folder``."""
    from ..paths import atomic_dir

    if int(encoder.embedding_dim) != csr.settings.embed_dim:
        raise EmbforgeError(f"the CSR head expects {csr.settings.embed_dim}-d embeddings but the encoder gives "
                            f"{encoder.embedding_dim}-d")
    folder = Path(folder)
    with atomic_dir(folder, command="csr stack") as tmp:
        encoder.save_to(tmp)
        csr.save(tmp / CSR_SUBFOLDER, extra={"stacked_on": "the encoder in the parent folder"})
        write_st_sparse_autoencoder(csr, tmp / CSR_SUBFOLDER / ST_SAE_SUBFOLDER)
    return folder


def to_sparse_encoder(folder: str | os.PathLike[str], device: str = "cpu") -> Any:
    """A sentence_transformers.SparseEncoder with the folder's dense modules and its CSR head."""
    from sentence_transformers import SentenceTransformer, SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder

    folder = Path(folder)
    if not (folder / CSR_SUBFOLDER / ST_SAE_SUBFOLDER / "config.json").is_file():
        raise EmbforgeError(f"{folder}: no {CSR_SUBFOLDER}/{ST_SAE_SUBFOLDER}/ (write the folder with save_stacked)")
    dense = SentenceTransformer(str(folder), device=device)
    head = SparseAutoEncoder.load(str(folder / CSR_SUBFOLDER / ST_SAE_SUBFOLDER))
    return SparseEncoder(modules=[*dense, head], device=device)


def is_stacked(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / CSR_SUBFOLDER / CONFIG_NAME).is_file()


class SparseTextEncoder:
    """Texts -> sparse codes: the dense encoder, then the CSR head."""

    def __init__(self, encoder: Encoder, csr: CSRModel):
        self.encoder = encoder
        self.csr = csr.to(encoder.device)

    @property
    def hidden_size(self) -> int:
        return int(self.csr.hidden_size)

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, is_query: bool = False,
               topk: int | None = None, show_progress: bool | None = None) -> SparseCodes:
        texts = [texts] if isinstance(texts, str) else list(texts)
        dense = self.encoder.encode(texts, batch_size=batch_size, is_query=is_query, show_progress=show_progress)
        return encode_dense(self.csr, dense, topk)

    def encode_dense(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        """The codes as a (n, hidden_size) dense array (what SparseEncoder.encode returns, densified)."""
        return self.encode(texts, **kwargs).dense()


def load_stacked(folder: str | os.PathLike[str], device: str | None = None) -> SparseTextEncoder:
    from ..model import Encoder

    folder = Path(folder)
    if not is_stacked(folder):
        raise EmbforgeError(f"{folder}: no CSR head (expected {CSR_SUBFOLDER}/{CONFIG_NAME}; write one with "
                            "embforge.csr.save_stacked or 'embforge csr train --stack_on MODEL')")
    encoder = Encoder.from_pretrained(folder, device=device)
    return SparseTextEncoder(encoder, CSRModel.load(folder / CSR_SUBFOLDER))
