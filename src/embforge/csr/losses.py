"""CSR's loss terms as pure functions of tensors (no model, no files), so each can be checked alone.

The total, as in CSR/CSRv2, is ``mse(x, x_hat_k) + c_4k mse(x, x_hat_4k) + c_aux AuxK + c_cl CL (+ c_lab LabelCL)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(recon, x)


def normalized_mse(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE divided by the MSE of predicting the batch mean: scale-free, so AuxK's weight means the
    same whether the residual is large (early) or tiny (late). 0 for a constant target."""
    baseline = F.mse_loss(target.mean(dim=0, keepdim=True).expand_as(target), target)
    if baseline.item() == 0.0:
        return recon.sum() * 0.0
    return F.mse_loss(recon, target) / baseline


def auxk(residual: torch.Tensor, aux_recon: torch.Tensor | None) -> torch.Tensor:
    """AuxK: the dead latents (``aux_recon`` = their decoded top-auxk) must explain what the live
    ones missed (``residual`` = x - x_hat_k, detached). Gradient reaches dead latents only, which is
    what brings them back. 0 when nothing is dead."""
    if aux_recon is None:
        return residual.new_zeros(())
    return normalized_mse(aux_recon, residual).nan_to_num(0.0)


def _unit(z: torch.Tensor) -> torch.Tensor:
    return F.normalize(z, dim=-1, eps=1e-8)


def pair_contrastive(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE of paired codes: row i of ``a`` must be closer (cosine) to row i of ``b`` than to any
    other row of ``b`` (a query and its relevant document)."""
    logits = _unit(a) @ _unit(b).T / temperature
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def two_view_contrastive(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """The reference's in-batch term over two views of the same rows: each of the 2n codes has its
    other view as the positive and the 2n-2 codes of other rows as negatives. With a == b (no pairs
    in the data) it spreads codes of different rows apart."""
    z = _unit(torch.cat([a, b], dim=0))
    n = a.shape[0]
    sim = torch.exp(z @ z.T / temperature)
    ids = torch.arange(n, device=z.device).repeat(2)
    same = ids[:, None] == ids[None, :]
    pos = (sim * (same & ~torch.eye(2 * n, dtype=torch.bool, device=z.device))).sum(1)
    neg = (sim * ~same).sum(1)
    return -torch.log(pos / (pos + neg)).mean()


def label_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al.), CSRv2's label term: for each anchor, the mean
    log-probability of the other rows with its label among all other rows. Anchors without a
    same-label partner in the batch are skipped; 0 when none has one."""
    n = z.shape[0]
    u = _unit(z)
    logits = u @ u.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positive.sum(1)
    has = counts > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~positive, 0.0).sum(1)[has] / counts[has]
    return -mean_log_prob.mean()
