"""The encoding engine: a text or JSONL file in, a matrix of embeddings out (.npy or .npz)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import option


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
    is_query: bool = option(False, "Treat the texts as queries (query instruction and query max length).")
    dim: int | None = option(None, "Keep only the first DIM dimensions (Matryoshka truncation).")
    max_length: int | None = option(None, "Override the model's max tokens per text.", aliases=("max_len",))
    pooling: str | None = option(None, "Override the model's pooling: cls, mean, weightedmean or lasttoken.",
                                 aliases=("sentence_pooling_method",))
    normalize: bool | None = option(None, "Override L2 normalisation.", aliases=("normlized", "normalized"))


def encode_file(cfg: EncodeConfig) -> Path:
    """Embed ``cfg.input_file`` into ``cfg.output_file`` (written atomically); returns the output path."""
    import numpy as np

    from .data.texts import read_texts
    from .errors import EmbforgeError
    from .model import Encoder
    from .paths import atomic_write_bytes, check_output_file

    if not cfg.input_file or not cfg.output_file:
        raise EmbforgeError("encode needs --input_file and --output_file")
    out = Path(cfg.output_file)
    if out.suffix not in (".npy", ".npz"):
        raise EmbforgeError(f"{out}: output must end in .npy or .npz")
    check_output_file(out)  # before the model loads and the texts are encoded, not after
    for flag in ("batch_size", "dim", "max_length"):
        value = getattr(cfg, flag)
        if value is not None and value < 1:
            raise EmbforgeError(f"--{flag} must be at least 1, got {value}")
    # a None override keeps the folder's own setting, so an unset --max_length changes nothing
    encoder = Encoder.from_pretrained(cfg.model_name_or_path, pooling=cfg.pooling, normalize=cfg.normalize,
                                      query_max_len=cfg.max_length, passage_max_len=cfg.max_length)
    texts, ids = read_texts(cfg.input_file, cfg.field)
    emb = encoder.encode(texts, batch_size=cfg.batch_size, is_query=cfg.is_query, dim=cfg.dim)
    import io

    buf = io.BytesIO()
    if out.suffix == ".npy":
        np.save(buf, emb)
    else:
        arrays = {"embeddings": emb}
        if ids is not None:
            arrays["ids"] = np.asarray(ids)
        np.savez(buf, allow_pickle=True, **arrays)
    atomic_write_bytes(out, buf.getvalue())
    print(f"wrote {emb.shape[0]} x {emb.shape[1]} embeddings to {out}")
    return out
