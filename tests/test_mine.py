"""Hard-negative mining on a tiny model: exclusions, rank band, margin, fields, atomic output, cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embforge.cli import main
from embforge.mining import default_pool, mine_negatives
from embforge.model import Encoder

WORDS = ("cat dog bird fish runs jumps sleeps eats house tree car road city water fire light dark red blue green "
         "small big old new science cell protein gene cancer study").split()


def make_records(n: int = 12) -> list[dict]:
    rng = np.random.default_rng(1)
    text = lambda: " ".join(rng.choice(WORDS, size=4))  # noqa: E731
    records = []
    for i in range(n):
        records.append({"query": text(), "pos": [text()], "neg": [text() for _ in range(4)],
                        "prompt": "find it", "type": "normal", "custom": {"id": i}})
    # a positive of record 0 is also a negative of record 1 (identical text), and the query of record 2
    # appears as a negative of record 3
    records[1]["neg"].append(records[0]["pos"][0])
    records[3]["neg"].append(records[2]["query"])
    records[4]["pos"].append(records[5]["pos"][0])
    return records


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return Encoder.from_pretrained(str(tiny_bert), device="cpu")


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of its own


_POOL_EMB: dict[tuple, np.ndarray] = {}


def raw_ranking(encoder, record, pool):
    """The full ranking of the pool for one query, computed independently of embforge.mine."""
    key = (id(encoder), tuple(pool))
    if key not in _POOL_EMB:
        _POOL_EMB[key] = encoder.encode(pool)
    q = encoder.encode([record["query"]], is_query=True)[0]
    scores = _POOL_EMB[key] @ q
    order = np.argsort(-scores, kind="stable")
    return [pool[i] for i in order], {pool[i]: float(scores[i]) for i in order}


def test_negatives_come_from_the_band_and_exclude_positives_and_query(encoder):
    records = make_records()
    pool = default_pool(records)
    out, stats = mine_negatives(encoder, records, range_for_sampling="2-12", negative_number=4, use_cache=False)
    assert stats.pool_size == len(pool) and stats.records == len(records)
    for rec, new in zip(records, out):
        ranking, _ = raw_ranking(encoder, rec, pool)
        band = ranking[2:12]
        assert len(new["neg"]) == 4 and len(set(new["neg"])) == 4
        assert not set(new["neg"]) & set(rec["pos"])
        assert rec["query"] not in new["neg"]
        assert set(new["neg"]) <= set(band), "a negative came from outside ranks [2:12)"
    # an identical copy of another record's positive is still excluded for the record owning it
    assert records[0]["pos"][0] not in out[0]["neg"]


def test_top_sampling_takes_the_best_ranked_after_exclusions(encoder):
    records = make_records()
    pool = default_pool(records)
    out, _ = mine_negatives(encoder, records, range_for_sampling="0-30", negative_number=3, sampling="top",
                            use_cache=False)
    for rec, new in zip(records, out):
        ranking, _ = raw_ranking(encoder, rec, pool)
        expected = [t for t in ranking if t not in rec["pos"] and t != rec["query"]][:3]
        assert new["neg"] == expected


def test_output_keeps_every_other_field(encoder):
    records = make_records()
    out, _ = mine_negatives(encoder, records, range_for_sampling="0-20", negative_number=2, use_cache=False)
    for rec, new in zip(records, out):
        assert list(new) == list(rec)
        assert {k: v for k, v in new.items() if k != "neg"} == {k: v for k, v in rec.items() if k != "neg"}


def test_seed_makes_sampling_reproducible(encoder):
    records = make_records()
    a, _ = mine_negatives(encoder, records, range_for_sampling="1-25", negative_number=3, seed=7, use_cache=False)
    b, _ = mine_negatives(encoder, records, range_for_sampling="1-25", negative_number=3, seed=7, use_cache=False)
    c, _ = mine_negatives(encoder, records, range_for_sampling="1-25", negative_number=3, seed=8, use_cache=False)
    assert [r["neg"] for r in a] == [r["neg"] for r in b]
    assert [r["neg"] for r in a] != [r["neg"] for r in c]


def test_false_negative_margin_drops_and_counts(encoder):
    records = make_records()
    pool = default_pool(records)
    margin = 0.05
    out, stats = mine_negatives(encoder, records, range_for_sampling="0-40", negative_number=2,
                                false_negative_margin=margin, use_cache=False)
    expected_dropped = 0
    for rec, new in zip(records, out):
        ranking, score = raw_ranking(encoder, rec, pool)
        threshold = min(score[p] for p in rec["pos"]) - margin
        band = [t for t in ranking[:40] if t not in rec["pos"] and t != rec["query"]]
        expected_dropped += sum(1 for t in band if score[t] >= threshold)
        assert all(score[t] < threshold + 1e-6 for t in new["neg"])
    assert expected_dropped > 0, "the fixture should exercise the margin"
    assert stats.margin_dropped == expected_dropped


def test_too_small_band_is_padded_and_counted(encoder):
    records = make_records()
    _, stats = mine_negatives(encoder, records, range_for_sampling="0-3", negative_number=5, use_cache=False)
    assert stats.padded_records == len(records)
    assert stats.padded_negatives >= 2 * len(records)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cli_mines_with_candidate_pool_and_reuses_the_cache(tmp_path, tiny_bert, monkeypatch, capsys):
    records = make_records()
    src = write_jsonl(tmp_path / "in.jsonl", records)
    pool = tmp_path / "pool.jsonl"
    extra = ["the cat sleeps in the house", "a dog runs on the road", "science study of protein and gene data"]
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in default_pool(records)[:20])
                    + "".join(t + "\n" for t in extra))  # plain text lines are accepted too
    out = tmp_path / "out.jsonl"
    base = ["mine", "--model_name_or_path", str(tiny_bert), "--input_file", str(src), "--output_file", str(out),
            "--candidate_pool", str(pool), "--negative_number", "3", "--seed", "1"]
    assert main(base + ["--range_for_sampling", "0-10"]) == 0
    mined = [json.loads(line) for line in out.read_text().splitlines()]
    allowed = set(default_pool(records)[:20]) | set(extra)
    assert len(mined) == len(records) and all(set(r["neg"]) <= allowed for r in mined)

    def boom(*args, **kwargs):
        raise AssertionError("the encoder must not run when the cache has the embeddings")

    monkeypatch.setattr(Encoder, "encode", boom)
    capsys.readouterr()
    assert main(base + ["--range_for_sampling", "3-15"]) == 0
    assert "embeddings from cache: pool, queries" in capsys.readouterr().out


def test_cli_beir_folder_input_uses_the_corpus_as_pool(tmp_path, tiny_bert):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    docs = {f"d{i}": " ".join(WORDS[i:i + 4]) for i in range(20)}
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                 for d, t in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": WORDS[i]}) + "\n"
                                                  for i in range(5)))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i}\t1\n" for i in range(5)) + "q0\td1\t1\n")
    out = tmp_path / "mined.jsonl"
    assert main(["mine", "--model", str(tiny_bert), "--input_file", str(folder), "--output_file", str(out),
                 "--range_for_sampling", "0-10", "--negative_number", "4"]) == 0
    mined = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["query_id"] for r in mined] == ["q0", "q1", "q2", "q3", "q4"]
    assert mined[0]["pos"] == [docs["d0"], docs["d1"]]
    for r in mined:
        assert len(r["neg"]) == 4 and set(r["neg"]) <= set(docs.values()) and not set(r["neg"]) & set(r["pos"])


def test_output_is_written_atomically(tmp_path, tiny_bert, monkeypatch):
    import embforge.paths

    src = write_jsonl(tmp_path / "in.jsonl", make_records())
    out = tmp_path / "out.jsonl"
    out.write_text("OLD\n")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(embforge.paths.os, "replace", fail)
    with pytest.raises(OSError):
        main(["mine", "--model", str(tiny_bert), "--input_file", str(src), "--output_file", str(out),
              "--range_for_sampling", "0-10", "--negative_number", "2"])
    assert out.read_text() == "OLD\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "in.jsonl", "out.jsonl"]


@pytest.mark.parametrize("args, needle", [
    (["--range_for_sampling", "10-2"], "0 <= LO < HI"),
    (["--range_for_sampling", "abc"], "LO-HI"),
    (["--negative_number", "0"], "negative_number"),
    (["--false_negative_margin", "-1"], "false_negative_margin"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, tiny_bert, capsys, args, needle):
    src = write_jsonl(tmp_path / "in.jsonl", make_records(6))
    rc = main(["mine", "--model", str(tiny_bert), "--input_file", str(src), "--output_file",
               str(tmp_path / "o.jsonl"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("embforge mine: error:")
    assert needle in err


def test_bad_inputs_exit_2_with_location(tmp_path, tiny_bert, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "pos": ["b"]}\n{"query": "c", "pos": "d", "neg": [1]}\n')
    empty_pool = tmp_path / "pool.txt"
    empty_pool.write_text("\n\n")
    good = write_jsonl(tmp_path / "in.jsonl", make_records(6))
    cases = [
        (["--input_file", str(bad)], "bad.jsonl:2"),
        (["--input_file", str(tmp_path / "missing.jsonl")], "not found"),
        (["--input_file", str(good), "--candidate_pool", str(empty_pool)], "candidate pool is empty"),
    ]
    for args, needle in cases:
        rc = main(["mine", "--model", str(tiny_bert), "--output_file", str(tmp_path / "o.jsonl"), *args])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
