"""The contrastive objective of a training step: embeddings in, scalar loss out.

Shared by the plain step and GradCache so that both compute exactly the same loss, including the
cross-device gathering. ``ContrastiveObjective`` is plain InfoNCE; ``Objective`` adds every other
loss (CoSENT, cosine, AnglE, Matryoshka, ESE, multi-TopK, distillation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..losses.angle import angle_objective_groups, angle_objective_pairs
from ..losses.cosent import cosent
from ..losses.cosine import cosine_regression
from ..losses.distill import similarity_distillation
from ..losses.ese import ese_loss
from ..losses.infonce import info_nce
from ..losses.matryoshka import matryoshka
from ..losses.topk import multi_topk
from .distributed import gather_with_grad, world


@dataclass
class ContrastiveObjective:
    temperature: float = 0.02
    group_size: int = 2
    cross_device: bool = False
    in_batch: bool = True
    symmetric: bool = False

    def __call__(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if not self.cross_device:
            return info_nce(q, p, temperature=self.temperature, group_size=self.group_size,
                            in_batch=self.in_batch, symmetric=self.symmetric)
        rank, _ = world()
        p_all = gather_with_grad(p)
        q_all = gather_with_grad(q) if self.symmetric else None
        return info_nce(q, p_all, temperature=self.temperature, group_size=self.group_size,
                        query_offset=rank * q.shape[0], in_batch=self.in_batch, symmetric=self.symmetric,
                        q_all=q_all)


LOSSES = ("infonce", "cosent", "cosine", "angle")
PAIR_ONLY = ("cosent", "cosine")      # need scored pairs (AnglE format A, STS)
GROUP_ONLY = ("infonce",)             # need query/positive(/negative) records (formats B, C, FlagEmbedding)


@dataclass
class Objective(ContrastiveObjective):
    """Every loss of ``embforge.losses`` behind one call, with the wrappers that change what it sees.

    ``__call__(q, p, scores=None, teacher=None)``
        groups: q (B, W) queries, p (B*g, W) passages in groups (positive first);
        pairs (``pairs=True``): q and p are the two sides of B scored pairs, ``scores`` (B,) in [0, 1];
        teacher: the teacher's (q, p) embeddings when distilling.
        With ESE the encoder packs ``[last layer | layer l_1 | ...]`` side by side, so W = D * (1 + len(ese_layers)):
        one tensor per side keeps GradCache and the cross-device gather unchanged.

    Composition: base terms (``losses`` with weights) -> + multi-TopK terms -> Matryoshka over
    ``mrl_dims`` -> ESE over layers and the compressed prefix; distillation is added on the full,
    last-layer embeddings. Under cross-device negatives, in-batch losses over groups score local
    queries against every process's passages (as InfoNCE does); pair losses rank the whole
    gathered batch on every process, which gives the same gradient as one process holding it.
    """

    losses: dict[str, float] = field(default_factory=lambda: {"infonce": 1.0})
    pairs: bool = False
    normalize: bool = True
    cosine_w: float = 1.0
    cosine_tau: float = 20.0
    ibn_w: float = 20.0
    ibn_tau: float = 20.0
    angle_w: float = 1.0
    angle_tau: float = 20.0
    mrl_dims: list[int] | None = None
    mrl_weights: list[float] | None = None
    topk_k_list: list[int] | None = None
    topk_weights: list[float] | None = None
    topk_mode: str = "magnitude"
    ese_layers: list[int] = field(default_factory=list)
    ese_compression_size: int = 128
    ese_kl_temperature: float = 1.0
    distill_w: float = 1.0
    distill_temperature: float = 0.05

    # ------------------------------------------------------------------ base terms
    def _pair_terms(self, a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        loss = a.new_zeros(())
        for name, weight in self.losses.items():
            if name == "cosent":
                term = cosent(a, b, scores, self.cosine_tau)
            elif name == "cosine":
                term = cosine_regression(a, b, scores)
            elif name == "angle":
                term = angle_objective_pairs(a, b, scores, scores > 0.5, cosine_w=self.cosine_w,
                                             cosine_tau=self.cosine_tau, ibn_w=self.ibn_w, ibn_tau=self.ibn_tau,
                                             angle_w=self.angle_w, angle_tau=self.angle_tau)
            else:
                raise ValueError(f"loss {name!r} does not apply to scored pairs")
            loss = loss + weight * term
        return loss

    def _group_terms(self, q: torch.Tensor, p: torch.Tensor, q_all: torch.Tensor | None, offset: int) -> torch.Tensor:
        loss = q.new_zeros(())
        for name, weight in self.losses.items():
            if name == "infonce":
                term = info_nce(q, p, temperature=self.temperature, group_size=self.group_size, query_offset=offset,
                                in_batch=self.in_batch, symmetric=self.symmetric, q_all=q_all)
            elif name == "angle":
                term = angle_objective_groups(q, p, group_size=self.group_size, ibn_w=self.ibn_w, ibn_tau=self.ibn_tau,
                                              angle_w=self.angle_w, angle_tau=self.angle_tau, query_offset=offset)
            else:
                raise ValueError(f"loss {name!r} needs scored pairs, not query/passage groups")
            loss = loss + weight * term
        return loss

    # ------------------------------------------------------------------ the call
    def __call__(self, q: torch.Tensor, p: torch.Tensor, scores: torch.Tensor | None = None,
                 teacher: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        offset, q_all = 0, None
        if self.cross_device:
            rank, _ = world()
            if self.pairs:
                q, scores = gather_with_grad(q), gather_with_grad(scores)
            else:
                offset = rank * q.shape[0]
                q_all = gather_with_grad(q) if self.symmetric else None
            p = gather_with_grad(p)
            if teacher is not None:
                teacher = (gather_with_grad(teacher[0]) if self.pairs else teacher[0], gather_with_grad(teacher[1]))

        if self.pairs:
            if scores is None:
                raise ValueError("pair losses need scores")

            def base(a, b, _unused=None):
                return self._pair_terms(a, b, scores)
        else:
            def base(a, b, a_all=None):
                return self._group_terms(a, b, a_all, offset)

        inner = base
        if self.topk_k_list:
            def inner(*embs, _f=base):
                return _f(*embs) + multi_topk(_f, embs, self.topk_k_list, self.topk_weights, self.topk_mode,
                                              self.normalize)
        outer = inner
        if self.mrl_dims:
            def outer(*embs, _f=inner):
                return matryoshka(_f, embs, self.mrl_dims, self.mrl_weights, self.normalize)

        parts = 1 + len(self.ese_layers)
        views = [None if x is None else x.chunk(parts, dim=-1) for x in (q, p, q_all)]
        final = [None if v is None else v[0] for v in views]
        if self.ese_layers:
            layers = [(layer, [None if v is None else v[i + 1] for v in views])
                      for i, layer in enumerate(self.ese_layers)]
            loss = ese_loss(outer, final, layers, self.ese_compression_size, self.ese_kl_temperature, self.normalize)
        else:
            loss = outer(*final)
        if teacher is not None and self.distill_w:
            loss = loss + self.distill_w * similarity_distillation(final[0], final[1], teacher[0], teacher[1],
                                                                   self.distill_temperature)
        return loss
