"""Mixture semantics of reference/training-module.md: allocation, duplication, rounding, determinism."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embforge.cli import main
from embforge.data.mixture import (
    DatasetSpec,
    MixtureConfig,
    allocate,
    build_mixture,
    load_mixture_config,
    mixture_config_from_dict,
    plan_mixture,
)
from embforge.errors import EmbforgeError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mixture_scifact_snli.yaml"


def _cfg(ratios, total=200, allow_duplicate=False, use_all=False):
    specs = [DatasetSpec(f"d{i}", Path(f"d{i}.jsonl"), r) for i, r in enumerate(ratios)]
    return MixtureConfig(specs, use_all=use_all, num_total_data=total, allow_duplicate=allow_duplicate)


def test_worked_example_without_duplicates():
    """200 total at 0.7 -> 140 allocated; only 60 exist; allow_duplicate false uses the 60."""
    plan = plan_mixture(_cfg([0.7, 0.3]), {"d0": 60, "d1": 1000}, seed=0)
    d0, d1 = plan.datasets
    assert (d0.available, d0.allocated, d0.used, d0.full_copies, d0.random_extra) == (60, 140, 60, 1, 0)
    assert (d1.allocated, d1.used, d1.full_copies, d1.random_extra) == (60, 60, 0, 60)
    assert plan.total == 120


def test_worked_example_with_duplicates():
    """allow_duplicate true: two full copies (120) plus 20 drawn at random without replacement."""
    plan = plan_mixture(_cfg([0.7, 0.3], allow_duplicate=True), [60, 1000], seed=0)
    d0 = plan.datasets[0]
    assert (d0.used, d0.full_copies, d0.random_extra) == (140, 2, 20)
    assert len(set(d0.extra_indices.tolist())) == 20 and d0.extra_indices.max() < 60
    assert plan.total == 200


def test_full_scale_worked_example():
    plan = plan_mixture(_cfg([0.7, 0.3], total=200_000, allow_duplicate=True), [60_000, 60_000], seed=3)
    d0, d1 = plan.datasets
    assert (d0.allocated, d0.full_copies, d0.random_extra, d0.used) == (140_000, 2, 20_000, 140_000)
    assert (d1.allocated, d1.full_copies, d1.random_extra) == (60_000, 1, 0)


def test_use_all_ignores_total_and_ratios():
    cfg = MixtureConfig([DatasetSpec("a", Path("a")), DatasetSpec("b", Path("b"))], use_all=True)
    plan = plan_mixture(cfg, [7, 5], seed=0)
    assert [(d.used, d.full_copies, d.random_extra) for d in plan.datasets] == [(7, 1, 0), (5, 1, 0)]


def test_ratios_must_sum_to_one():
    with pytest.raises(EmbforgeError, match=r"data_ratio must sum to 1, got \[0.7, 0.4\]"):
        _cfg([0.7, 0.4])
    _cfg([0.7, 0.3 + 5e-7])  # within tolerance
    with pytest.raises(EmbforgeError, match="must not be negative"):
        _cfg([1.5, -0.5])


def test_rounding_never_gains_or_loses_a_record():
    assert allocate(10, [1 / 3, 1 / 3, 1 / 3]) == [4, 3, 3]
    assert allocate(200_000, [0.7, 0.3]) == [140_000, 60_000]
    assert allocate(7, [0.5, 0.5]) == [4, 3]
    assert allocate(100, [0.333, 0.333, 0.334]) == [33, 33, 34]


@given(total=st.integers(0, 10**7),
       weights=st.lists(st.integers(0, 1000), min_size=1, max_size=8).filter(lambda w: sum(w) > 0))
@settings(max_examples=200, deadline=None)
def test_allocations_sum_exactly(total, weights):
    ratios = [w / sum(weights) for w in weights]
    counts = allocate(total, ratios)
    assert sum(counts) == total
    assert all(abs(c - total * r) < 1 + 1e-6 for c, r in zip(counts, ratios))


def test_plan_is_deterministic_per_seed_and_keyed_by_name():
    cfg = _cfg([0.5, 0.5], allow_duplicate=True)
    a = plan_mixture(cfg, [30, 500], seed=1)
    b = plan_mixture(cfg, [30, 500], seed=1)
    c = plan_mixture(cfg, [30, 500], seed=2)
    assert all((x.extra_indices == y.extra_indices).all() for x, y in zip(a.datasets, b.datasets))
    assert any((x.extra_indices != y.extra_indices).any() for x, y in zip(a.datasets, c.datasets))


def test_empty_dataset_with_an_allocation_is_an_error():
    with pytest.raises(EmbforgeError, match="'d0': 100 records allocated but it has none"):
        plan_mixture(_cfg([0.5, 0.5]), [0, 10], seed=0)


def test_config_errors():
    base = {"num_total_data": 10, "datasets": {"name": ["a", "b"], "data_path": ["a", "b"], "data_ratio": [0.5, 0.5]}}
    mixture_config_from_dict(base)
    with pytest.raises(EmbforgeError, match="did you mean 'allow_duplicate'"):
        mixture_config_from_dict(dict(base, allow_duplicates=True))
    with pytest.raises(EmbforgeError, match="data_ratio has 1 entries but datasets.name has 2"):
        mixture_config_from_dict(dict(base, datasets=dict(base["datasets"], data_ratio=[1.0])))
    with pytest.raises(EmbforgeError, match="num_total_data must be a non-negative integer"):
        mixture_config_from_dict({"datasets": base["datasets"]})
    with pytest.raises(EmbforgeError, match="name must be unique"):
        mixture_config_from_dict(dict(base, datasets=dict(base["datasets"], name=["a", "a"])))


def _jsonl(path, n, prefix):
    path.write_text("".join(json.dumps({"query": f"{prefix}{i}", "pos": [f"{prefix}p{i}"]}) + "\n" for i in range(n)))


def _yaml(tmp_path, allow_duplicate, total=200):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    _jsonl(data / "small.jsonl", 60, "s")
    _jsonl(data / "big.jsonl", 500, "b")
    y = tmp_path / "mix.yaml"
    y.write_text(f"use_all: False\nnum_total_data: {total}\nallow_duplicate: {allow_duplicate}\n"
                 "datasets:\n  name: [small, big]\n  data_path: [data/small.jsonl, ./data/big.jsonl]\n"
                 "  data_ratio: [0.7, 0.3]\n")
    return y


def test_build_mixture_with_duplicates_from_files(tmp_path):
    cfg = load_mixture_config(_yaml(tmp_path, True))
    assert cfg.datasets[0].path == tmp_path / "data" / "small.jsonl"  # relative to the YAML
    records, report = build_mixture(cfg, seed=5)
    small = Counter(r.query for r in records if r.query.startswith("s"))
    assert sum(small.values()) == 140
    assert set(small.values()) == {2, 3} and Counter(small.values())[3] == 20  # 2 copies + 20 extra
    assert len([r for r in records if r.query.startswith("b")]) == 60
    assert len({r.query for r in records if r.query.startswith("b")}) == 60  # no repeats when enough
    s = report["datasets"][0]
    assert (s["available"], s["allocated"], s["used"], s["full_copies"], s["random_extra"]) == (60, 140, 140, 2, 20)
    again, _ = build_mixture(cfg, seed=5)
    assert [r.query for r in again] == [r.query for r in records]
    other, _ = build_mixture(cfg, seed=6)
    assert [r.query for r in other] != [r.query for r in records]


def test_build_mixture_without_duplicates_from_files(tmp_path):
    records, report = build_mixture(load_mixture_config(_yaml(tmp_path, False)), seed=5)
    assert len(records) == 120 and report["total"] == 120
    assert report["datasets"][0]["used"] == 60


def test_mixing_record_kinds_is_refused(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text1": "a", "text2": "b", "label": 1}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"query": "a", "pos": ["b"]}) + "\n")
    y = tmp_path / "m.yaml"
    y.write_text("use_all: true\ndatasets:\n  name: [a, b]\n  data_path: [a.jsonl, b.jsonl]\n")
    with pytest.raises(EmbforgeError, match="different record kinds"):
        build_mixture(load_mixture_config(y))


def test_cli_on_scifact_snli_example(capsys):
    assert main(["data", str(EXAMPLE)]) == 0
    report = json.loads(capsys.readouterr().out)
    sci, snli = report["datasets"]
    assert (sci["available"], sci["allocated"], sci["used"], sci["full_copies"], sci["random_extra"]) == (
        809, 1400, 1400, 1, 591)
    assert (snli["available"], snli["allocated"], snli["used"], snli["full_copies"], snli["random_extra"]) == (
        2943, 600, 600, 0, 600)
    assert report["total"] == 2000


def test_cli_sample_prints_json_lines(capsys):
    assert main(["data", str(EXAMPLE), "--sample", "3", "--seed", "7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert json.loads(lines[0])["total"] == 2000
    assert all({"query", "pos", "neg"} <= set(json.loads(line)) for line in lines[1:])


def test_cli_single_source_and_errors(bundled_data, capsys, tmp_path):
    assert main(["data", str(bundled_data / "snli"), "--split", "test"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["format"], report["count"], report["kind"]) == ("nli", 2921, "RetrievalRecord")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": ["p"]}\n{"query": "q", "pos": "x", "neg": [1]}\n')
    assert main(["data", str(bad)]) == 2
    assert f"{bad}:2: field 'neg' item 0 must be a string" in capsys.readouterr().err
    assert main(["data", str(bad), "--skip_bad_records"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 1 and report["bad_records"]["first_locations"] == [f"{bad}:2"]
