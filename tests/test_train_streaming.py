"""--streaming: training data read lazily, in duplicate-free batches, resumable exactly, in bounded memory."""

import json
import os
import subprocess
import sys
import weakref

import pytest
import torch
from test_distributed import args as ddp_args
from test_distributed import free_port
from test_train import config, crash_at_step, steps_trained, weights, write_data
from torch.utils.data import DataLoader

from embforge.api import build_config
from embforge.commands.train import Config
from embforge.data import formats
from embforge.data.records import RetrievalRecord
from embforge.data.sampling import record_texts
from embforge.data.streaming import DuplicateFreeStream
from embforge.errors import EmbforgeError
from embforge.training import run as train_run
from embforge.training.batches import GroupDataset, StreamingDataset
from embforge.training.trainer import EmbeddingTrainer


def repetitive(n, queries, positives, negatives):
    """Records whose queries, positives and negatives repeat with different periods: many pairs share a text."""
    return [RetrievalRecord(f"q{i % queries}", [f"p{i % positives}"], [f"n{i % negatives}"], source=f"mem:{i}")
            for i in range(n)]


@pytest.mark.parametrize("records, dropping", [
    (repetitive(120, 20, 13, 11), False),
    # Three negatives in all: at most three records fit a batch, the pool fills with clashes and is dropped.
    (repetitive(60, 5, 7, 3), True),
], ids=["repetitive", "hopeless"])
def test_batches_never_hold_a_text_twice_on_data_full_of_duplicates(records, dropping):
    stream = DuplicateFreeStream(lambda: iter(records), size=3, buffer=12, seed=1)
    batches = [b for b, _ in zip(stream, range(100))]
    for batch in batches:
        assert len(batch) == 3
        texts = [t for d in batch for t in set(record_texts(d.record))]
        assert len(texts) == len(set(texts)), [d.record.source for d in batch]
    # The same batches on every pass over the stream: the order is a pure function of the seed and position.
    assert [[(d.epoch, d.index) for d in b] for b in batches] == [[(d.epoch, d.index) for d in b]
                                                                  for b, _ in zip(stream, range(100))]
    assert batches[-1][0].epoch >= 2  # passes restarted
    assert bool(stream.dropped) == dropping


def test_a_buffer_holding_the_data_shuffles_each_pass_whole():
    records = [RetrievalRecord(f"q{i}", [f"p{i}"]) for i in range(12)]
    batches = [b for b, _ in zip(DuplicateFreeStream(lambda: iter(records), 4, 12, seed=0), range(6))]
    orders = []
    for epoch, part in ((0, batches[:3]), (1, batches[3:])):
        orders.append([d.index for b in part for d in b])
        assert sorted(orders[-1]) == list(range(12)) and {d.epoch for b in part for d in b} == {epoch}
    assert list(range(12)) != orders[0] != orders[1]  # shuffled, and differently in each pass


def test_a_batch_that_cannot_be_formed_is_an_error():
    records = [RetrievalRecord("q", [f"p{i}"]) for i in range(6)]  # one query: no two records fit together
    with pytest.raises(EmbforgeError, match="no batch of 2 records without duplicate texts"):
        next(iter(DuplicateFreeStream(lambda: iter(records), 2, 4, seed=0)))


def test_dataloader_workers_share_the_batches_in_order():
    records = [RetrievalRecord(f"q{i}", [f"p{i}"]) for i in range(10)]
    data = StreamingDataset(DuplicateFreeStream(lambda: iter(records), 2, 6, seed=3),
                            GroupDataset([], 1, 0, None, None), 2)
    data.start = 3  # a resumed run: the first three batches are skipped
    alone = [b for b, _ in zip(DataLoader(data, batch_size=None, collate_fn=list), range(7))]
    pooled = [b for b, _ in zip(DataLoader(data, batch_size=None, collate_fn=list, num_workers=2), range(7))]
    every = [[(d.record.query, d.record.pos) for d in b] for b, _ in zip(data.stream, range(10))]
    assert alone == pooled == every[3:]


