"""ESE, Espresso sentence embeddings / 2-D Matryoshka (Li et al., 2024, "ESE: Espresso Sentence
Embeddings", arXiv:2402.14776; the ``--apply_ese`` recipe of AnglE).

Matryoshka shrinks the *width* of an embedding; ESE also shrinks the *depth*: a shallower layer's
pooled output should already be a usable embedding, so inference can stop early. Two ideas:

- learn-to-compress: the first ``k`` dimensions are trained with the task loss and pulled, by a KL
  divergence over the feature distribution at temperature ``T``, towards a PCA-like projection of
  the full vector onto ``k`` directions (``pca_compress``), so the important information moves to
  the front;
- learn-to-express: each shallower layer's compressed embedding is trained the same way, weighted
  by ``1 / (1 + ln l)`` for layer ``l`` so deep layers, closer to the final one, count more.

``ese_loss(loss_fn, full, layers, compression_size, kl_temperature)``
    loss_fn: a loss over a tuple of embedding tensors; full: that tuple for the last layer, (N_i, D);
    layers: ``[(l, tuple for layer l), ...]`` for shallower layers l >= 1 (pooled like the last one).
    Returns ``loss(full) + loss(full[:k]) + KL(full) + mean_l [(loss(h_l[:k]) + KL(h_l)) / (1 + ln l)]``
    where ``KL(x) = T * KL(softmax(pca_k(x) / T) || softmax(x[:k] / T))`` (batch mean), the
    reference's scaling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypedDict

import torch
import torch.nn.functional as F

from .matryoshka import Embeddings, truncate


# Defaults of the train flags of this wrapper (declared once, here; resolve fills the flags not given).
class Settings(TypedDict):
    apply_ese: bool
    ese_compression_size: int
    ese_kl_temperature: float


SETTINGS: Settings = {"apply_ese": False, "ese_compression_size": 128, "ese_kl_temperature": 1.0}


def pca_compress(m: torch.Tensor, k: int) -> torch.Tensor:
    """(N, D) -> (N, k): ``m`` projected on the top-k singular directions of the softmax-normalised
    feature Gram matrix ``softmax(m^T m / sqrt(D))``, scaled by their singular values. No gradient:
    it is the target the compressed prefix is pulled towards."""
    with torch.no_grad():  # a decorator would hide the signature from the type checker
        x = m.float() if m.dtype in (torch.float16, torch.bfloat16) else m
        gram = torch.softmax(x.T @ x / math.sqrt(x.shape[-1]), dim=-1)
        u, s, _ = torch.linalg.svd(gram)
        return (x @ (u[:, :k] * s[:k])).to(m.dtype)


def feature_kl(student: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T * KL(softmax(target / T) || softmax(student / T))`` over the feature axis, mean over rows."""
    log_p = F.log_softmax(student / temperature, dim=-1)
    q = F.softmax(target / temperature, dim=-1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature


def _compress_terms(loss_fn: Callable[..., torch.Tensor], embeddings: Embeddings, k: int, temperature: float,
                    normalize: bool) -> torch.Tensor:
    loss = loss_fn(*truncate(embeddings, k, normalize))
    for x in embeddings:
        if x is not None:
            loss = loss + feature_kl(x[..., :k], pca_compress(x, k), temperature)
    return loss


def ese_loss(loss_fn: Callable[..., torch.Tensor], full: Embeddings, layers: Sequence[tuple[int, Embeddings]],
             compression_size: int, kl_temperature: float = 1.0, normalize: bool = True) -> torch.Tensor:
    loss = loss_fn(*full) + _compress_terms(loss_fn, full, compression_size, kl_temperature, normalize)
    if layers:
        shallow = sum(_compress_terms(loss_fn, embs, compression_size, kl_temperature, normalize) / (1 + math.log(layer))
                      for layer, embs in layers)
        loss = loss + shallow / len(layers)
    return loss
