"""The Encoder: a Hugging Face backbone, a pooling rule and the text-side conventions around it."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import EmbforgeError
from ..paths import atomic_dir, resolve_model_path
from .io import read_model_folder, write_encoder_files
from .pooling import canonical_pooling, pool

logger = logging.getLogger(__name__)

# Encoding sorts texts by length inside windows of this many texts, then tokenises one window at a
# time, so memory stays bounded on huge inputs while padding stays near the minimum.
_SORT_WINDOW = 32768


@dataclasses.dataclass
class EncoderConfig:
    """What turns token states into the vector a user sees; saved as ``embforge.json``."""

    pooling: str = "mean"
    normalize: bool = True
    query_instruction: str = ""
    passage_instruction: str = ""
    query_max_len: int = 256
    passage_max_len: int = 256
    padding_side: str = "right"
    dims: list[int] | None = None

    def __post_init__(self) -> None:
        self.pooling = canonical_pooling(self.pooling)
        if self.padding_side not in ("left", "right"):
            raise EmbforgeError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        for name in ("query_max_len", "passage_max_len"):
            if int(getattr(self, name)) <= 0:
                raise EmbforgeError(f"{name} must be positive, got {getattr(self, name)}")


def _is_encoder_only(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return getattr(config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES


class Encoder(nn.Module):
    """Backbone + pooling + optional normalisation, with query/passage instructions and lengths.

    ``forward`` keeps the autograd graph (training); ``encode`` is the inference path.
    """

    def __init__(self, backbone: nn.Module, tokenizer: Any, config: EncoderConfig | None = None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config or EncoderConfig()
        if self.tokenizer.pad_token_id is None:
            # Decoder tokenizers often have no pad token; any id works since the mask hides it.
            fallback = self.tokenizer.eos_token or self.tokenizer.unk_token
            if fallback is None:
                raise EmbforgeError("the tokenizer has neither a pad, eos nor unk token to pad with")
            self.tokenizer.pad_token = fallback

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, *, device: str | None = None,
                        dtype: torch.dtype | None = None, **overrides: Any) -> Encoder:
        """Load an embforge, sentence-transformers or plain Hugging Face folder.

        ``None`` loads the embedded all-MiniLM-L6-v2. ``overrides`` replace EncoderConfig fields.
        """
        from transformers import AutoModel, AutoTokenizer

        folder = resolve_model_path(name_or_path)
        backbone_dir, settings, _ = read_model_folder(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
            backbone = AutoModel.from_pretrained(backbone_dir, **({"dtype": dtype} if dtype else {}))
        except (OSError, ValueError) as exc:
            raise EmbforgeError(f"{backbone_dir}: cannot load the backbone or tokenizer: {exc}") from exc
        if not settings:
            settings = cls._defaults_for(backbone.config, tokenizer)
        settings.setdefault("padding_side", tokenizer.padding_side)
        known = {f.name for f in dataclasses.fields(EncoderConfig)}
        settings = {k: v for k, v in settings.items() if k in known}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(settings) - known
        if unknown:
            raise EmbforgeError(f"unknown encoder setting(s): {', '.join(sorted(unknown))}")
        encoder = cls(backbone, tokenizer, EncoderConfig(**settings))
        encoder.name_or_path = str(folder)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return encoder.to(device)

    @staticmethod
    def _defaults_for(model_config: Any, tokenizer: Any) -> dict[str, Any]:
        max_len = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
        pooling = "mean" if _is_encoder_only(model_config) else "lasttoken"
        return {"pooling": pooling, "normalize": True, "query_max_len": max_len, "passage_max_len": max_len}

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Write the folder atomically: it loads with AutoModel, SentenceTransformer and Encoder."""
        output_dir = Path(output_dir)
        with atomic_dir(output_dir) as tmp:
            self.save_to(tmp)
        return output_dir

    def save_to(self, folder: Path) -> None:
        """Write into an existing (temporary) folder; ``save`` wraps this in an atomic rename."""
        self.backbone.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        write_encoder_files(folder, dataclasses.asdict(self.config), self.hidden_size)

    # ------------------------------------------------------------------ properties
    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def embedding_dim(self) -> int:
        return self.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ tokenisation
    def _prefix(self, is_query: bool) -> str:
        return self.config.query_instruction if is_query else self.config.passage_instruction

    def max_len(self, is_query: bool) -> int:
        return int(self.config.query_max_len if is_query else self.config.passage_max_len)

    def token_ids(self, texts: Sequence[str], is_query: bool = False,
                  instruction: str | None = None) -> list[list[int]]:
        """Token ids per text, instruction prepended and truncated to the side's max length.

        ``instruction`` replaces the configured one for this call ("" for texts that already carry
        their own, such as training records with a per-record prompt).
        """
        prefix = self._prefix(is_query) if instruction is None else instruction
        if prefix:
            texts = [prefix + t for t in texts]
        out = self.tokenizer(list(texts), truncation=True, max_length=self.max_len(is_query),
                             add_special_tokens=True, return_attention_mask=False,
                             return_token_type_ids=False)
        return out["input_ids"]

    def collate(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Pad token-id lists into model inputs, on the side the config names."""
        width = max((len(x) for x in ids), default=1)
        input_ids = torch.full((len(ids), width), int(self.tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        left = self.config.padding_side == "left"
        for row, seq in enumerate(ids):
            n = len(seq)
            if n == 0:
                continue
            sl = slice(width - n, width) if left else slice(0, n)
            input_ids[row, sl] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, sl] = 1
        features = {"input_ids": input_ids, "attention_mask": mask}
        if left:
            # Positions count real tokens only, so a text's vector does not depend on its padding.
            features["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return features

    def tokenize(self, texts: Sequence[str], is_query: bool = False) -> dict[str, torch.Tensor]:
        return self.collate(self.token_ids(texts, is_query))

    # ------------------------------------------------------------------ forward
    def forward(self, features: dict[str, torch.Tensor], is_query: bool = False) -> torch.Tensor:
        """Pooled (and, if configured, L2-normalised) embeddings with the autograd graph kept."""
        features = {k: v.to(self.device) for k, v in features.items()}
        hidden = self.backbone(**features).last_hidden_state
        emb = pool(hidden, features["attention_mask"], self.config.pooling)
        if self.config.normalize:
            emb = nn.functional.normalize(emb, p=2, dim=-1)
        return emb

    def embed(self, texts: Sequence[str], is_query: bool = False) -> torch.Tensor:
        return self(self.tokenize(texts, is_query), is_query=is_query)

    # ------------------------------------------------------------------ inference
    def encode(self, texts: str | Sequence[str], batch_size: int = 32, is_query: bool = False,
               dim: int | None = None, show_progress: bool | None = None) -> np.ndarray:
        """Embed texts for search or similarity; returns float32 (n, dim).

        Texts are sorted by token count, so each batch pads to nearly its own length, and the
        original order is restored. ``dim`` truncates to a Matryoshka prefix (re-normalised when the
        encoder normalises).
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if dim is not None and not 0 < dim <= self.embedding_dim:
            raise EmbforgeError(f"dim must be between 1 and {self.embedding_dim}, got {dim}")
        if batch_size <= 0:
            raise EmbforgeError(f"batch_size must be positive, got {batch_size}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise EmbforgeError(f"text #{i} is {type(t).__name__}, expected str")
        out_dim = dim or self.embedding_dim
        result = np.empty((len(texts), out_dim), dtype=np.float32)
        if show_progress is None:
            show_progress = len(texts) >= 8 * batch_size
        by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode(), tqdm(total=len(texts), disable=not show_progress, desc="encode",
                                               unit="text") as bar:
                for start in range(0, len(texts), _SORT_WINDOW):
                    window = by_chars[start:start + _SORT_WINDOW]
                    ids = self.token_ids([texts[i] for i in window], is_query)
                    order = sorted(range(len(window)), key=lambda j: -len(ids[j]))
                    for b in range(0, len(order), batch_size):
                        rows = order[b:b + batch_size]
                        emb = self(self.collate([ids[j] for j in rows]), is_query=is_query)
                        if dim is not None:
                            emb = emb[:, :dim]
                            if self.config.normalize:
                                emb = nn.functional.normalize(emb, p=2, dim=-1)
                        result[[window[j] for j in rows]] = emb.float().cpu().numpy()
                        bar.update(len(rows))
        finally:
            self.train(was_training)
        return result[0] if single else result

    def encode_queries(self, queries: Sequence[str], **kwargs: Any) -> np.ndarray:
        return self.encode(queries, is_query=True, **kwargs)

    def encode_corpus(self, passages: Sequence[str], **kwargs: Any) -> np.ndarray:
        return self.encode(passages, is_query=False, **kwargs)
