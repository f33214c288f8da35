"""FSDP2 through the Trainer's own flags, on CPU with gloo: 2 sharded processes train exactly like DDP.

DDP equals one process holding the whole batch (test_distributed.py), so FSDP equal to DDP closes the
chain. The report's sharding summary proves the weights really were split (a silent fallback to DDP
trains to the very same weights), and the saved folder must be a plain, unsharded model folder.
"""

import json
import os
import subprocess
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from test_distributed import args, free_port
from test_train import write_data
from tiny import SENTENCES

from embforge.model import Encoder

FSDP = ["--fsdp", "full_shard auto_wrap", "--fsdp_config", json.dumps({"version": 2})]


def torchrun(model, data, out, extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "embforge.cli", *args(model, data, out, 2, extra),
           "--ddp_backend", "gloo"]
    # One thread per process on both sides, so float reductions run in the same order.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "train_report.json").read_text())


def test_fsdp_two_processes_equal_ddp_and_save_a_plain_model(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBFORGE_CACHE", str(tmp_path / "cache"))
    data = write_data(tmp_path / "train.jsonl", n=8)
    ddp_report = torchrun(tiny_llama, data, tmp_path / "ddp", [])
    # A checkpoint at the last step too: the Trainer's own FSDP save path, into an Encoder folder.
    fsdp_report = torchrun(tiny_llama, data, tmp_path / "fsdp",
                           [*FSDP, "--save_strategy", "steps", "--save_steps", "2"])

    # Sharded on each rank: both decoder layers and the root are FSDP units, each rank holds about half.
    assert "fsdp" not in ddp_report
    assert "fsdp" in fsdp_report, "--fsdp trained without FSDP (a silent fallback to DDP)"
    shards = fsdp_report["fsdp"]
    assert shards["units"] == 3, shards
    assert len(shards["held_per_rank"]) == 2 and sum(shards["held_per_rank"]) == shards["parameters"], shards
    assert max(shards["held_per_rank"]) < 0.6 * shards["parameters"], shards

    ddp = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    fsdp = load_file(str(tmp_path / "fsdp" / "model.safetensors"))
    base = load_file(str(tiny_llama / "model.safetensors"))
    assert set(fsdp) == set(ddp) == set(base)
    assert all(fsdp[k].shape == base[k].shape for k in base), "the saved weights are shards, not the full model"
    moved = max((ddp[k] - base[k]).abs().max().item() for k in ddp)
    assert moved > 1e-3, "training did not change the weights; the comparison would be vacuous"
    for key in ddp:
        assert torch.allclose(fsdp[key], ddp[key], atol=1e-5), (key, (fsdp[key] - ddp[key]).abs().max())
    checkpoint = load_file(str(tmp_path / "fsdp" / "checkpoint-2" / "model.safetensors"))
    assert all(torch.equal(checkpoint[k], fsdp[k]) for k in fsdp)

    # A normal folder: the architecture named without FSDP's class prefix, and the same vectors as DDP's.
    assert json.loads((tmp_path / "fsdp" / "config.json").read_text())["architectures"] == ["LlamaModel"]
    got = Encoder.from_pretrained(tmp_path / "fsdp", device="cpu").encode(SENTENCES)
    want = Encoder.from_pretrained(tmp_path / "ddp", device="cpu").encode(SENTENCES)
    np.testing.assert_allclose(got, want, atol=1e-5)
