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
    (``normalize`` among them), and ``state_dict`` holds the weights the cache key is made of."""

    config: Any
    name_or_path: str | None

    @property
    def embedding_dim(self) -> int: ...

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, is_query: bool = False,
               dim: int | None = None, show_progress: bool | None = None) -> np.ndarray: ...

    def state_dict(self) -> Mapping[str, Any]: ...
