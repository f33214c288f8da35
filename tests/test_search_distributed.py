"""Exact and index search under torchrun with 2 processes: each rank reads only its shards, and every
rank returns exactly the one-process answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from embforge.store import EmbeddingStore, Shard
from embforge.store.index import index_search
from embforge.store.search import search

SIZES = (37, 5, 60, 3, 21)  # rank 1 owns 8 rows < K: its lists are padded before the merge
K = 10
TIED = [3, 20, 38, 41, 50, 60, 90, 103, 104, 110, 120, 125]

WORKER = '''
import sys
from pathlib import Path
import numpy as np
from embforge.store import EmbeddingStore, Shard, ranks
from embforge.store.index import index_search
from embforge.store.search import search

root = Path(sys.argv[1])
sizes = [int(s) for s in sys.argv[2].split(",")]
starts = np.cumsum([0, *sizes])
store = EmbeddingStore(root, tuple(Shard(int(starts[i]), n, root / f"s{i}.npy", f"s{i}") for i, n in enumerate(sizes)),
                       int(np.load(root / "queries.npy").shape[1]))
read = []
blocks = EmbeddingStore.blocks
EmbeddingStore.blocks = lambda self, rows=65536, shards=None: (  # record which shards this rank reads
    read.extend(range(len(self.shards)) if shards is None else shards), blocks(self, rows, shards))[1]
rank, world = ranks.join()
queries, tie = np.load(root / "queries.npy"), np.load(root / "tie.npy")
exact = search(queries, store, int(sys.argv[3]), tie_rank=tie, query_block=4, doc_block=16)
flat = index_search(queries[1:], store, int(sys.argv[3]), "Flat", query_block=4)  # no ties: faiss picks any
np.savez(root / f"rank{rank}.npz", rows=exact.rows, scores=exact.scores, flat_rows=flat.rows,
         flat_scores=flat.scores, read=np.unique(read))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_search_their_shards_and_return_the_one_process_answer(tmp_path):
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((sum(SIZES), 12)).astype(np.float32)
    queries = rng.standard_normal((11, 12)).astype(np.float32)
    # query 0 = e0 scores the TIED rows (first coordinate 5, on both ranks) exactly 5: a tie across the 10th place
    queries[0] = np.eye(12)[0]
    docs[TIED, 0] = 5.0
    tie = rng.permutation(sum(SIZES))
    np.save(tmp_path / "queries.npy", queries)
    np.save(tmp_path / "tie.npy", tie)
    start = 0
    for i, n in enumerate(SIZES):
        np.save(tmp_path / f"s{i}.npy", docs[start:start + n])
        start += n
    (tmp_path / "worker.py").write_text(WORKER)

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(tmp_path / "worker.py"), str(tmp_path),
           ",".join(map(str, SIZES)), str(K)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    starts = np.cumsum([0, *SIZES])
    store = EmbeddingStore(tmp_path, tuple(Shard(int(starts[i]), n, tmp_path / f"s{i}.npy", f"s{i}")
                                           for i, n in enumerate(SIZES)), 12)
    exact = search(queries, store, K, tie_rank=tie, query_block=4, doc_block=16)
    flat = index_search(queries[1:], store, K, "Flat", query_block=4)
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert r0["read"].tolist() == [0, 2, 4] and r1["read"].tolist() == [1, 3]
    assert exact.rows[0].tolist() == sorted(TIED, key=tie.__getitem__)[:K]
    for got in (r0, r1):
        np.testing.assert_array_equal(got["rows"], exact.rows)
        np.testing.assert_array_equal(got["scores"], exact.scores)
        np.testing.assert_array_equal(got["flat_rows"], flat.rows)
        np.testing.assert_array_equal(got["flat_scores"], flat.scores)
