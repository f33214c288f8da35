"""What the engines need of an encoder, as a protocol: any object with these members can be evaluated,
mined with, cached and embedded for CSR, not only :class:`embforge.model.encoder.Encoder`.

It lives at the bottom of the package (it imports nothing of embforge), so the embedding cache, which
sits below the model layer, can name it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class EncoderLike(Protocol):
    """Texts in, float32 rows out; ``config`` is a dataclass of the settings that shape the vectors
    (``normalize`` among them), and ``state_dict`` holds the weights the cache key is made of.

    ``max_tokens`` (a padded-token budget per forward pass instead of ``batch_size`` texts) changes
    the batching, never the vectors; callers pass it only when the user set it (:func:`encode_texts`),
    so an encoder without the parameter still works without the option."""

    config: Any
    name_or_path: str | None

    @property
    def embedding_dim(self) -> int: ...

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, is_query: bool = False,
               dim: int | None = None, show_progress: bool | None = None,
               max_tokens: int | None = None) -> np.ndarray: ...

    def state_dict(self) -> Mapping[str, Any]: ...


def encode_texts(encoder: EncoderLike, texts: Sequence[str], *, batch_size: int, is_query: bool = False,
                 show_progress: bool | None = None, max_tokens: int | None = None) -> np.ndarray:
    """``encoder.encode`` with ``max_tokens`` passed only when set (see :class:`EncoderLike`)."""
    if max_tokens is None:
        return encoder.encode(texts, batch_size=batch_size, is_query=is_query, show_progress=show_progress)
    return encoder.encode(texts, batch_size=batch_size, is_query=is_query, show_progress=show_progress,
                          max_tokens=max_tokens)
