"""``CrossEncoder``: a reranker scoring (query, passage) pairs with one logit, saved so that three loaders agree.

The model is a Hugging Face ``AutoModelForSequenceClassification`` with ``num_labels=1`` on any encoder
(or decoder) backbone. Its folder is a plain HF folder: ``config.json`` (with a ``sentence_transformers``
entry naming the identity activation, so ``sentence_transformers.CrossEncoder.predict`` returns the raw
logit, as the HF model and :meth:`CrossEncoder.predict` do), ``model.safetensors`` and the tokenizer,
whose ``model_max_length`` is the pair length, the one truncation setting all three read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..errors import EmbforgeError
from ..paths import atomic_dir, resolve_model_path, usual_file_modes
from .io import model_root, read_model_folder

#: What sentence-transformers reads from config.json: score = logit (its default for one label is sigmoid).
ST_SETTINGS = {"activation_fn": "torch.nn.modules.linear.Identity"}
Pair = tuple[str, str]


class CrossEncoder(nn.Module):
    """A reranker: ``model`` (a sequence-classification model with one label) and its ``tokenizer``;
    pairs are truncated together to ``max_length`` tokens (longest side first, as sentence-transformers does)."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.tokenizer.model_max_length = self.max_length
        self.name_or_path: str | None = None
        config = self.hf_model.config
        config.sentence_transformers = {**(getattr(config, "sentence_transformers", None) or {}), **ST_SETTINGS}

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str] | None = None, *, max_length: int | None = None,
                        device: str | None = None, dtype: torch.dtype | None = None) -> CrossEncoder:
        """A saved reranker, or a fresh one on any backbone folder (embforge, sentence-transformers or HF;
        ``None`` = the embedded all-MiniLM-L6-v2), whose one-logit head then starts random (seed first).

        ``max_length``: tokens per pair; default the folder's tokenizer ``model_max_length``, capped at 512
        and at the model's positions.
        """
        from safetensors import SafetensorError
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        folder = model_root(resolve_model_path(name_or_path))
        backbone_dir = read_model_folder(folder)[0]
        try:
            config = AutoConfig.from_pretrained(backbone_dir)
            if _is_classifier(config) and config.num_labels != 1:
                raise EmbforgeError(f"{backbone_dir}: a classifier with {config.num_labels} labels; a reranker "
                                    "gives one score per pair (num_labels=1)")
            tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
            if tokenizer.pad_token is None:  # decoder tokenizers: the head reads the last non-pad token
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            config.num_labels = 1
            config.pad_token_id = tokenizer.pad_token_id
            model = AutoModelForSequenceClassification.from_pretrained(
                backbone_dir, config=config, **({"dtype": dtype} if dtype else {}))
        except SafetensorError as exc:
            raise EmbforgeError(f"{backbone_dir}: the weights file is damaged: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise EmbforgeError(f"{backbone_dir}: cannot load a sequence-classification model or tokenizer: "
                                f"{exc}") from exc
        positions = int(getattr(model.config, "max_position_embeddings", 512) or 512)
        length = max_length or min(int(tokenizer.model_max_length or 512), 512)
        encoder = cls(model, tokenizer, min(length, positions))
        encoder.name_or_path = str(folder)
        encoder.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        return encoder

    def save(self, output_dir: str | os.PathLike[str], *, overwrite: bool = False, command: str = "save") -> Path:
        """Write the folder atomically (see :func:`embforge.paths.atomic_dir` for what it may replace)."""
        with atomic_dir(output_dir, command=command, overwrite=overwrite) as tmp:
            self.save_to(tmp)
        return Path(output_dir)

    def save_to(self, folder: Path) -> None:
        """Write config, weights and tokenizer into an existing (temporary) folder."""
        folder = Path(folder)
        self.hf_model.save_pretrained(folder)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(folder)
        usual_file_modes(folder)

    def merge_adapters(self) -> None:
        """Fold LoRA adapters into the weights, so the folder is a plain model every loader reads."""
        if hasattr(self.model, "merge_and_unload"):
            self.model = self.model.merge_and_unload()

    # ------------------------------------------------------------------ scoring
    @property
    def hf_model(self) -> Any:
        """The transformers model itself, under any peft wrapper."""
        model = self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pair features, padded to the longest pair of the batch."""
        return dict(self.tokenizer(list(queries), list(passages), truncation=True, max_length=self.max_length,
                                   padding=True, return_tensors="pt"))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) logits for N tokenised pairs."""
        return self.model(**features).logits.squeeze(-1)

    def predict(self, pairs: Sequence[Pair], batch_size: int = 32, activation: Literal["sigmoid"] | None = None,
                show_progress_bar: bool | None = None) -> np.ndarray:
        """One float32 score per (query, passage) pair, in input order: the logit, or its sigmoid.

        Pairs run longest first, so each batch pads little; the progress bar shows for more than 8 batches.
        """
        from tqdm.auto import tqdm

        if activation not in (None, "sigmoid"):
            raise EmbforgeError(f"activation must be None or 'sigmoid', got {activation!r}")
        order = np.argsort([-(len(q) + len(p)) for q, p in pairs], kind="stable")
        scores = np.empty(len(pairs), dtype=np.float32)
        starts = range(0, len(pairs), batch_size)
        show = len(starts) > 8 if show_progress_bar is None else show_progress_bar
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for start in tqdm(starts, desc="Scoring pairs", disable=not show):
                    idx = order[start:start + batch_size]
                    feats = self.tokenize([pairs[i][0] for i in idx], [pairs[i][1] for i in idx])
                    logits = self({k: v.to(self.device) for k, v in feats.items()}).float()
                    if activation == "sigmoid":
                        logits = torch.sigmoid(logits)
                    scores[idx] = logits.reshape(-1).cpu().numpy()
        finally:
            self.train(was_training)
        return scores


def _is_classifier(config: Any) -> bool:
    return any(str(a).endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))
