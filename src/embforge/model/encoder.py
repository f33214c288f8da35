"""The Encoder: a Hugging Face backbone, a pooling rule and the text-side conventions around it."""

from __future__ import annotations

import copy
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
from ..paths import atomic_dir, resolve_model_path, usual_file_modes
from .billm import apply_billm
from .heads import DenseHead, check_layers
from .io import (
    QUERY_TOWER_DIR,
    damaged_weights,
    load_safetensors,
    model_root,
    read_dense_states,
    read_model_folder,
    write_encoder_files,
)
from .llm import (
    adapter_base_path,
    check_bracket_style,
    ensure_brackets,
    ensure_eos,
    kbit_load_kwargs,
    special_frame,
)
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
    # Dense layers around pooling (SGPT --addxlinear / sentence-transformers Dense), see model/heads.py.
    dense: list[dict[str, Any]] | None = None
    # Separate query and passage towers (SGPT --asym); the query tower lives in query_encoder/.
    asym: bool = False
    # Decoder LLMs (model/llm.py): end every text with EOS, the token last-token pooling reads; when the
    # tokenizer can be taught to add it (add_eos_token), the saved tokenizer does it for any reader.
    append_eos: bool = False
    # SGPT query/document brackets: "" (none), "speca" ([SOS] / {SOS} special tokens) or "specb" ([ ] / { }).
    brackets: str = ""
    # BiLLM (model/billm.py): attention is bidirectional from this decoder layer on; None = causal.
    billm_start_index: int | None = None

    def __post_init__(self) -> None:
        self.pooling = canonical_pooling(self.pooling)
        self.dense = check_layers(self.dense)
        self.brackets = check_bracket_style(self.brackets)
        if self.billm_start_index is not None and int(self.billm_start_index) < 0:
            raise EmbforgeError(f"billm_start_index must be >= 0, got {self.billm_start_index}")
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

    def __init__(self, backbone: nn.Module, tokenizer: Any, config: EncoderConfig | None = None,
                 query_backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config or EncoderConfig()
        if self.config.asym and query_backbone is None:
            query_backbone = copy.deepcopy(backbone)
        self.config.asym = query_backbone is not None
        # Asymmetric encoders (SGPT --asym): queries go through this tower, passages through ``backbone``.
        self.query_backbone = query_backbone
        self.head: DenseHead | None = None
        if self.config.dense:
            self.head = DenseHead(self.config.dense)
            self.head.reset_to_identity()
        if self.tokenizer.pad_token_id is None:
            # Decoder tokenizers often have no pad token; any id works since the mask hides it.
            fallback = self.tokenizer.eos_token or self.tokenizer.unk_token
            if fallback is None:
                raise EmbforgeError("the tokenizer has neither a pad, eos nor unk token to pad with")
            self.tokenizer.pad_token = fallback
        # EOS the tokenizer cannot add itself is appended in token_ids (see model/llm.py).
        self._manual_eos = ensure_eos(self.tokenizer) if self.config.append_eos else False
        self._brackets = ensure_brackets(self.tokenizer, self.towers(), self.config.brackets)
        self._frame = special_frame(self.tokenizer)
        if self.config.billm_start_index is not None:
            for tower in self.towers():
                apply_billm(tower, int(self.config.billm_start_index))

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str] | None = None, *, device: str | None = None,
                        dtype: torch.dtype | None = None, load_kbit: int | None = None,
                        is_llm: bool = False, **overrides: Any) -> Encoder:
        """Load an embforge, sentence-transformers or plain Hugging Face folder.

        ``None`` loads the embedded all-MiniLM-L6-v2. ``overrides`` replace EncoderConfig fields.
        ``load_kbit`` (4 or 8) quantises the backbone through bitsandbytes (CUDA only); ``is_llm``
        applies the decoder defaults (last-token pooling, left padding, EOS) to a folder without
        embforge settings, whatever its architecture. A LoRA adapter-only folder loads its base model
        (``base_model_name_or_path`` of adapter_config.json) and puts the adapter on it.
        """
        from safetensors import SafetensorError
        from transformers import AutoModel, AutoTokenizer

        folder = model_root(resolve_model_path(name_or_path))
        backbone_dir, settings, _ = read_model_folder(folder)
        load_kwargs: dict[str, Any] = {"dtype": dtype} if dtype else {}
        if load_kbit:
            load_kwargs |= kbit_load_kwargs(load_kbit)  # raises before any weight is read
        adapter_base = adapter_base_path(backbone_dir)
        try:
            tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
            backbone = AutoModel.from_pretrained(adapter_base or backbone_dir, **load_kwargs)
        except SafetensorError as exc:
            raise damaged_weights(Path(adapter_base or backbone_dir), exc) from exc
        except (OSError, ValueError) as exc:
            raise EmbforgeError(f"{backbone_dir}: cannot load the backbone or tokenizer: {exc}") from exc
        if adapter_base is not None:
            from peft import PeftModel

            if len(tokenizer) > backbone.get_input_embeddings().weight.shape[0]:
                backbone.resize_token_embeddings(len(tokenizer))
            backbone = PeftModel.from_pretrained(backbone, backbone_dir)
        if not settings:
            settings = cls._defaults_for(backbone.config, tokenizer, is_llm=is_llm)
        settings.setdefault("padding_side", tokenizer.padding_side)
        known = {f.name for f in dataclasses.fields(EncoderConfig)}
        settings = {k: v for k, v in settings.items() if k in known}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(settings) - known
        if unknown:
            raise EmbforgeError(f"unknown encoder setting(s): {', '.join(sorted(unknown))}")
        config = EncoderConfig(**settings)
        query_backbone = None
        query_dir = folder / QUERY_TOWER_DIR
        # asym=True as an override on a one-tower folder: the query tower starts as a copy (in __init__).
        if config.asym and (query_dir.exists() or not overrides.get("asym")):
            try:
                query_backbone = AutoModel.from_pretrained(query_dir, **({"dtype": dtype} if dtype else {}))
            except SafetensorError as exc:
                raise damaged_weights(query_dir, exc) from exc
            except (OSError, ValueError) as exc:
                raise EmbforgeError(f"{query_dir}: cannot load the query tower of this asymmetric model: {exc}") from exc
        encoder = cls(backbone, tokenizer, config, query_backbone=query_backbone)
        if encoder.head is not None:
            states = read_dense_states(folder)
            if states or not overrides.get("dense"):
                encoder.head.load_layer_states(states, str(folder))
        encoder.name_or_path = str(folder)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        encoder.to(device).eval()  # like from_pretrained in transformers: training opts in
        return encoder

    @staticmethod
    def _defaults_for(model_config: Any, tokenizer: Any, is_llm: bool = False) -> dict[str, Any]:
        """Settings for a folder without embforge or sentence-transformers files.

        Decoders read the last token, so it must be the EOS that closes the text (appended when the
        tokenizer does not add one) and padding goes left, as most LLM tokenizers expect.
        """
        max_len = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
        if _is_encoder_only(model_config) and not is_llm:
            return {"pooling": "mean", "normalize": True, "query_max_len": max_len, "passage_max_len": max_len}
        return {"pooling": "lasttoken", "normalize": True, "query_max_len": max_len, "passage_max_len": max_len,
                "padding_side": "left", "append_eos": tokenizer.eos_token_id is not None}

    def save(self, output_dir: str | os.PathLike[str], *, overwrite: bool = False, command: str = "save") -> Path:
        """Write the folder atomically: it loads with AutoModel, SentenceTransformer and Encoder.

        A non-empty folder that embforge did not write as ``command``'s output is refused unless
        ``overwrite``: the folder is replaced as a whole, so anything else in it would be lost.
        """
        output_dir = Path(output_dir)
        with atomic_dir(output_dir, command=command, overwrite=overwrite) as tmp:
            self.save_to(tmp)
        return output_dir

    def save_to(self, folder: Path) -> None:
        """Write into an existing (temporary) folder; ``save`` wraps this in an atomic rename."""
        folder = Path(folder)
        self.backbone.save_pretrained(folder)
        # The saved tokenizer pads right: sentence-transformers passes no position ids, so a left-padded
        # absolute-position model (GPT-2) would shift; embforge pads as embforge.json says either way.
        side, self.tokenizer.padding_side = self.tokenizer.padding_side, "right"
        try:
            self.tokenizer.save_pretrained(folder)
            if self.query_backbone is not None:
                self.query_backbone.save_pretrained(folder / QUERY_TOWER_DIR)
                self.tokenizer.save_pretrained(folder / QUERY_TOWER_DIR)
        finally:
            self.tokenizer.padding_side = side
        states = self.head.layer_states() if self.head is not None else None
        write_encoder_files(folder, dataclasses.asdict(self.config), self.hidden_size, states)
        usual_file_modes(folder)

    def load_extra_weights(self, folder: str | os.PathLike[str]) -> None:
        """Restore what lives beside the main backbone in a saved folder: the dense head and the query
        tower. Resuming from a checkpoint needs this on top of the backbone's own weights."""
        folder = Path(folder)
        if self.head is not None:
            self.head.load_layer_states(read_dense_states(folder), str(folder))
        if self.query_backbone is not None:
            load_backbone_weights(self.query_backbone, folder / QUERY_TOWER_DIR)

    # ------------------------------------------------------------------ architecture changes for training
    def add_dense_head(self, layers: list[dict[str, Any]]) -> DenseHead:
        """Put new dense layers (identity-initialised) on the encoder; the config records them."""
        self.config.dense = check_layers(layers)
        self.head = DenseHead(self.config.dense).to(self.device)
        self.head.reset_to_identity()
        return self.head

    def make_asymmetric(self) -> None:
        """Split into a query and a passage tower, both starting as copies of the current backbone."""
        if self.query_backbone is None:
            self.query_backbone = copy.deepcopy(self.backbone)
        self.config.asym = True

    def towers(self) -> list[nn.Module]:
        """The backbones: one, or the passage and the query tower."""
        return [self.backbone] + ([self.query_backbone] if self.query_backbone is not None else [])

    # ------------------------------------------------------------------ properties
    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def embedding_dim(self) -> int:
        return self.head.out_dim if self.head is not None else self.hidden_size

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
        if not (self._manual_eos or self._brackets):
            out = self.tokenizer(list(texts), truncation=True, max_length=self.max_len(is_query),
                                 add_special_tokens=True, return_attention_mask=False,
                                 return_token_type_ids=False)
            return list(out["input_ids"])
        # Compose by hand: the tokenizer's own special tokens, SGPT's brackets around the text, and EOS.
        body = self.tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False,
                              return_token_type_ids=False)["input_ids"]
        head, tail = self._frame
        opening, closing = self._brackets["query" if is_query else "passage"] if self._brackets else ([], [])
        end = [int(self.tokenizer.eos_token_id)] if self._manual_eos else []
        budget = max(self.max_len(is_query) - len(head) - len(opening) - len(closing) - len(tail) - len(end), 0)
        return [head + opening + list(ids[:budget]) + closing + tail + end for ids in body]

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
        tower = self.query_backbone if is_query and self.query_backbone is not None else self.backbone
        hidden = tower(**features).last_hidden_state
        if self.head is not None:
            hidden = self.head.tokens(hidden)
        emb = pool(hidden, features["attention_mask"], self.config.pooling)
        if self.head is not None:
            emb = self.head.pooled(emb)
        if self.config.normalize:
            emb = nn.functional.normalize(emb, p=2, dim=-1)
        return emb

    def embed(self, texts: Sequence[str], is_query: bool = False) -> torch.Tensor:
        return self(self.tokenize(texts, is_query), is_query=is_query)

    # ------------------------------------------------------------------ inference
    def encode(self, texts: str | Sequence[str], batch_size: int = 32, is_query: bool = False,
               dim: int | None = None, show_progress: bool | None = None,
               max_tokens: int | None = None) -> np.ndarray:
        """Embed texts for search or similarity; returns float32 (n, dim).

        Texts are sorted by token count, so each batch pads to nearly its own length, and the
        original order is restored. A batch holds ``batch_size`` texts, or, with ``max_tokens``, as
        many as fit in that many padded tokens (at least one): short texts then go in wide batches
        and long ones in narrow batches of the same memory. ``dim`` truncates to a Matryoshka prefix
        (re-normalised when the encoder normalises).
        """
        single = isinstance(texts, str)
        texts = [texts] if isinstance(texts, str) else list(texts)
        if dim is not None and not 0 < dim <= self.embedding_dim:
            raise EmbforgeError(f"dim must be between 1 and {self.embedding_dim}, got {dim}")
        if batch_size <= 0:
            raise EmbforgeError(f"batch_size must be positive, got {batch_size}")
        if max_tokens is not None and max_tokens <= 0:
            raise EmbforgeError(f"max_tokens must be positive, got {max_tokens}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise EmbforgeError(f"text #{i} is {type(t).__name__}, expected str")
        result = np.empty((len(texts), dim or self.embedding_dim), dtype=np.float32)
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
                    for rows in _batches([len(ids[j]) for j in order], batch_size, max_tokens):
                        picked = [order[j] for j in rows]
                        emb = self(self.collate([ids[j] for j in picked]), is_query=is_query)
                        if dim is not None:
                            emb = emb[:, :dim]
                            if self.config.normalize:
                                emb = nn.functional.normalize(emb, p=2, dim=-1)
                        # no copy on a float32 CPU model: .float() and .cpu() return the tensor itself
                        result[[window[j] for j in picked]] = emb.float().cpu().numpy()
                        bar.update(len(picked))
        finally:
            self.train(was_training)
        return result[0] if single else result

    def encode_queries(self, queries: Sequence[str], **kwargs: Any) -> np.ndarray:
        return self.encode(queries, is_query=True, **kwargs)

    def encode_corpus(self, passages: Sequence[str], **kwargs: Any) -> np.ndarray:
        return self.encode(passages, is_query=False, **kwargs)


def _batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None) -> list[range]:
    """Consecutive batches over texts sorted longest first: ``batch_size`` each, or with ``max_tokens``
    as many as fit in that many padded tokens (the first text of a batch sets its width)."""
    out, start = [], 0
    while start < len(lengths):
        size = batch_size if max_tokens is None else max(1, max_tokens // max(lengths[start], 1))
        out.append(range(start, min(start + size, len(lengths))))
        start += size
    return out


def load_backbone_weights(backbone: nn.Module, folder: Path) -> None:
    """Load a saved backbone's weights (full ``model.safetensors`` or a peft adapter) into ``backbone``."""
    adapter = folder / "adapter_model.safetensors"
    if adapter.exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(backbone, load_safetensors(adapter))
        return
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise EmbforgeError(f"{folder}: no model.safetensors or adapter_model.safetensors to load")
    missing, unexpected = backbone.load_state_dict(load_safetensors(weights), strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise EmbforgeError(f"{weights}: does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