def test_streaming_trains_and_resumes_to_the_same_weights(tiny_bert_nodrop, tmp_path, monkeypatch):
    data = write_data(tmp_path / "stream.jsonl", n=12)
    common = {"train_data": str(data), "streaming": True, "stream_buffer": 6, "max_steps": 6,
              "save_strategy": "steps", "save_steps": 3, "per_device_train_batch_size": 4, "train_group_size": 2}
    straight = train_run.train(config(tiny_bert_nodrop, tmp_path / "a", **common))
    assert straight.report["records"] == 12 and straight.report["global_steps"] == 6

    with crash_at_step(4):
        train_run.train(config(tiny_bert_nodrop, tmp_path / "b", **common))
    steps = steps_trained(monkeypatch)
    resumed = train_run.train(config(tiny_bert_nodrop, tmp_path / "b", resume_from_checkpoint="last", **common))
    assert steps == [3, 4, 5]

    a, b, base = weights(straight.output_dir), weights(resumed.output_dir), weights(tiny_bert_nodrop)
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-3  # the loss trained
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_datasets_sources_stream_like_the_jsonl(tiny_bert_nodrop, tmp_path):
    import datasets

    data = write_data(tmp_path / "stream.jsonl", n=8)
    folder = tmp_path / "disk"
    datasets.Dataset.from_list([json.loads(line) for line in data.read_text().splitlines()]).save_to_disk(folder)
    common = {"train_data": str(data), "streaming": True, "stream_buffer": 8, "max_steps": 3}
    jsonl = weights(train_run.train(config(tiny_bert_nodrop, tmp_path / "j", **common)).output_dir)
    rows = datasets.load_dataset("json", data_files=str(data), split="train", streaming=True)
    runs = {name: config(tiny_bert_nodrop, tmp_path / name, **{**common, **extra}) for name, extra in (
        ("hf-jsonl", {"train_format": "hf-jsonl"}), ("hf-disk", {"train_data": str(folder)}), ("iterable", {}))}
    runs["iterable"] = build_config(Config, runs["iterable"], {"train_data": rows}, objects=("train_data",))
    for name, cfg in runs.items():
        result = train_run.train(cfg)
        assert name != "iterable" or result.report["train_data"] == "in-memory IterableDataset"
        other = weights(result.output_dir)
        for key in jsonl:
            assert torch.allclose(jsonl[key], other[key], atol=1e-6), (name, key)


def test_streaming_holds_at_most_the_buffer_in_memory(tiny_bert, tmp_path, monkeypatch):
    """Every parsed record is watched by a weak reference: at no moment may more than the buffer (plus the few
    the data checks keep) be alive, on a file eight times the buffer."""
    alive, peak = set(), [0]
    original = formats.to_record

    def watched(*args, **kwargs):
        record = original(*args, **kwargs)
        key = id(record)
        alive.add(key)
        weakref.finalize(record, alive.discard, key)
        peak[0] = max(peak[0], len(alive))
        return record

    monkeypatch.setattr(formats, "to_record", watched)
    data = write_data(tmp_path / "stream.jsonl", n=64, negs=1)
    train_run.train(config(tiny_bert, tmp_path, train_data=str(data), streaming=True, stream_buffer=8,
                           max_steps=8, per_device_train_batch_size=2))
    assert 8 <= peak[0] <= 8 + 6, peak[0]


