"""Inference in less than float32: a dtype cast (GPU float16/bfloat16, CPU bfloat16) or int8 dynamic
quantisation of the Linear layers (CPU). Both change the vectors, so both are opt-in and both reach the
embedding cache's key: the cast through the dtype of every weight, int8 through the quantised weights
and the modules that hold them (see :func:`embforge.store.fingerprint.model_fingerprint`).
Cross-encoders (rerankers, score teachers) take the same dtype choices through :func:`load_dtype`;
their scores are never cached, so no key has to carry it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config import option
from ..errors import EmbforgeError

if TYPE_CHECKING:
    from .encoder import Encoder

QUANTIZE = ("int8",)
DTYPES = ("float32", "float16", "bfloat16")


def apply_precision(encoder: Encoder, quantize: str | None = None, dtype: str | None = None) -> Encoder:
    """Cast ``encoder`` to ``dtype`` and/or quantise its Linear layers to ``quantize``, in place; returns it.

    float16 is refused on CPU (half-precision matmuls there are emulated: slower, and LayerNorm overflows
    are not guarded); bfloat16 runs on CPU too. int8 is torch's dynamic quantisation, CPU only, on a
    float32 model.
    """
    target = load_dtype(dtype, encoder.device)  # checks the choice, and float16 on CPU
    if quantize is not None and quantize not in QUANTIZE:
        raise EmbforgeError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    on_cpu = encoder.device.type == "cpu"
    if target not in (None, torch.float32):
        if quantize:
            raise EmbforgeError(f"--quantize {quantize} works on a float32 model; drop --dtype {dtype}")
        encoder.to(target)
    if quantize == "int8":
        if not on_cpu:
            raise EmbforgeError("--quantize int8 runs on CPU only (torch dynamic quantisation); on a GPU use "
                                "--dtype float16 or bfloat16")
        with warnings.catch_warnings():  # torch.ao's notice that eager quantisation moves to torchao
            warnings.simplefilter("ignore")
            for tower in encoder.towers():
                torch.ao.quantization.quantize_dynamic(tower, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return encoder


def load_dtype(dtype: str | None, device: str | torch.device | None = None, flag: str = "--dtype"
               ) -> torch.dtype | None:
    """The torch dtype to load a model in for a ``dtype`` choice (``None``: the folder's own), on ``device``
    (``None``: where from_pretrained puts it, the GPU when there is one). float16 is refused on CPU, as in
    :func:`apply_precision`; ``flag`` names the option in the errors."""
    if dtype is None:
        return None
    if dtype not in DTYPES:
        raise EmbforgeError(f"{flag} must be one of {', '.join(DTYPES)}, got {dtype!r}")
    on_cpu = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")).type == "cpu"
    if dtype == "float16" and on_cpu:
        raise EmbforgeError(f"{flag} float16 needs a GPU; on CPU use {flag} bfloat16")
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def compile_towers(encoder: Encoder) -> Encoder:
    """``torch.compile`` each tower's forward for inference (one graph with dynamic shapes, so batches of
    any width reuse it); the vectors stay within float32 rounding of eager mode, so the cache key does not
    change. Compiling costs tens of seconds up front: it pays on corpora, not on a few texts. The
    modules stay as they are (state dict, saving and training see no wrapper)."""
    for tower in encoder.towers():
        tower.forward = torch.compile(tower.forward, dynamic=True)
    return encoder


def quantize_option() -> Any:
    """The ``--quantize`` flag of encode, mine and eval, declared once."""
    return option(None, "int8: dynamic int8 quantisation of the Linear layers (CPU; faster, vectors move: cosine "
                        "to float32 >= 0.88, SciFact nDCG@10 -0.004). Part of the cache key.", choices=("int8",))


_HALF = "float16 on GPU only; bfloat16 also on CPU, fast where it has AMX"


def dtype_option() -> Any:
    """The ``--dtype`` flag of encode, mine and eval, declared once."""
    return option(None, f"Run the model in float16 or bfloat16 ({_HALF}: SciFact nDCG@10 -0.001). Part of the "
                        "cache key.", choices=DTYPES)


def cross_dtype_option(model: str = "the reranker (cross-encoder)") -> Any:
    """The dtype flag of a cross-encoder run for inference (eval --rerank_dtype, mine --reranker_dtype,
    score --dtype), declared once."""
    return option("float32", f"Run {model} in bfloat16 or float16 ({_HALF}: ~2-3x faster than float32); scores, "
                             "and so rankings, move slightly.", choices=DTYPES)
