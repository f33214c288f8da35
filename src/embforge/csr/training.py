"""CSR training loop: batches from the memory-mapped npz, the CSR/CSRv2 losses, a report and a plot.

A plain loop rather than the HF Trainer: the model is two matrices over precomputed vectors, and
what matters here (k annealing, the dead-latent counter, drawing pairs beside rows) is easier to
read in one function than in callbacks.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import EmbforgeError
from . import losses
from .config import TrainConfig
from .data import TrainData, batches, load_train_data, rows
from .model import CSRModel, CSRSettings, top_k
from .schedule import check_schedule, k_at


@dataclass
class TrainResult:
    output_dir: Path
    model: CSRModel
    report: dict[str, Any] = field(default_factory=dict)


def pick_device(name: str | None) -> torch.device:
    if name is None or name == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.isdigit():  # the reference's --gpu 0
        name = f"cuda:{name}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EmbforgeError(f"--device {name}: no CUDA device is available (use cpu)")
    return torch.device(name)


def check_config(cfg: TrainConfig, data: TrainData) -> CSRSettings:
    """Every user error is raised here, before the first step."""
    d = data.dim
    if cfg.embed_dim is not None and cfg.embed_dim != d:
        raise EmbforgeError(f"--embed_dim {cfg.embed_dim} does not match {cfg.pretrained_emb}, whose embeddings "
                            f"have {d} dimensions")
    hidden = cfg.hidden_size or 4 * d
    if cfg.topk > hidden:
        raise EmbforgeError(f"--topk {cfg.topk} is larger than --hidden_size {hidden}; a code cannot have more "
                            "active latents than latents")
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) <= 0:
            raise EmbforgeError(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.lr <= 0:
        raise EmbforgeError(f"--lr must be positive, got {cfg.lr}")
    if cfg.multi_k < 1:
        raise EmbforgeError(f"--multi_k must be at least 1, got {cfg.multi_k}")
    if cfg.temperature <= 0:
        raise EmbforgeError(f"--temperature must be positive, got {cfg.temperature}")
    check_schedule(cfg.topk, hidden, cfg.initial_topk, cfg.k_decay_ratio)
    if cfg.use_label_CL and data.labels is None:
        raise EmbforgeError(f"--use_label_CL needs a 'labels' array in {cfg.pretrained_emb} (one label per row)")
    if len(data) == 0:
        raise EmbforgeError(f"{cfg.pretrained_emb}: no rows to train on")
    return CSRSettings(embed_dim=d, hidden_size=hidden, topk=cfg.topk, auxk=min(cfg.auxk, hidden),
                       dead_threshold=cfg.dead_threshold)


def _output_dir(cfg: TrainConfig) -> Path:
    if not cfg.output_dir:
        raise EmbforgeError("csr train needs --output_dir")
    out = Path(cfg.output_dir)
    if cfg.model_suffix:
        out = out / f"csr_k{cfg.topk}_{cfg.model_suffix}"
    return out


def step_losses(model: CSRModel, x: torch.Tensor, k: int, cfg: TrainConfig, labels: torch.Tensor | None = None,
                pair: tuple[torch.Tensor, torch.Tensor] | None = None, update_dead: bool = True
                ) -> dict[str, torch.Tensor]:
    """Every loss term of one step (unweighted) and their weighted ``total``."""
    h = model.hidden_size
    pre = model.pre_activation(x)
    codes = top_k(pre, k)
    recon = model.decode(codes)
    out = {"recon_k": losses.reconstruction(x, recon),
           "recon_multi_k": losses.reconstruction(x, model.decode(top_k(pre, min(cfg.multi_k * k, h))))}
    if update_dead:
        model.update_dead(codes)
    if cfg.auxk > 0 and cfg.auxk_coef > 0:
        aux = model.auxk_codes(pre, cfg.auxk)
        aux_recon = model.decode_residual(aux) if aux is not None else None
        out["auxk"] = losses.auxk((x - recon).detach(), aux_recon)
    dense = None
    if cfg.use_CL:
        if pair is not None:
            q, d = pair
            cq, cd = model.encode(q, k), model.encode(d, k)
            out["recon_k"] = 0.5 * (out["recon_k"] + losses.reconstruction(q, model.decode(cq)))
            out["cl"] = losses.pair_contrastive(cq.dense(h), cd.dense(h), cfg.temperature)
        else:
            dense = codes.dense(h)
            out["cl"] = losses.two_view_contrastive(dense, dense, cfg.temperature)
    if cfg.use_label_CL and labels is not None:
        dense = codes.dense(h) if dense is None else dense
        out["label_cl"] = losses.label_contrastive(dense, labels, cfg.temperature)
    weights = {"recon_k": 1.0, "recon_multi_k": cfg.multi_k_coef, "auxk": cfg.auxk_coef, "cl": cfg.cl_coef,
               "label_cl": cfg.cl_coef if cfg.label_cl_coef is None else cfg.label_cl_coef}
    out["total"] = sum(weights[name] * value for name, value in out.items())
    return out


def fit(model: CSRModel, data: TrainData, cfg: TrainConfig, device: torch.device,
        show_progress: bool = True) -> dict[str, Any]:
    """Train in place; returns the history the report and the plot are made from."""
    rng = np.random.default_rng(cfg.seed)
    n = len(data)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=6.25e-10)
    labels_all = torch.from_numpy(data.labels) if data.labels is not None else None
    emb = data.embeddings.embeddings
    history: list[dict[str, float]] = []
    epoch_loss: list[float] = []
    step = 0
    rows_seen = 0
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc="csr train", unit="step", disable=not show_progress)
    try:
        for _epoch in range(cfg.epochs):
            running, count = 0.0, 0
            for idx in batches(n, bs, rng):
                k = k_at(step, total, cfg.topk, cfg.initial_topk, cfg.k_decay_ratio)
                x = torch.from_numpy(rows(emb, idx)).to(device)
                labels = labels_all[idx].to(device) if labels_all is not None else None
                pair = None
                if cfg.use_CL and data.pairs is not None:
                    pi = rng.choice(len(data.pairs), size=min(bs, len(data.pairs)), replace=False)
                    q = torch.from_numpy(rows(data.pairs.queries, pi)).to(device)
                    d = torch.from_numpy(rows(emb, data.pairs.doc_rows[pi])).to(device)
                    pair = (q, d)
                parts = step_losses(model, x, k, cfg, labels, pair)
                opt.zero_grad(set_to_none=True)
                parts["total"].backward()
                opt.step()
                model.normalize_decoder()
                step += 1
                rows_seen += len(idx)
                loss = float(parts["total"].detach())
                if not math.isfinite(loss):
                    raise EmbforgeError(f"the loss became {loss} at step {step}; lower --lr")
                running, count = running + loss, count + 1
                if step % max(cfg.log_every, 1) == 0 or step == total or step == 1:
                    entry = {"step": step, "k": k, "dead_fraction": float(model.dead_mask().float().mean()),
                             **{name: float(v.detach()) for name, v in parts.items()}}
                    history.append(entry)
                    bar.set_postfix(loss=f"{loss:.4g}", k=k, dead=f"{entry['dead_fraction']:.1%}")
                bar.update(1)
            epoch_loss.append(running / max(count, 1))
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    model.eval()
    return {"steps": step, "epochs": cfg.epochs, "history": history, "epoch_loss": epoch_loss,
            "dead_fraction": float(model.dead_mask().float().mean()), "seconds": seconds,
            "rows_per_s": rows_seen / seconds if seconds > 0 else None}


def plot_history(path: Path, history: list[dict[str, float]]) -> Path | None:
    if len(history) < 2:
        return None
    from .plots import pyplot, save_png

    plt = pyplot()
    steps = [h["step"] for h in history]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name in ("total", "recon_k", "recon_multi_k", "auxk", "cl", "label_cl"):
        if name in history[0]:
            # a log axis cannot show 0 (AuxK before any latent is dead): leave those points out
            ax.plot(steps, [h[name] if h[name] > 0 else float("nan") for h in history], label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    ax2.plot(steps, [h["dead_fraction"] for h in history], color="tab:red", label="dead latents")
    ax2.set_xlabel("step")
    ax2.set_ylabel("dead-latent fraction")
    ax2.set_ylim(0, 1)
    ax3 = ax2.twinx()
    ax3.plot(steps, [h["k"] for h in history], color="tab:gray", linestyle="--", label="k")
    ax3.set_ylabel("k")
    ax2.grid(True, alpha=0.3)
    return save_png(fig, path)


def train(cfg: TrainConfig, show_progress: bool = True) -> TrainResult:
    """Check, train, write ``csr_config.json`` + ``model.safetensors`` + ``train_report.json`` + ``loss.png``."""
    import json

    from ..paths import atomic_dir, check_output_dir

    if not cfg.pretrained_emb:
        raise EmbforgeError("csr train needs --pretrained_emb (an .npz of embeddings)")
    out = check_output_dir(_output_dir(cfg), command="csr train", inputs=[cfg.pretrained_emb, cfg.stack_on])
    data = load_train_data(cfg.pretrained_emb)
    settings = check_config(cfg, data)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = CSRModel(settings).to(device)
    fitted = fit(model, data, cfg, device, show_progress=show_progress)
    report = {"config": asdict(cfg), "settings": asdict(settings), "device": str(device),
              "rows": len(data), "memory_mapped": data.embeddings.memory_mapped,
              "labels": data.labels is not None, "pairs": len(data.pairs) if data.pairs is not None else 0,
              **fitted}
    with atomic_dir(out, command="csr train") as tmp:
        model.save(tmp, extra={"base_model": cfg.base_model, "source": str(cfg.pretrained_emb)})
        (tmp / "train_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        plot_history(tmp / "loss.png", fitted["history"])
    if cfg.stack_on:
        from ..model import Encoder
        from .head import save_stacked

        encoder = Encoder.from_pretrained(None if cfg.stack_on == "default" else cfg.stack_on)
        stacked = save_stacked(encoder, model.cpu(), out / "with_encoder")
        report["stacked"] = str(stacked)
        print(f"csr train: encoder + CSR head -> {stacked}")
    last = fitted["history"][-1] if fitted["history"] else {}
    print(f"csr train: {fitted['steps']} steps in {fitted['seconds']:.1f} s ({fitted['rows_per_s'] or 0:.0f} rows/s) "
          f"on {device}; final loss {last.get('total', float('nan')):.4g}, dead latents "
          f"{fitted['dead_fraction']:.1%} -> {out}")
    return TrainResult(out, model.cpu(), report)
