"""The CSR sparse autoencoder: centre, project up, keep the top k (ReLU), decode.

``z = ReLU(TopK_k(W_enc (x - b_pre) + b_lat))`` and ``x_hat = W_dec z + b_pre``. The decoder is its own
matrix but starts as the encoder's transpose with unit-norm columns (Gao et al., as CSR does), and
its columns are put back to unit norm after every step: otherwise the model could shrink codes and
grow decoder columns without changing the reconstruction, and "which latents are large" (what TopK
and retrieval rely on) would drift. Decoding scatters the k values into a dense (n, h) matrix and
multiplies: measured on CPU, that BLAS matmul (forward + backward) beats ``embedding_bag`` over the
k columns already at k=32 of 1536, and by 10x at the 4k and AuxK sizes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EmbforgeError

CONFIG_NAME = "csr_config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class CSRSettings:
    """What defines a CSR model; saved as ``csr_config.json`` beside the weights."""

    embed_dim: int
    hidden_size: int
    topk: int
    auxk: int = 512
    dead_threshold: int = 30

    def __post_init__(self) -> None:
        if self.embed_dim <= 0 or self.hidden_size <= 0:
            raise EmbforgeError(f"embed_dim and hidden_size must be positive, got {self.embed_dim}, {self.hidden_size}")
        if not 0 < self.topk <= self.hidden_size:
            raise EmbforgeError(f"topk must be between 1 and hidden_size ({self.hidden_size}), got {self.topk}")
        if self.auxk < 0:
            raise EmbforgeError(f"auxk must be 0 (off) or positive, got {self.auxk}")
        self.auxk = min(self.auxk, self.hidden_size)  # the reference's default 512 on a small model: all latents


@dataclass
class TopK:
    """k active latents per row: column indices (n, k) and their non-negative values (n, k)."""

    indices: torch.Tensor
    values: torch.Tensor

    def dense(self, hidden_size: int) -> torch.Tensor:
        out = self.values.new_zeros((self.values.shape[0], hidden_size))
        return out.scatter(1, self.indices, self.values)


def top_k(pre: torch.Tensor, k: int) -> TopK:
    """TopK then ReLU, as CSR: a selected latent with a negative pre-activation becomes an explicit 0."""
    values, indices = torch.topk(pre, k, dim=-1)
    return TopK(indices, F.relu(values))


class CSRModel(nn.Module):
    def __init__(self, settings: CSRSettings):
        super().__init__()
        self.settings = settings
        d, h = settings.embed_dim, settings.hidden_size
        self.pre_bias = nn.Parameter(torch.zeros(d))
        self.encoder = nn.Linear(d, h, bias=False)
        self.latent_bias = nn.Parameter(torch.zeros(h))
        self.decoder = nn.Linear(h, d, bias=False)
        with torch.no_grad():
            self.decoder.weight.copy_(self.encoder.weight.T)
        self.normalize_decoder()
        # Training steps since each latent was last among the top k with a positive value (AuxK's "dead").
        self.register_buffer("steps_since_active", torch.zeros(h, dtype=torch.long))

    @property
    def hidden_size(self) -> int:
        return self.settings.hidden_size

    def normalize_decoder(self) -> None:
        with torch.no_grad():  # a decorator would hide the signature from the type checker
            w = self.decoder.weight  # (d, h): column j is latent j's direction
            w.div_(w.norm(dim=0, keepdim=True).clamp_min(1e-12))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x - self.pre_bias, self.encoder.weight, self.latent_bias)

    def decode(self, codes: TopK) -> torch.Tensor:
        """``W_dec z + b_pre`` summing only the k columns each row uses."""
        return self.decode_residual(codes) + self.pre_bias

    def decode_residual(self, codes: TopK) -> torch.Tensor:
        """``W_dec z`` without the bias (what AuxK compares with the residual)."""
        return self.decoder(codes.dense(self.hidden_size))

    def encode(self, x: torch.Tensor, k: int | None = None) -> TopK:
        return top_k(self.pre_activation(x), k or self.settings.topk)

    def update_dead(self, codes: TopK) -> None:
        """Reset the counter of every latent that fired in this step; everyone else ages by one."""
        with torch.no_grad():  # a decorator would hide the signature from the type checker
            fired = torch.zeros_like(self.steps_since_active, dtype=torch.bool)
            fired[codes.indices[codes.values > 0]] = True
            self.steps_since_active.add_(1).masked_fill_(fired, 0)

    def dead_mask(self) -> torch.Tensor:
        return self.steps_since_active > self.settings.dead_threshold

    def auxk_codes(self, pre: torch.Tensor, auxk: int | None = None) -> TopK | None:
        """Top ``auxk`` pre-activations among dead latents only; None when no latent is dead."""
        dead = self.dead_mask()
        n_dead = int(dead.sum())
        k = min(auxk if auxk is not None else self.settings.auxk, n_dead)
        if k == 0:
            return None
        masked = pre.masked_fill(~dead, float("-inf"))
        return top_k(masked, k)

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path, extra: dict[str, object] | None = None) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME))
        meta = {"format": "embforge-csr", **asdict(self.settings), **(extra or {})}
        (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> CSRModel:
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_path, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not cfg_path.is_file() or not weights.is_file():
            raise EmbforgeError(f"{folder}: not a CSR model folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        fields = {k: meta[k] for k in ("embed_dim", "hidden_size", "topk", "auxk", "dead_threshold") if k in meta}
        model = cls(CSRSettings(**fields))
        model.load_state_dict(load_file(str(weights)))
        model.to(device).eval()
        return model
