"""Mining and encoding at scale: embforge's store against sentence-transformers' ``mine_hard_negatives``.

    python bench/scale.py [--passages 1000000] [--queries 100000] [--index IVF4096,Flat] [--nprobe 64]
                          [--skip_st] [--skip_faiss_st] [--skip_index] [--skip_resume]

Data: all-MiniLM-L6-v2 embeddings of a few hundred SciFact documents (max length 128, through embforge's
embedding cache), resampled with noise and re-normalised (as bench/csr.py does). Passage ``i`` is the text
"p<i>"; query ``j`` ("q<j>") is a noisy copy of one passage, its positive. The passage and query vectors
are written straight into an embedding store (65536-row .npy shards, with their checksums and text
hashes) by a stand-in encoder that serves precomputed rows, so neither side pays for a model: the
mining figures are search + sampling + the bookkeeping around them.

1. Mining, exact, k = range 0-200, 15 negatives per query, ``sampling="top"`` on both sides (so the two
   outputs can be compared): embforge's ``mine_negatives`` over the store against ST's
   ``mine_hard_negatives`` with a stand-in model serving the same vectors (``use_faiss`` False and True).
   Each side runs in its own process; its wall time (the call only) and peak memory are its own:
   VmHWM (peak RSS, memmapped store pages included) and the peak of RssAnon (sampled; what the process
   owns, the page cache of the store not counted).
2. ``--index``: a FAISS index over the same store (train + add + search) against exact search at k=100,
   and its recall@100.
3. Kill-and-resume: ``embforge encode`` with a small random BERT over N SciFact sentences, SIGKILLed
   mid-way (half a shard after half the shards are complete), then rerun; the work redone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import AnonPeak, peak_memory, scifact_docs, scifact_embeddings, write_tiny_bert

SHARD = 65536
SEED = 0


class Precomputed:
    """A stand-in encoder: "p<i>" / "q<j>" -> row i of ``passages`` / row j of ``queries`` (any objects
    with ``rows(indices)``), so the store is written, and verified, as if a model had encoded them."""

    name_or_path = "bench-scale-standin"
    config = "bench/scale.py stand-in: precomputed rows"  # repr() of it enters the store's fingerprint

    def __init__(self, passages, queries, dim: int):
        self.passages, self.queries, self.embedding_dim = passages, queries, dim

    def encode(self, texts, batch_size=32, is_query=False, dim=None, show_progress=None):
        texts = [texts] if isinstance(texts, str) else texts
        idx = np.fromiter((int(t[1:]) for t in texts), dtype=np.int64, count=len(texts))
        return (self.queries if texts[0][0] == "q" else self.passages).rows(idx)

    def state_dict(self):
        return {}


class Resampled:
    """Rows of a synthetic corpus, generated block by block (deterministically) from real embeddings."""

    def __init__(self, real: np.ndarray, noise: float, seed: int):
        self.real, self.noise, self.seed = real, noise, seed

    def block(self, b: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, b])
        x = self.real[rng.integers(0, len(self.real), SHARD)] + rng.normal(scale=self.noise,
                                                                          size=(SHARD, self.real.shape[1]))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((idx.shape[0], self.real.shape[1]), dtype=np.float32)
        for b in np.unique(idx // SHARD):
            sel = np.flatnonzero(idx // SHARD == b)
            out[sel] = self.block(int(b))[idx[sel] - b * SHARD]
        return out


class Matrix:
    def __init__(self, m: np.ndarray):
        self.m = m

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.m[idx], dtype=np.float32)


def passage_texts(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


def query_texts(n: int) -> list[str]:
    return [f"q{j}" for j in range(n)]


# ---------------------------------------------------------------------------------------------- data


def prepare(args, tmp: Path) -> dict:
    """Write the passage and query stores; returns the spec the child processes read."""
    from embforge.store.encode import encode_store
    from embforge.store.fingerprint import model_fingerprint

    real = scifact_embeddings(args.real_docs, max_length=128)
    gen = Resampled(real, args.noise, SEED)
    pos = np.random.default_rng(SEED + 1).choice(args.passages, args.queries, replace=False)
    root = tmp / "store"
    fp = model_fingerprint(Precomputed(None, None, real.shape[1]))
    t = time.perf_counter()
    p_store, _ = encode_store(Precomputed(gen, None, real.shape[1]), passage_texts(args.passages), shard_size=SHARD,
                              root=root, fingerprint=fp, show_progress=False)
    rng = np.random.default_rng(SEED + 2)
    q = p_store.rows(pos) + rng.normal(scale=args.query_noise, size=(args.queries, real.shape[1]))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    np.save(tmp / "queries.npy", q)
    np.save(tmp / "positives.npy", pos)
    encode_store(Precomputed(None, Matrix(q), real.shape[1]), query_texts(args.queries), is_query=True,
                 shard_size=SHARD, root=root, fingerprint=fp, show_progress=False)
    spec = {"root": str(root), "fingerprint": fp, "passages": args.passages, "queries": args.queries,
            "dim": int(real.shape[1]), "tmp": str(tmp), "shards": [str(s.path) for s in p_store.shards],
            "negatives": args.negatives, "range": [0, args.k], "sampling": args.sampling,
            "st_batch": args.st_batch, "index": args.index, "nprobe": args.nprobe, "recall_k": args.recall_k}
    print(f"data: {args.passages} passages x {real.shape[1]} resampled from {len(real)} real SciFact embeddings "
          f"(noise {args.noise}), {args.queries} queries (noise {args.query_noise} around their positive); "
          f"stores written in {time.perf_counter() - t:.0f} s", flush=True)
    return spec


def open_store(spec: dict):
    """The passage store as written (the shards' files as listed; no encoder needed)."""
    from embforge.store.layout import EmbeddingStore, Shard

    shards, start = [], 0
    for path in map(Path, spec["shards"]):
        rows = int(np.load(path, mmap_mode="r").shape[0])
        shards.append(Shard(start, rows, path, path.stem, hashes=path.with_suffix(".hashes.npy")))
        start += rows
    return EmbeddingStore(Path(spec["root"]), tuple(shards), spec["dim"])


# ---------------------------------------------------------------------------------------------- children


def child_embforge(spec: dict) -> dict:
    import inspect

    import torch  # noqa: F401  (imports before the clock, as on the ST side)

    from embforge.mining import mine_negatives

    store = open_store(spec)
    q = np.load(Path(spec["tmp"]) / "queries.npy", mmap_mode="r")
    pos = np.load(Path(spec["tmp"]) / "positives.npy")
    records = [{"query": f"q{j}", "pos": [f"p{int(p)}"]} for j, p in enumerate(pos)]
    pool = passage_texts(spec["passages"])
    encoder = Precomputed(store, Matrix(q), spec["dim"])
    n, (lo, hi) = spec["negatives"], spec["range"]
    if "store_dir" in inspect.signature(mine_negatives).parameters:  # mining over the store
        t0 = time.perf_counter()
        with AnonPeak() as anon:
            out, stats = mine_negatives(encoder, records, pool, range_for_sampling=(lo, hi), negative_number=n,
                                        sampling=spec["sampling"], shard_size=SHARD, store_dir=spec["root"])
        wall = time.perf_counter() - t0
        negs = np.array([[int(t[1:]) for t in r["neg"]] for r in out], dtype=np.int64)
        detail = {**{k: round(v, 2) for k, v in stats.timings.items()},
                  "encoded_shards": getattr(stats, "encoded_shards", None), "path": "mine_negatives"}
    else:  # mining on this checkout predates the store: time its search and a sampling of the same rule
        from embforge.store.search import search

        t0 = time.perf_counter()
        with AnonPeak() as anon:
            top = search(np.asarray(q), store, hi)
            t1 = time.perf_counter()
            negs = sample(top.rows, pos, lo, n, spec["sampling"])
        wall = time.perf_counter() - t0
        detail = {"search_s": round(t1 - t0, 2), "sample_s": round(wall - (t1 - t0), 2), "path": "search+sample"}
    np.save(Path(spec["tmp"]) / "neg-embforge.npy", negs)
    return {"wall_s": wall, "anon_gb": anon.peak, **peak_memory(), "detail": detail}


def sample(rows: np.ndarray, pos: np.ndarray, lo: int, n: int, how: str) -> np.ndarray:
    """The mining rule on precomputed top-k rows: the band [lo:], the positive removed, n taken."""
    import random

    rng, out = random.Random(SEED), np.empty((rows.shape[0], n), dtype=np.int64)
    for j in range(rows.shape[0]):
        band = [int(i) for i in rows[j, lo:] if i != pos[j]]
        out[j] = band[:n] if how == "top" else rng.sample(band, n)
    return out


class StandInST:
    """What ``mine_hard_negatives`` uses of a SentenceTransformer, serving precomputed vectors: encoding
    returns the rows in memory (as a real encode would), similarity is ST's cosine."""

    def __init__(self, store, queries: np.ndarray, dim: int):
        import torch
        from sentence_transformers.util import cos_sim, pairwise_cos_sim

        self.store, self.q, self.dim = store, queries, dim
        self.device = torch.device("cpu")
        self.similarity, self.similarity_pairwise = cos_sim, pairwise_cos_sim

    def get_embedding_dimension(self) -> int:
        return self.dim

    def _rows(self, texts, source) -> np.ndarray:
        return source(np.fromiter((int(t[1:]) for t in texts), dtype=np.int64, count=len(texts)))

    def encode_document(self, texts, **_):
        return self._rows(texts, self.store.rows)

    def encode_query(self, texts, **_):
        return self._rows(texts, lambda i: np.asarray(self.q[i], dtype=np.float32))


def child_st(spec: dict, use_faiss: bool) -> dict:
    import datasets  # noqa: F401  (imports before the clock)
    import faiss  # noqa: F401
    import torch  # noqa: F401
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    store = open_store(spec)
    q = np.load(Path(spec["tmp"]) / "queries.npy", mmap_mode="r")
    pos = np.load(Path(spec["tmp"]) / "positives.npy")
    model = StandInST(store, q, spec["dim"])
    data = Dataset.from_dict({"query": query_texts(len(pos)), "positive": [f"p{int(p)}" for p in pos]})
    corpus = passage_texts(spec["passages"])
    n, (lo, hi) = spec["negatives"], spec["range"]
    t0 = time.perf_counter()
    with AnonPeak() as anon:
        mined = mine_hard_negatives(data, model, corpus=corpus, range_min=lo, range_max=hi, num_negatives=n,
                                    sampling_strategy=spec["sampling"], output_format="n-tuple",
                                    faiss_batch_size=spec["st_batch"], use_faiss=use_faiss, verbose=False)
    wall = time.perf_counter() - t0
    by_query = {row["query"]: [int(row[f"negative_{i}"][1:]) for i in range(1, n + 1)] for row in mined}
    negs = np.array([by_query.get(f"q{j}", [-1] * n) for j in range(len(pos))], dtype=np.int64)
    np.save(Path(spec["tmp"]) / f"neg-st-{int(use_faiss)}.npy", negs)
    return {"wall_s": wall, "anon_gb": anon.peak, **peak_memory(), "detail": {"rows_out": len(mined)}}


def child_index(spec: dict) -> dict:
    from embforge.store.index import index_search, recall_at_k
    from embforge.store.search import search

    store = open_store(spec)
    q = np.load(Path(spec["tmp"]) / "queries.npy")
    k = spec["recall_k"]
    t0 = time.perf_counter()
    exact = search(q, store, k)
    t1 = time.perf_counter()
    approx = index_search(q, store, k, spec["index"], nprobe=spec["nprobe"])
    t2 = time.perf_counter()
    return {"exact_s": t1 - t0, "index_s": t2 - t1, "recall": recall_at_k(approx, exact), **peak_memory()}


def child_env() -> dict[str, str]:
    """The environment of a child process: it imports the embforge this process imported."""
    import embforge

    src = str(Path(embforge.__file__).resolve().parents[1])
    return {**os.environ, "TQDM_DISABLE": "1",
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def run_child(role: str, spec_path: Path) -> dict | str:
    """Run one side in a fresh process (its memory is its own); its result, or why it failed."""
    env = child_env()
    proc = subprocess.run([sys.executable, __file__, "--_child", role, "--_spec", str(spec_path)],
                          capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}"
        tail = (proc.stderr.strip().splitlines() or [""])[-1][:200]
        return f"failed: {why}: {tail}"
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------- report


def overlap(tmp: Path, a: str, b: str) -> str:
    x, y = np.load(tmp / f"neg-{a}.npy"), np.load(tmp / f"neg-{b}.npy")
    same = sum(len(set(r) & set(s)) for r, s in zip(x.tolist(), y.tolist())) / x.size
    return f"{same:.4f} of negatives shared, {int((x == y).all(axis=1).sum())}/{len(x)} lists identical"


def report_mining(spec: dict, args, tmp: Path, spec_path: Path) -> None:
    nq, npass = spec["queries"], spec["passages"]
    print(f"\n[mining] {nq} queries x {npass} passages, exact, range {spec['range'][0]}-{spec['range'][1]}, "
          f"{spec['negatives']} negatives, sampling {spec['sampling']}; each side in its own process", flush=True)
    ours = run_child("embforge", spec_path)
    sides = [("embforge mine_negatives", ours)]
    if not args.skip_st:
        for use_faiss in (False, True):
            if use_faiss and args.skip_faiss_st:
                continue
            sides.append((f"ST mine_hard_negatives use_faiss={use_faiss}", run_child(f"st{int(use_faiss)}", spec_path)))
    print(f"  {'':44} {'wall s':>8} {'peak RSS GB':>12} {'peak anon GB':>13}")
    for name, r in sides:
        if isinstance(r, str):
            print(f"  {name:44} {r}")
        else:
            print(f"  {name:44} {r['wall_s']:8.1f} {r['VmHWM']:12.2f} {r['anon_gb']:13.2f}   {r['detail']}")
    if isinstance(ours, str):
        return
    for name, r in sides[1:]:
        if isinstance(r, str):
            continue
        tag = "st-1" if "True" in name else "st-0"
        print(f"  vs {name}: speed-up {r['wall_s'] / ours['wall_s']:.2f}x, peak RSS embforge/ST "
              f"{ours['VmHWM'] / r['VmHWM']:.2f}, peak anon embforge/ST {ours['anon_gb'] / r['anon_gb']:.2f}; "
              f"{overlap(tmp, 'embforge', tag)}")
    store_gb = spec["passages"] * spec["dim"] * 4 / 1e9
    print(f"  target: embforge peak RSS <= 2 GB + store ({2 + store_gb:.2f} GB): "
          f"{'met' if ours['VmHWM'] <= 2 + store_gb else 'NOT met'} ({ours['VmHWM']:.2f} GB)")


def report_index(spec: dict, spec_path: Path) -> None:
    print(f"\n[index] {spec['index']} nprobe {spec['nprobe']} vs exact, k={spec['recall_k']}, "
          f"{spec['queries']} queries", flush=True)
    r = run_child("index", spec_path)
    if isinstance(r, str):
        print(f"  {r}")
        return
    print(f"  exact search: {r['exact_s']:.1f} s   {spec['index']} (train+add+search): {r['index_s']:.1f} s   "
          f"speed-up {r['exact_s'] / r['index_s']:.2f}x   recall@{spec['recall_k']} {r['recall']:.4f}   "
          f"(target: recall >= 0.99 at >= 5x)")


def report_facts(spec: dict, args) -> None:
    on_disk = sum(Path(p).stat().st_size for p in spec["shards"])
    nq, npass, d = spec["queries"], spec["passages"], spec["dim"]
    q_blocks, d_blocks = -(-nq // 1024), sum(-(-min(SHARD, npass - s) // 65536) for s in range(0, npass, SHARD))
    print(f"\n[facts] corpus store {on_disk / 1e9:.2f} GB on disk ({len(spec['shards'])} shards of up to {SHARD} rows), "
          f"queries {nq * d * 4 / 1e9:.2f} GB; k={spec['range'][1]}; exact search = {2 * nq * npass * d / 1e12:.1f} "
          f"TFLOP in {q_blocks} x {d_blocks} (query block 1024 x doc block 65536) blocks; "
          f"ST's similarity chunk {spec['st_batch']} x {npass} float32 = {spec['st_batch'] * npass * 4 / 1e9:.1f} GB")


# ---------------------------------------------------------------------------------------------- resume


def resume(args, tmp: Path) -> None:
    n, size = args.resume_texts, args.resume_shard
    print(f"\n[kill-and-resume] embforge encode, small random BERT, {n} SciFact sentences, shard size {size}",
          flush=True)
    sentences = [s.strip() for doc in scifact_docs(6000) for s in doc.split(". ") if s.strip()]
    texts = tmp / "sentences.txt"
    texts.write_text("".join(f"{sentences[i % len(sentences)]} #{i}\n" for i in range(n)), encoding="utf-8")
    model = write_tiny_bert(tmp / "tiny-bert")
    store = tmp / "resume-store"
    cmd = [sys.executable, "-m", "embforge.cli", "encode", "--input_file", str(texts), "--model", str(model),
           "--shard_size", str(size), "--store_dir", str(store), "--batch_size", "64"]
    env = {**child_env(), "EMBFORGE_CACHE": str(tmp / "cache")}
    total = -(-n // size)
    kill_after = args.kill_after or total // 2

    def done() -> dict[Path, float]:
        return {p: p.stat().st_mtime for p in store.glob("*/*.json") if not p.name.startswith("manifest")}

    t0 = time.time()
    proc = subprocess.Popen(cmd + ["--output_file", str(tmp / "killed.npy")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and len(done()) < kill_after:
        time.sleep(0.02)
    if proc.poll() is not None:
        print(f"  the run ended before {kill_after} shards were complete: {proc.stderr.read()[-300:]}")
        return
    times = sorted(done().values())
    per_shard = float(np.median(np.diff(times))) if len(times) > 1 else times[-1] - t0  # after model loading
    time.sleep(per_shard / 2)  # mid-shard: the worst case for lost work
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t_kill = time.time()
    kept_after = done()  # a json renamed into place in the last instant counts too
    kept_rows = sum(json.loads(p.read_text())["rows"] for p in kept_after)
    t1 = time.time()
    rerun = subprocess.run(cmd + ["--output_file", str(tmp / "resumed.npy")], env=env, capture_output=True, text=True)
    rerun_s = time.time() - t1
    m = re.search(r"\((\d+) shards: (\d+) encoded, (\d+) reused\)", rerun.stdout)
    if rerun.returncode or not m:
        print(f"  rerun failed: {rerun.stderr[-300:]}")
        return
    shards, encoded, reused = map(int, m.groups())
    rows_rerun = n - kept_rows
    partial = min(size, size * (t_kill - max(kept_after.values())) / per_shard)  # at the killed run's pace
    redone = (rows_rerun + kept_rows + partial) / n - 1
    again = subprocess.run(cmd + ["--output_file", str(tmp / "again.npy")], env=env, capture_output=True, text=True)
    m2 = re.search(r"\((\d+) shards: (\d+) encoded", again.stdout)
    same = np.array_equal(np.load(tmp / "resumed.npy"), np.load(tmp / "again.npy"))
    print(f"  killed after {len(kept_after)}/{total} shards ({kept_rows} rows kept); rerun: {encoded} encoded, "
          f"{reused} reused of {shards} shards in {rerun_s:.1f} s")
    print(f"  work redone: {redone:.4f} of N = {redone * n / size:.2f} shard (the in-flight shard's estimated "
          f"{partial:.0f} rows; target <= 1 shard); reused shards = complete at kill: "
          f"{'yes' if reused == len(kept_after) else 'NO'}; third run encoded {m2.group(2) if m2 else '?'} shards, "
          f"output equal: {same}")


# ---------------------------------------------------------------------------------------------- main


def default_index(passages: int) -> str:
    """IVF4096 at 1M passages, nlist scaled with the corpus (a power of two, sqrt-ish rule of thumb)."""
    nlist = 2 ** max(6, round(np.log2(4096 * passages / 1_000_000)))
    return f"IVF{nlist},Flat"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--real_docs", type=int, default=300, help="SciFact documents encoded for real vectors")
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--query_noise", type=float, default=0.02)
    ap.add_argument("--k", type=int, default=200, help="top-k searched = end of the sampling range 0-K")
    ap.add_argument("--negatives", type=int, default=15)
    ap.add_argument("--sampling", default="top", choices=("top", "random"))
    ap.add_argument("--st_batch", type=int, default=None,
                    help="ST's faiss_batch_size (query chunk; its default 16384 holds 16384 x passages scores, "
                         "65 GB at 1M): default the largest power of two keeping the chunk under 4 GB")
    ap.add_argument("--index", default=None, help="FAISS factory (default: IVF4096,Flat scaled with --passages)")
    ap.add_argument("--nprobe", type=int, default=None, help="default: nlist / 16")
    ap.add_argument("--recall_k", type=int, default=100)
    ap.add_argument("--resume_texts", type=int, default=20000)
    ap.add_argument("--resume_shard", type=int, default=2000)
    ap.add_argument("--kill_after", type=int, default=0, help="complete shards before the kill (default: half)")
    for part in ("st", "faiss_st", "mining", "index", "resume"):
        ap.add_argument(f"--skip_{part}", action="store_true")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_spec", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._child:
        spec = json.loads(Path(args._spec).read_text())
        fn = {"embforge": child_embforge, "st0": lambda s: child_st(s, False), "st1": lambda s: child_st(s, True),
              "index": child_index}[args._child]
        print(json.dumps(fn(spec)), flush=True)
        return 0

    import torch

    args.index = args.index or default_index(args.passages)
    nlist = int(m.group(1)) if (m := re.match(r"IVF(\d+)", args.index)) else None
    args.nprobe = args.nprobe or (max(1, nlist // 16) if nlist else None)
    args.st_batch = args.st_batch or min(16384, 2 ** int(np.log2(max(1, 4e9 / (4 * args.passages)))))
    print(f"bench/scale.py: torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="embforge-scale-") as name:
        tmp = Path(name)
        if not (args.skip_mining and args.skip_index):
            spec = prepare(args, tmp)
            spec_path = tmp / "spec.json"
            spec_path.write_text(json.dumps(spec))
            report_facts(spec, args)
            if not args.skip_mining:
                report_mining(spec, args, tmp, spec_path)
            if not args.skip_index:
                report_index(spec, spec_path)
        if not args.skip_resume:
            resume(args, tmp)
    print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
