"""`embforge encode` past one process: a run killed with kill -9 resumes by encoding only the shards it lacks,
and two torchrun processes (gloo, CPU) share the shards out and write what one process writes.

Every run is a subprocess with one thread (OMP_NUM_THREADS=1), so the same shard meets the same arithmetic
whichever process encodes it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_distributed import free_port
from tiny import WORDS

from embforge.encoding import EncodeConfig, encode_file

SRC = str(Path(__file__).resolve().parents[1] / "src")
SHARD = 3
TEXTS = [" ".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(2 + i % 5)) for i in range(20)]  # 7 shards
# The shard writer, made to die like kill -9 once rank KILL_RANK has written KILL_AFTER shards.
KILLER = """
import os, sys
import embforge.store.encode as store
from embforge.cli import main
write, written = store._write_shard, []
def dying_write(*args, **kwargs):
    write(*args, **kwargs)
    written.append(1)
    if os.environ.get("RANK", "0") == os.environ["KILL_RANK"] and len(written) == int(os.environ["KILL_AFTER"]):
        os._exit(9)
store._write_shard = dying_write
sys.exit(main(sys.argv[1:]))
"""


def env(tmp_path, **extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "EMBFORGE_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), **extra}


def encode(tmp_path, model, out, store, *, procs=1, kill_rank=None, kill_after=1):
    args = ["encode", "--model", str(model), "--input", str(tmp_path / "in.jsonl"), "--output", str(out),
            "--shard_size", str(SHARD), "--batch_size", "2", "--store_dir", str(store)]
    if kill_rank is None:
        entry = ["-m", "embforge.cli"]
    else:
        (tmp_path / "killer.py").write_text(KILLER)
        entry = [str(tmp_path / "killer.py")]
    launcher = (["-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr", "127.0.0.1",
                 "--master_port", str(free_port())] if procs > 1 else [])
    if procs == 1 and kill_rank is not None:
        entry = ["-c", KILLER]
    extra = {} if kill_rank is None else {"KILL_RANK": str(kill_rank), "KILL_AFTER": str(kill_after)}
    return subprocess.run([sys.executable, *launcher, *entry, *args], env=env(tmp_path, **extra),
                          capture_output=True, text=True, timeout=240)


def stats(proc) -> tuple[int, int, int]:
    """(shards, encoded, reused) as rank 0 printed them."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.findall(r"\((\d+) shards: (\d+) encoded, (\d+) reused\)", proc.stdout)
    assert len(found) == 1, proc.stdout  # one line: only rank 0 prints
    return tuple(int(v) for v in found[0])


def verified_shards(store: Path) -> int:
    return sum(1 for p in store.rglob("*.json") if not p.name.startswith("manifest-"))


@pytest.fixture(scope="module")
def reference(tiny_bert_nodrop, tmp_path_factory):
    """One uninterrupted process (this one, on one thread like the subprocesses): the output to reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    write_source(tmp)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encode_file(EncodeConfig(input_file=str(tmp / "in.jsonl"), output_file=str(tmp / "out.npy"),
                                 model_name_or_path=str(tiny_bert_nodrop), shard_size=SHARD, batch_size=2,
                                 store_dir=str(tmp / "store")))
    finally:
        torch.set_num_threads(threads)
    return np.load(tmp / "out.npy")


def write_source(folder: Path) -> None:
    (folder / "in.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                             for i, t in enumerate(TEXTS)))


@pytest.fixture
def source(tmp_path):
    write_source(tmp_path)


def test_a_killed_run_resumes_with_the_missing_shards_only(tiny_bert_nodrop, tmp_path, source, reference):
    killed = encode(tmp_path, tiny_bert_nodrop, tmp_path / "out.npz", tmp_path / "store", kill_rank=0, kill_after=2)
    assert killed.returncode == 9 and not (tmp_path / "out.npz").exists()
    assert verified_shards(tmp_path / "store") == 2
    assert stats(encode(tmp_path, tiny_bert_nodrop, tmp_path / "out.npz", tmp_path / "store")) == (7, 5, 2)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["embeddings"], reference)


def test_two_processes_killed_on_one_rank_resume_and_write_what_one_process_writes(tiny_bert_nodrop, tmp_path,
                                                                                    source, reference):
    """Rank 1 dies after its first shard (torchrun then stops rank 0); two processes rerun: only the shards
    without a verified entry are encoded, shared out between the ranks, and the output is one process's."""
    killed = encode(tmp_path, tiny_bert_nodrop, tmp_path / "out.npz", tmp_path / "store", procs=2, kill_rank=1)
    assert killed.returncode != 0 and not (tmp_path / "out.npz").exists()
    done = verified_shards(tmp_path / "store")
    assert 1 <= done < 7, done
    assert stats(encode(tmp_path, tiny_bert_nodrop, tmp_path / "out.npz", tmp_path / "store", procs=2)) == (
        7, 7 - done, done)
    data = np.load(tmp_path / "out.npz")
    assert list(data["ids"]) == [f"d{i}" for i in range(20)]
    np.testing.assert_allclose(data["embeddings"], reference, atol=1e-6)