def test_scored_pairs_stream_with_the_score_range_of_the_whole_data(tiny_bert, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    words = "cat dog bird fish house tree car road".split()
    pairs.write_text("".join(json.dumps({"text1": f"the {a}", "text2": f"a {b} here", "label": (i * 7) % 6})
                             + "\n" for i, (a, b) in enumerate(zip(words, words[1:] + words[:1]))))
    out = train_run.train(config(tiny_bert, tmp_path, train_data=str(pairs), streaming=True, stream_buffer=4,
                                 loss=["cosent"])).output_dir
    a, base = weights(out), weights(tiny_bert)
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-4


@pytest.mark.parametrize("overrides, message", [
    ({"max_steps": -1}, "--streaming needs --max_steps N"),
    ({"stream_buffer": 3}, "--stream_buffer must be at least the global batch \\(4 records\\)"),
])
def test_streaming_settings_it_cannot_run(tiny_bert, tmp_path, overrides, message):
    with pytest.raises(EmbforgeError, match=message):
        train_run.train(config(tiny_bert, tmp_path, streaming=True, **overrides))


def test_a_mixture_cannot_stream(tiny_bert, tmp_path):
    write_data(tmp_path / "stream.jsonl")
    (tmp_path / "mix.yaml").write_text("use_all: true\ndatasets:\n  name: [a]\n  data_path: [stream.jsonl]\n")
    with pytest.raises(EmbforgeError, match="mix.yaml is a dataset mixture, which is built in memory"):
        train_run.train(config(tiny_bert, tmp_path, train_data=str(tmp_path / "mix.yaml"), streaming=True))


def test_a_bad_line_is_reported_at_its_line_before_training(tiny_bert, tmp_path):
    """The first step reads only 4 of 40 records: the last line's error must come from the validating pass."""
    data = write_data(tmp_path / "stream.jsonl", n=39)
    data.write_text(data.read_text() + '{"query": "q", "pos": [\n')
    with pytest.raises(EmbforgeError, match="stream.jsonl:40: invalid JSON"):
        train_run.train(config(tiny_bert, tmp_path, train_data=str(data), streaming=True, stream_buffer=4,
                               max_steps=1))
    assert not (tmp_path / "out").exists()


def test_two_processes_stream_like_one_process_on_the_full_batch(tiny_bert_nodrop, tmp_path):
    data = write_data(tmp_path / "stream.jsonl", n=8)
    extra = ["--streaming", "--stream_buffer", "6"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    single = [sys.executable, "-m", "embforge.cli", *ddp_args(tiny_bert_nodrop, data, tmp_path / "single", 4, extra)]
    proc = subprocess.run(single, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "embforge.cli",
           *ddp_args(tiny_bert_nodrop, data, tmp_path / "ddp", 2, extra), "--ddp_backend", "gloo"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    one, two, base = (weights(p) for p in (tmp_path / "single", tmp_path / "ddp", tiny_bert_nodrop))
    assert max((one[k] - base[k]).abs().max().item() for k in one) > 1e-3
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5), (key, (one[key] - two[key]).abs().max())


def test_save_strategy_epoch_saves_at_the_end_of_each_pass_and_resumes(tiny_bert_nodrop, tmp_path, monkeypatch):
    """12 records, global batch 4, a buffer holding them all: each pass over the data is 3 steps, so the
    data epochs end after steps 3 and 6, as a non-streaming run's epochs would."""
    data = write_data(tmp_path / "stream.jsonl", n=12)
    common = {"train_data": str(data), "streaming": True, "stream_buffer": 12, "max_steps": 6,
              "save_strategy": "epoch", "per_device_train_batch_size": 4, "train_group_size": 2}
    saves, save = [], EmbeddingTrainer._save_checkpoint
    monkeypatch.setattr(EmbeddingTrainer, "_save_checkpoint",
                        lambda self, *a: (saves.append(self.state.global_step), save(self, *a))[1])
    straight = train_run.train(config(tiny_bert_nodrop, tmp_path / "a", **common))
    assert saves == [3, 6]  # the last pass's end is the run's end: saved once
    monkeypatch.setattr(EmbeddingTrainer, "_save_checkpoint", save)
    run = tmp_path / "a" / "out"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-3", "checkpoint-6"]
    assert not (run / ".staging").exists()
    assert json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3

    with crash_at_step(4):  # killed after the first pass's checkpoint
        train_run.train(config(tiny_bert_nodrop, tmp_path / "b", **common))
    resumed_dir = tmp_path / "b" / "out"
    assert sorted(p.name for p in resumed_dir.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-3"]
    steps = steps_trained(monkeypatch)
    resumed = train_run.train(config(tiny_bert_nodrop, tmp_path / "b", resume_from_checkpoint="last", **common))
    assert steps == [3, 4, 5]
    assert sorted(p.name for p in resumed_dir.iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-3", "checkpoint-6"]
    a, b, base = weights(straight.output_dir), weights(resumed.output_dir), weights(tiny_bert_nodrop)
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-3
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


@pytest.mark.parametrize("records", [repetitive(120, 20, 13, 11), repetitive(10, 10, 10, 10)], ids=["clashing", "10"])
def test_the_last_batch_before_each_new_pass_is_marked(records):
    """A batch ends a pass when the next one is the first to hold a record of the following pass (batches of
    3 over 10 records: the 4th batch opens pass 1 with the 10th record beside two of pass 1)."""
    batches = [b for b, _ in zip(DuplicateFreeStream(lambda: iter(records), 3, 12, seed=2), range(150))]
    newest = [max(d.epoch for d in b) for b in batches]
    expected = [newest[i + 1] > newest[i] for i in range(len(batches) - 1)]
    assert [all(d.ends_pass for d in b) or not any(d.ends_pass for d in b) for b in batches] == [True] * 150
    assert [b[0].ends_pass for b in batches[:-1]] == expected and sum(expected) >= 3
