"""Every reader on the real bundled data files (examples/data), plus HF / parquet / csv / npz on small local files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embforge.data import (
    BadRecords,
    RetrievalRecord,
    ScoredPair,
    count_records,
    detect_format,
    iter_records,
    load_records,
    passage_text,
    query_text,
)
from embforge.data.npz import load_npz
from embforge.errors import EmbforgeError

FLAG_FILES = ("retrieval_msmarco", "retrieval_nq", "retrieval_nli", "sts_sts")


@pytest.mark.parametrize("name", FLAG_FILES)
def test_flagembedding_examples_keep_every_field(bundled_data, name):
    path = bundled_data / "flagembedding-examples" / f"{name}.jsonl"
    assert detect_format(path) == "flag"
    records = load_records(path)
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(records) == len(raw) == 10
    for rec, obj in zip(records, raw):
        assert isinstance(rec, RetrievalRecord)
        assert (rec.query, rec.pos, rec.neg) == (obj["query"], obj["pos"], obj["neg"])
        assert rec.prompt == obj["prompt"] and rec.type == obj["type"]
        assert rec.pos_scores == obj.get("pos_scores") and rec.neg_scores == obj.get("neg_scores")
        assert rec.to_json() == {k: v for k, v in obj.items() if v is not None}
    assert records[3].source == f"{path}:4"


def test_msmarco_example_has_25_negatives(bundled_data):
    records = load_records(bundled_data / "flagembedding-examples" / "retrieval_msmarco.jsonl")
    assert [len(r.neg) for r in records] == [25] * 10


def test_beir_train_split_gives_809_queries_with_919_positives(bundled_data):
    folder = bundled_data / "scifact"
    assert detect_format(folder) == "beir"
    records = load_records(folder)  # default split: train
    assert len(records) == 809
    assert sum(len(r.pos) for r in records) == 919
    assert all(not r.neg for r in records)
    first = records[0]
    assert first.source == f"{folder / 'qrels' / 'train.tsv'}:2"  # line 1 is the header
    corpus = {json.loads(line)["_id"]: json.loads(line) for line in (folder / "corpus.jsonl").open()}
    doc = corpus[first.extra["pos_ids"][0]]
    assert first.pos[0] == f"{doc['title']} {doc['text']}"


def test_beir_test_split(bundled_data):
    records = load_records(bundled_data / "scifact", split="test")
    assert len(records) == 300 and sum(len(r.pos) for r in records) == 339


def test_beir_unknown_split_names_the_available_ones(bundled_data):
    with pytest.raises(EmbforgeError, match="available: test, train"):
        load_records(bundled_data / "scifact", split="dev")


@pytest.mark.parametrize("split,count", [("train", 5749), ("dev", 1500), ("test", 1379)])
def test_stsb_folder_and_files(bundled_data, split, count):
    folder = bundled_data / "stsbenchmark"
    assert detect_format(folder / f"sts-{split}.csv") == "stsb"
    pairs = load_records(folder / f"sts-{split}.csv")
    assert len(pairs) == count and all(isinstance(p, ScoredPair) for p in pairs)
    assert all(0.0 <= p.score <= 5.0 for p in pairs)
    assert len(load_records(folder, split=split)) == count


def test_sick_all_rows_and_by_split(bundled_data):
    path = bundled_data / "sick" / "SICK.txt"
    assert detect_format(path) == "sick"
    assert count_records(path) == 9840
    by_split = {s: count_records(path, split=s) for s in ("TRAIN", "TRIAL", "TEST")}
    assert by_split == {"TRAIN": 4439, "TRIAL": 495, "TEST": 4906}
    first = next(iter_records(path))
    assert first.text1.startswith("A group of kids is playing in a yard")
    assert first.score == 4.5 and first.source == f"{path}:2"


@pytest.mark.parametrize("split,premises", [("dev", 2943), ("test", 2921)])
def test_snli_triplets_per_premise(bundled_data, split, premises):
    folder = bundled_data / "snli"
    assert detect_format(folder) == "nli"
    records = load_records(folder, split=split)
    assert len(records) == premises
    assert all(r.pos and r.neg for r in records)
    assert len({r.query for r in records}) == premises
    # The first premise of dev: line 2 is its entailment, line 3 its contradiction.
    if split == "dev":
        assert records[0].query == "Two women are embracing while holding to go packages ."
        assert records[0].pos == ["Two woman are holding packages ."]
        assert records[0].neg == ["The men are fighting outside a deli ."]
        assert records[0].source == f"{folder / 's1.dev'}:1"


def test_snli_one_file_names_its_split(bundled_data):
    path = bundled_data / "snli" / "s1.test"
    assert detect_format(path) == "nli"
    assert count_records(path) == 2921


def test_snli_default_split_is_dev_when_there_is_no_train(bundled_data):
    assert count_records(bundled_data / "snli") == 2943


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_angle_formats(tmp_path):
    a = _write_jsonl(tmp_path / "a.jsonl", [{"text1": "x", "text2": "y", "label": 1},
                                            {"text1": "x", "text2": "z", "label": 0.25}])
    b = _write_jsonl(tmp_path / "b.jsonl", [{"text": "q", "positive": "p", "negative": "n"}])
    c = _write_jsonl(tmp_path / "c.jsonl", [{"text": "q", "positive": "p"}])
    assert [detect_format(p) for p in (a, b, c)] == ["angle-a", "angle-b", "angle-c"]
    assert [(p.text1, p.text2, p.score) for p in load_records(a)] == [("x", "y", 1.0), ("x", "z", 0.25)]
    (rb,), (rc,) = load_records(b), load_records(c)
    assert (rb.query, rb.pos, rb.neg) == ("q", ["p"], ["n"])
    assert (rc.query, rc.pos, rc.neg) == ("q", ["p"], [])


def test_named_format_overrides_detection(tmp_path):
    path = _write_jsonl(tmp_path / "b.jsonl", [{"text": "q", "positive": "p", "negative": "n"}])
    (rec,) = load_records(path, format="angle-c")
    assert rec.neg == []


def test_field_map_renames_columns(tmp_path):
    path = _write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "answers": ["a"]}])
    with pytest.raises(EmbforgeError, match="cannot tell the format"):
        detect_format(path)
    (rec,) = load_records(path, field_map={"question": "query", "answers": "pos"})
    assert (rec.query, rec.pos) == ("q", ["a"])


@pytest.fixture(scope="module")
def hf_sources(tmp_path_factory):
    import datasets

    root = tmp_path_factory.mktemp("hf")
    rows = {"anchor": ["q1", "q2", "q3"], "positive": ["p1", "p2", "p3"], "negative": ["n1", "n2", "n3"]}
    ds = datasets.Dataset.from_dict(rows)
    ds.save_to_disk(str(root / "single"))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(root / "dict"))
    ds.to_parquet(str(root / "t.parquet"))
    datasets.Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [0.5, 4.0]}).to_csv(
        str(root / "t.csv"), index=False)
    return root


@pytest.mark.parametrize("name,fmt", [("single", "hf-disk"), ("dict", "hf-disk"), ("t.parquet", "parquet")])
def test_hf_retrieval_sources(hf_sources, name, fmt):
    path = hf_sources / name
    assert detect_format(path) == fmt
    records = load_records(path)
    assert [(r.query, r.pos, r.neg) for r in records] == [(f"q{i}", [f"p{i}"], [f"n{i}"]) for i in (1, 2, 3)]


def test_hf_disk_split(hf_sources):
    assert [r.query for r in load_records(hf_sources / "dict", split="test")] == ["q1"]
    with pytest.raises(EmbforgeError, match="available: train, test"):
        load_records(hf_sources / "dict", split="validation")


def test_csv_scored_pairs_through_datasets(hf_sources):
    path = hf_sources / "t.csv"
    assert detect_format(path) == "csv"
    pairs = load_records(path)
    assert [(p.text1, p.text2, p.score) for p in pairs] == [("a", "c", 0.5), ("b", "d", 4.0)]
    assert pairs[1].source == f"{path}:3"  # header is line 1


def test_mixture_yaml_through_load_records():
    from pathlib import Path

    yaml_path = Path(__file__).resolve().parents[1] / "examples" / "mixture_scifact_snli.yaml"
    assert detect_format(yaml_path) == "mixture"
    records = load_records(yaml_path, seed=1)
    assert len(records) == 2000


@pytest.mark.parametrize("key,label_key", [("embeddings", "labels"), ("X", "y"), ("emb", "label"), ("data", None)])
def test_npz_keys_and_memory_map(tmp_path, key, label_key):
    emb = np.arange(12, dtype=np.float32).reshape(4, 3)
    arrays = {key: emb}
    if label_key:
        arrays[label_key] = np.array([0, 1, 0, 2])
    np.savez(tmp_path / "e.npz", **arrays)
    s = load_npz(tmp_path / "e.npz")
    assert detect_format(tmp_path / "e.npz") == "npz"
    assert len(s) == 4 and s.dim == 3 and s.memory_mapped
    np.testing.assert_array_equal(np.asarray(s.embeddings), emb)
    if label_key:
        np.testing.assert_array_equal(s.labels, [0, 1, 0, 2])
    else:
        assert s.labels is None


def test_npz_compressed_loads_in_memory_with_ids(tmp_path):
    emb = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    np.savez_compressed(tmp_path / "c.npz", embeddings=emb, ids=np.array(["a", "b", "c", "d", "e"]))
    s = load_npz(tmp_path / "c.npz")
    assert not s.memory_mapped
    np.testing.assert_array_equal(s.embeddings, emb)
    assert s.ids.tolist() == ["a", "b", "c", "d", "e"]


def test_npz_errors_name_the_key(tmp_path):
    np.savez(tmp_path / "none.npz", weights=np.zeros((2, 2)))
    with pytest.raises(EmbforgeError, match=r"none.npz: no embeddings array.*found: weights"):
        load_npz(tmp_path / "none.npz")
    np.savez(tmp_path / "rows.npz", embeddings=np.zeros((3, 2)), labels=np.zeros(2))
    with pytest.raises(EmbforgeError, match=r"'labels' has 2 rows but 'embeddings' has 3"):
        load_npz(tmp_path / "rows.npz")
    np.savez(tmp_path / "flat.npz", embeddings=np.zeros(3))
    with pytest.raises(EmbforgeError, match="2-D"):
        load_npz(tmp_path / "flat.npz")
    with pytest.raises(EmbforgeError, match="not text records"):
        load_records(tmp_path / "flat.npz")


def test_readers_stream(tmp_path):
    """A reader yields the first record before reading the rest (so it never holds a big file whole)."""
    path = _write_jsonl(tmp_path / "big.jsonl", [{"query": f"q{i}", "pos": [f"p{i}"]} for i in range(1000)])
    with path.open("a") as fh:
        fh.write("{ not json\n")
    stream = iter_records(path)
    assert next(stream).query == "q0"  # the broken last line has not been read yet
    with pytest.raises(EmbforgeError, match=r"big.jsonl:1001: invalid JSON"):
        list(stream)


def test_instructions():
    rec = RetrievalRecord("what is x", ["x is y"])
    assert query_text(rec, "Query: ") == "Query: what is x"
    assert query_text(rec) == "what is x"
    rec.prompt = "Find: "
    assert query_text(rec, "Query: ") == "Find: what is x"
    assert query_text("plain", "Q: ") == "Q: plain"
    assert passage_text("doc", "Passage: ") == "Passage: doc" and passage_text("doc") == "doc"


def test_bad_records_counter_is_shared_with_caller(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"query": "q", "pos": ["p"]}\n{"query": "q"}\n', encoding="utf-8")
    bad = BadRecords()
    assert len(list(iter_records(path, skip_bad_records=True, bad_records=bad))) == 1
    assert bad.count == 1 and bad.first_locations == [f"{path}:2"]
