"""CSR training throughput (embeddings/s) on CPU: embforge vs the reference's training step in plain torch.

    python bench/csr.py [--rows 200000] [--steps 20] [--batch_size 4096] [--hidden_size 1536] [--topk 32]

Data: 200k x 384 rows resampled (with small noise, re-normalised) from the real all-MiniLM-L6-v2
embeddings of SciFact documents, written to a temporary uncompressed .npz and read memory-mapped,
as ``embforge csr train`` reads it. There is no installed CSR package to compare with, so the peer is
the reference scripts' step transcribed minimally into torch in this file (tied decoder, dense
decoding of the full latent vector, a second full forward pass for 4k, AuxK), run on the same
batches in the same process. Both use the same losses' weights, batch size, k, auxk and Adam.
Prints embeddings/s of each and the ratio embforge / reference.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import SCIFACT

from embforge.csr.config import TrainConfig
from embforge.csr.data import load_train_data, rows
from embforge.csr.model import CSRModel, CSRSettings
from embforge.csr.training import step_losses


class ReferenceCSR(torch.nn.Module):
    """The reference's model, reduced to what a training step needs (tied decoder, dense latents)."""

    def __init__(self, d: int, h: int, dead_threshold: int = 30):
        super().__init__()
        self.pre_bias = torch.nn.Parameter(torch.zeros(d))
        self.encoder = torch.nn.Linear(d, h, bias=False)
        self.latent_bias = torch.nn.Parameter(torch.zeros(h))
        self.register_buffer("stats_last_nonzero", torch.zeros(h, dtype=torch.long))
        self.dead_threshold = dead_threshold

    def forward(self, x: torch.Tensor, k: int, auxk: int):
        pre = F.linear(x - self.pre_bias, self.encoder.weight, self.latent_bias)
        top = torch.topk(pre, k, dim=-1)
        z = F.relu(torch.zeros_like(pre).scatter(-1, top.indices, top.values))
        tmp = torch.zeros_like(self.stats_last_nonzero)
        tmp.scatter_add_(0, top.indices.reshape(-1), (top.values > 1e-5).to(tmp.dtype).reshape(-1))
        self.stats_last_nonzero *= 1 - tmp.clamp(max=1)
        self.stats_last_nonzero += 1
        masked = pre * (self.stats_last_nonzero > self.dead_threshold)
        aux = torch.topk(masked, auxk, dim=-1)
        z_aux = F.relu(torch.zeros_like(pre).scatter(-1, aux.indices, aux.values))
        decode = lambda lat: F.linear(lat, self.encoder.weight.t()) + self.pre_bias  # noqa: E731
        return z, decode(z), decode(z_aux)


def reference_step(model: ReferenceCSR, opt, x: torch.Tensor, k: int, auxk: int, auxk_coef: float) -> float:
    _, recon, recon_aux = model(x, k, auxk)
    _, recon_4k, _ = model(x, 4 * k, auxk)
    loss_k = F.mse_loss(recon, x)
    loss_4k = F.mse_loss(recon_4k, x)
    target = x - recon.detach() + model.pre_bias.detach()
    mu = target.mean(dim=0, keepdim=True).expand_as(target)
    loss_aux = (F.mse_loss(recon_aux, target) / F.mse_loss(mu, target)).nan_to_num(0)
    loss = loss_k + 0.125 * loss_4k + auxk_coef * loss_aux
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def real_embeddings(n_docs: int | None) -> np.ndarray:
    """The default model's embeddings of SciFact documents; the whole corpus (the default) is the same
    text list that ``embforge eval`` encodes, so its embedding cache usually has it already."""
    from embforge import Encoder
    from embforge.cache import encode_cached
    from embforge.data.beir import read_corpus

    encoder = Encoder.from_pretrained(None, device="cpu")
    texts = list(read_corpus(SCIFACT / "corpus.jsonl").values())
    emb, _ = encode_cached(encoder, texts[:n_docs] if n_docs else texts, batch_size=64, show_progress=True)
    return emb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--real_docs", type=int, default=None, help="Resample from the first N SciFact documents "
                                                                   "(default: all 5183).")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per implementation (after 2 warm-up).")
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--hidden_size", type=int, default=1536)
    parser.add_argument("--topk", type=int, default=32)
    parser.add_argument("--auxk", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    real = real_embeddings(args.real_docs)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "emb.npz"
        data = real[rng.integers(0, len(real), args.rows)] + rng.normal(scale=0.02, size=(args.rows, real.shape[1]))
        data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)
        np.savez(path, embeddings=data)
        del data
        train = load_train_data(path)
        d = train.dim
        batches = [rng.integers(0, args.rows, args.batch_size) for _ in range(args.steps + 2)]
        cfg = TrainConfig(topk=args.topk, auxk=args.auxk, hidden_size=args.hidden_size, batch_size=args.batch_size)
        torch.manual_seed(0)
        ours = CSRModel(CSRSettings(d, args.hidden_size, args.topk, args.auxk))
        ours.train()
        opt = torch.optim.Adam(ours.parameters(), lr=4e-4, eps=6.25e-10)
        ref = ReferenceCSR(d, args.hidden_size)
        ref_opt = torch.optim.Adam(ref.parameters(), lr=4e-4, eps=6.25e-10)

        def run_ours(idx):
            x = torch.from_numpy(rows(train.embeddings.embeddings, idx))
            parts = step_losses(ours, x, args.topk, cfg)
            opt.zero_grad()
            parts["total"].backward()
            opt.step()
            ours.normalize_decoder()

        def run_ref(idx):
            x = torch.from_numpy(rows(train.embeddings.embeddings, idx))
            reference_step(ref, ref_opt, x, args.topk, args.auxk, 1 / 32)

        times = {"embforge": 0.0, "reference": 0.0}
        for i, idx in enumerate(batches):  # interleaved, so both see the same machine load
            for name, fn in (("embforge", run_ours), ("reference", run_ref)):
                t = time.perf_counter()
                fn(idx)
                if i >= 2:
                    times[name] += time.perf_counter() - t
    n = args.steps * args.batch_size
    ours_rate, ref_rate = n / times["embforge"], n / times["reference"]
    print(f"CSR training, {args.rows} x {d} resampled real embeddings, hidden {args.hidden_size}, k={args.topk}, "
          f"auxk={args.auxk}, batch {args.batch_size}, {args.steps} timed steps, {torch.get_num_threads()} threads")
    print(f"  embforge csr:          {ours_rate:10.0f} embeddings/s")
    print(f"  reference step (torch): {ref_rate:10.0f} embeddings/s")
    print(f"  ratio embforge / reference: {ours_rate / ref_rate:.2f}x")


if __name__ == "__main__":
    main()
