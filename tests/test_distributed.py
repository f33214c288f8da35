"""Two processes under torchrun (gloo, CPU) must train exactly like one process holding both halves."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_train import write_data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args(model, data, out, batch, extra):
    return ["train", "--model_name_or_path", str(model), "--train_data", str(data), "--output_dir", str(out),
            "--per_device_train_batch_size", str(batch), "--max_steps", "2", "--optim", "sgd",
            "--learning_rate", "0.5", "--negatives_cross_device", "--train_group_size", "2",
            "--temperature", "0.05", "--query_max_len", "16", "--passage_max_len", "16", "--report_to", "none",
            "--use_cpu", "--save_strategy", "no", "--disable_tqdm", "true", *extra]


@pytest.mark.parametrize("extra", [[], ["--gradcache", "--chunk_size", "1", "--symmetric"],
                                   ["--teacher_scores", "kd", "--kd_weight", "3"]],
                         ids=["cross-device", "gradcache+cross-device+symmetric", "teacher-scores+cross-device"])
def test_two_processes_equal_one_process_on_the_full_batch(tiny_bert_nodrop, tmp_path, extra):
    data = write_data(tmp_path / "train.jsonl", n=8)
    if "--teacher_scores" in extra:  # each process's queries with their own groups' scores (query_offset)
        records = [json.loads(line) for line in data.read_text().splitlines()]
        data.write_text("".join(json.dumps({**r, "pos_scores": [2.0, 1.0], "neg_scores": [i % 3, -1.0, 0.5 * i]})
                                + "\n" for i, r in enumerate(records)))
    # One thread per process on both sides, so float reductions run in the same order.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    single_cmd = [sys.executable, "-m", "embforge.cli", *args(tiny_bert_nodrop, data, tmp_path / "single", 4, extra)]
    proc = subprocess.run(single_cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "embforge.cli",
           *args(tiny_bert_nodrop, data, tmp_path / "ddp", 2, extra), "--ddp_backend", "gloo"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    single = load_file(str(tmp_path / "single" / "model.safetensors"))
    ddp = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    base = load_file(str(tiny_bert_nodrop / "model.safetensors"))
    moved = max((single[k] - base[k]).abs().max().item() for k in single)
    assert moved > 1e-3, "training did not change the weights; the comparison would be vacuous"
    for key in single:
        assert torch.allclose(single[key], ddp[key], atol=1e-5), (key, (single[key] - ddp[key]).abs().max())
