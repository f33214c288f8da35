"""Mining and evaluation past one process: torchrun ranks give one process's answers, a killed mining run
resumes with only the missing shards encoded, a streamed pool mines like a list, and --index reports recall."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_distributed import free_port
from test_mine import WORDS, make_records, write_jsonl

from embforge.cli import main
from embforge.mining import default_pool

REPO = Path(__file__).resolve().parents[1]


def write_beir(folder: Path, n_docs: int = 41, n_queries: int = 9) -> Path:
    (folder / "qrels").mkdir(parents=True)
    docs = {f"d{i}": " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(5)) + f" n{i}" for i in range(n_docs)}
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                 for d, t in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": " ".join(WORDS[i:i + 3])})
                                                  + "\n" for i in range(n_queries)))
    rows = "".join(f"q{i}\td{(3 * i) % n_docs}\t1\nq{i}\td{(5 * i + 1) % n_docs}\t1\n" for i in range(n_queries))
    for split in ("train", "test"):
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return folder


def env(cache: Path) -> dict[str, str]:
    path = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "EMBFORGE_CACHE": str(cache),
            "PYTHONPATH": path}


def cli(args: list[str], cache: Path, nproc: int = 1) -> subprocess.CompletedProcess[str]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
                 "127.0.0.1", "--master_port", str(free_port())] if nproc > 1 else [sys.executable])
    proc = subprocess.run([*launcher, "-m", "embforge.cli", *args], env=env(cache), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_mine_and_evaluate_like_one(tmp_path, tiny_bert):
    beir = write_beir(tmp_path / "beir")
    mine = ["mine", "--model", str(tiny_bert), "--input_file", str(beir), "--range_for_sampling", "1-12",
            "--negative_number", "4", "--shard_size", "5"]
    cli([*mine, "--output_file", str(tmp_path / "one.jsonl")], tmp_path / "cache1")
    two = cli([*mine, "--output_file", str(tmp_path / "two.jsonl")], tmp_path / "cache2", nproc=2)
    assert read(tmp_path / "two.jsonl") == read(tmp_path / "one.jsonl")
    assert two.stdout.count("mined 4 negatives") == 1, "only rank 0 reports"
    evaluate = ["eval", "--model", str(tiny_bert), "--data", str(beir), "--split", "test", "--k", "1", "5", "10"]
    cli([*evaluate, "--report", str(tmp_path / "one.json")], tmp_path / "cache1")
    cli([*evaluate, "--report", str(tmp_path / "two.json")], tmp_path / "cache2", nproc=2)
    one, two_report = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["metrics"] == two_report["metrics"]
    assert 0 < one["metrics"]["nDCG@10"] < 1


KILL_AFTER_TWO_SHARDS = """
import os, sys
import embforge.store.encode as enc
original, written = enc._write_shard, []
def write(*args, **kwargs):
    original(*args, **kwargs)
    written.append(1)
    if len(written) == 2:
        os._exit(9)
enc._write_shard = write
from embforge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_mining_run_resumes_with_only_the_missing_shards(tmp_path, tiny_bert):
    beir = write_beir(tmp_path / "beir")
    args = ["mine", "--model", str(tiny_bert), "--input_file", str(beir), "--range_for_sampling", "0-10",
            "--negative_number", "3", "--shard_size", "6"]
    cli([*args, "--output_file", str(tmp_path / "whole.jsonl")], tmp_path / "fresh")
    cache = tmp_path / "cache"
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_TWO_SHARDS, *args, "--output_file",
                             str(tmp_path / "out.jsonl")], env=env(cache), capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr[-2000:]
    assert not (tmp_path / "out.jsonl").exists()
    from embforge.commands import mine as command

    os.environ["EMBFORGE_CACHE"] = str(cache)
    try:
        stats = command.run(command.Config(model_name_or_path=str(tiny_bert), input_file=str(beir),
                                           output_file=str(tmp_path / "out.jsonl"), range_for_sampling="0-10",
                                           negative_number=3, shard_size=6))
    finally:
        del os.environ["EMBFORGE_CACHE"]
    pool_shards, query_shards = -(-41 // 6), -(-9 // 6)
    assert (stats["reused_shards"], stats["encoded_shards"]) == (2, pool_shards - 2 + query_shards)
    assert read(tmp_path / "out.jsonl") == read(tmp_path / "whole.jsonl")


def test_a_streamed_candidate_pool_mines_like_a_list(tmp_path, tiny_bert, monkeypatch):
    monkeypatch.setenv("EMBFORGE_CACHE", str(tmp_path / "cache"))
    records = make_records()
    texts = default_pool(records)
    pool = tmp_path / "pool.txt"
    pool.write_text("".join(t + "\n" for t in texts + texts[:5]))  # repeats are dropped, first copy kept
    src = write_jsonl(tmp_path / "in.jsonl", records)
    common = ["mine", "--model", str(tiny_bert), "--input_file", str(src), "--range_for_sampling", "0-12",
              "--negative_number", "3", "--shard_size", "4"]
    assert main([*common, "--candidate_pool", str(pool), "--output_file", str(tmp_path / "stream.jsonl")]) == 0
    # the default pool is the same texts as an in-memory list
    assert main([*common, "--output_file", str(tmp_path / "list.jsonl")]) == 0
    assert read(tmp_path / "stream.jsonl") == read(tmp_path / "list.jsonl")


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_index_reports_its_recall_against_exact_search(tmp_path, tiny_bert, capsys, monkeypatch, factory):
    monkeypatch.setenv("EMBFORGE_CACHE", str(tmp_path / "cache"))
    src = write_jsonl(tmp_path / "in.jsonl", make_records())
    args = ["mine", "--model", str(tiny_bert), "--input_file", str(src), "--range_for_sampling", "0-12",
            "--negative_number", "3", "--sampling", "top"]
    assert main([*args, "--output_file", str(tmp_path / "exact.jsonl")]) == 0
    capsys.readouterr()
    assert main([*args, "--index", factory, "--output_file", str(tmp_path / "index.jsonl")]) == 0
    assert "recall@12 against exact search 1.0000" in capsys.readouterr().out
    assert read(tmp_path / "index.jsonl") == read(tmp_path / "exact.jsonl")
