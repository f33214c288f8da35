"""The contrastive objective of a training step: embeddings in, scalar loss out.

Shared by the plain step and GradCache so that both compute exactly the same loss, including the
cross-device gathering. ``InfoNCEObjective`` is plain InfoNCE; ``Objective`` adds every other
loss of the registry (``embforge.losses.registry``: InfoNCE, CoSENT, cosine, AnglE and any loss
registered there) and the wrappers (Matryoshka, ESE, multi-TopK, distillation from a teacher model or from the
data's teacher scores). ``build_objective``
makes the one a resolved train Config asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..losses import distill, ese, registry, score_distill, topk
from ..losses.distill import similarity_distillation
from ..losses.ese import ese_loss
from ..losses.infonce import info_nce
from ..losses.matryoshka import matryoshka
from ..losses.score_distill import score_distillation
from ..losses.topk import multi_topk
from .distributed import gather_with_grad, world

if TYPE_CHECKING:  # pragma: no cover
    from .config import TrainConfig

#: A loss over embeddings, as the wrappers (TopK, Matryoshka, ESE) compose them.
LossFn = Callable[..., torch.Tensor]


@dataclass
class BatchLayout:
    """How a batch is laid out and shared, whatever the loss: groups of ``group_size`` passages per query,
    other queries' passages as negatives (``in_batch``), passages gathered from every process
    (``cross_device``), and the passage-to-query direction too (``symmetric``)."""

    temperature: float = 0.02
    group_size: int = 2
    cross_device: bool = False
    in_batch: bool = True
    symmetric: bool = False


@dataclass
class InfoNCEObjective(BatchLayout):
    """Plain InfoNCE, the common case, without the composition machinery of :class:`Objective`."""

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


@dataclass
class Objective(BatchLayout):
    """Every loss of ``embforge.losses`` behind one call, with the wrappers that change what it sees.

    ``__call__(q, p, scores=None, teacher=None, teacher_scores=None)``
        groups: q (B, W) queries, p (B*g, W) passages in groups (positive first);
        pairs (``pairs=True``): q and p are the two sides of B scored pairs, ``scores`` (B,) in [0, 1];
        teacher: the teacher's (q, p) embeddings when distilling;
        teacher_scores: (B, g) the data's teacher score of each local query's group passages, in p's order,
        when ``score_loss`` is kd or margin_mse (``embforge.losses.score_distill``).
        With ESE the encoder packs ``[last layer | layer l_1 | ...]`` side by side, so W = D * (1 + len(ese_layers)):
        one tensor per side keeps GradCache and the cross-device gather unchanged.

    ``losses`` maps registered loss names to weights; ``settings`` maps a loss name to its settings, each
    missing one taking the registry's default (InfoNCE's ``temperature``: this objective's own).

    Composition: base terms (``losses`` with weights, + ``kd_weight`` times the teacher-score term) -> + multi-TopK
    terms -> Matryoshka over ``mrl_dims`` -> ESE over layers and the compressed prefix; distillation from a
    teacher model is added on the full, last-layer embeddings. The teacher-score term sits with the base terms
    because it is a loss over the group's scores like InfoNCE: every prefix, mask and layer learns the teacher's
    ranking too. Under cross-device negatives, in-batch losses over groups score local
    queries against every process's passages (as InfoNCE does); pair losses rank the whole
    gathered batch on every process, which gives the same gradient as one process holding it.
    """

    losses: dict[str, float] = field(default_factory=lambda: {"infonce": 1.0})
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: bool = False
    normalize: bool = True
    mrl_dims: list[int] | None = None
    mrl_weights: list[float] | None = None
    topk_k_list: list[int] | None = None
    topk_weights: list[float] | None = None
    topk_mode: str = topk.SETTINGS["topk_mode"]
    ese_layers: list[int] = field(default_factory=list)
    ese_compression_size: int = ese.SETTINGS["ese_compression_size"]
    ese_kl_temperature: float = ese.SETTINGS["ese_kl_temperature"]
    distill_w: float = distill.SETTINGS["distill_w"]
    distill_temperature: float = distill.SETTINGS["distill_temperature"]
    score_loss: str = "none"
    kd_weight: float = score_distill.SETTINGS["kd_weight"]
    kd_temperature: float = score_distill.SETTINGS["kd_temperature"]

    def __post_init__(self) -> None:
        """Look every loss up once: an unknown name fails here, and each call only computes."""
        self._terms = []
        for name, weight in self.losses.items():
            spec = registry.get(name)
            own = {"temperature": self.temperature} if "temperature" in spec.settings else {}
            values = {**spec.settings, **own, **self.settings.get(spec.name, {})}
            self._terms.append((spec, weight, {k: values[k] for k in spec.settings}))

    def _base(self, batch: registry.Groups | registry.Pairs) -> torch.Tensor:
        first = batch.a if isinstance(batch, registry.Pairs) else batch.q
        loss = first.new_zeros(())
        for spec, weight, settings in self._terms:
            loss = loss + weight * spec.compute(batch, settings)
        return loss

    # ------------------------------------------------------------------ the call
    def __call__(self, q: torch.Tensor, p: torch.Tensor, scores: torch.Tensor | None = None,
                 teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
                 teacher_scores: torch.Tensor | None = None) -> torch.Tensor:
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

            pair_scores = scores

            def pair_base(a: torch.Tensor, b: torch.Tensor, _unused: torch.Tensor | None = None) -> torch.Tensor:
                return self._base(registry.Pairs(a, b, pair_scores))
            base: LossFn = pair_base
        else:
            distilled = self.score_loss != "none"
            if distilled and teacher_scores is None:
                raise ValueError(f"--teacher_scores {self.score_loss} needs the batch's teacher scores")

            def group_base(a: torch.Tensor, b: torch.Tensor, a_all: torch.Tensor | None = None) -> torch.Tensor:
                loss = self._base(registry.Groups(a, b, group_size=self.group_size, query_offset=offset, q_all=a_all,
                                                  in_batch=self.in_batch, symmetric=self.symmetric))
                if distilled and teacher_scores is not None:
                    loss = loss + self.kd_weight * score_distillation(
                        self.score_loss, a, b, teacher_scores, group_size=self.group_size,
                        temperature=self.temperature, kd_temperature=self.kd_temperature, query_offset=offset)
                return loss
            base = group_base

        inner: LossFn = base
        ks, dims = self.topk_k_list, self.mrl_dims
        if ks:
            def inner(*embs: torch.Tensor | None, _f: LossFn = base, ks: list[int] = ks) -> torch.Tensor:
                return _f(*embs) + multi_topk(_f, embs, ks, self.topk_weights, self.topk_mode, self.normalize)
        outer: LossFn = inner
        if dims:
            def outer(*embs: torch.Tensor | None, _f: LossFn = inner, dims: list[int] = dims) -> torch.Tensor:
                return matryoshka(_f, embs, dims, self.mrl_weights, self.normalize)

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


def build_objective(cfg: TrainConfig, ese_layers: list[int], with_teacher: bool, pairs: bool) -> InfoNCEObjective | Objective:
    """The objective a resolved train Config asks for; plain InfoNCE keeps the lean ``InfoNCEObjective``.

    Each chosen loss gets its settings read from the Config by the names its spec declares, so a
    new loss needs no line here."""
    from .config import resolved, sizes

    losses = resolved(cfg.loss, "loss")
    temperature, group_size = resolved(cfg.temperature, "temperature"), resolved(cfg.train_group_size,
                                                                                 "train_group_size")
    mrl_dims, topk_k_list = sizes(cfg.mrl_dims, "mrl_dims"), sizes(cfg.topk_k_list, "topk_k_list")
    weights = cfg.loss_weights or [1.0] * len(losses)
    score_loss = cfg.teacher_scores
    if losses == ["infonce"] and weights == [1.0] and not (mrl_dims or topk_k_list or ese_layers or with_teacher
                                                           or pairs or score_loss != "none"):
        return InfoNCEObjective(temperature=temperature, group_size=group_size,
                                    cross_device=cfg.negatives_cross_device, in_batch=cfg.use_inbatch_neg,
                                    symmetric=cfg.symmetric)
    return Objective(temperature=temperature, group_size=group_size, cross_device=cfg.negatives_cross_device,
                     in_batch=cfg.use_inbatch_neg, symmetric=cfg.symmetric, losses=dict(zip(losses, weights)), pairs=pairs, normalize=cfg.normalize,
                     settings={name: registry.settings_from(name, cfg) for name in losses},
                     mrl_dims=mrl_dims, mrl_weights=cfg.mrl_weights, topk_k_list=topk_k_list,
                     topk_weights=cfg.topk_weights, topk_mode=resolved(cfg.topk_mode, "topk_mode"),
                     ese_layers=ese_layers, ese_compression_size=resolved(cfg.ese_compression_size,
                                                                          "ese_compression_size"),
                     ese_kl_temperature=resolved(cfg.ese_kl_temperature, "ese_kl_temperature"),
                     distill_w=cfg.distill_w, distill_temperature=cfg.distill_temperature,
                     score_loss=score_loss, kd_weight=cfg.kd_weight, kd_temperature=cfg.kd_temperature)
