"""Group sampling (train_group_size) and the no-duplicate batch sampler."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embforge.data import RetrievalRecord, ScoredPair
from embforge.data.problems import reset_warnings
from embforge.data.sampling import NoDuplicateBatchSampler, record_texts, sample_group
from embforge.errors import EmbforgeError


@pytest.fixture(autouse=True)
def _fresh_warnings():
    reset_warnings()
    yield
    reset_warnings()


def _rec(q, pos=("p",), neg=(), source="f.jsonl:3"):
    return RetrievalRecord(q, list(pos), list(neg), source=source)


@pytest.mark.parametrize("rng", [random.Random(0), np.random.default_rng(0)])
def test_group_has_one_positive_and_distinct_negatives(rng):
    rec = _rec("q", pos=["p1", "p2"], neg=[f"n{i}" for i in range(10)])
    for _ in range(50):
        pos, negs = sample_group(rec, 8, rng)
        assert pos in rec.pos
        assert len(negs) == 7 and len(set(negs)) == 7 and set(negs) <= set(rec.neg)


def test_group_is_deterministic_for_a_seed():
    rec = _rec("q", neg=[f"n{i}" for i in range(20)])
    assert sample_group(rec, 5, random.Random(3)) == sample_group(rec, 5, random.Random(3))
    draws = {tuple(sample_group(rec, 5, random.Random(s))[1]) for s in range(10)}
    assert len(draws) > 1


def test_group_size_one_needs_no_negatives():
    assert sample_group(_rec("q"), 1, random.Random(0)) == ("p", [])


def test_short_negative_list_repeats_and_warns_once(caplog):
    rec = _rec("q", neg=["n1", "n2"])
    with caplog.at_level(logging.WARNING, logger="embforge.data"):
        for _ in range(5):
            _, negs = sample_group(rec, 6, random.Random(1))
            assert len(negs) == 5 and {"n1", "n2"} == set(negs)  # each given once, then repeats
    assert caplog.text.count("needs 5; repeating negatives") == 1
    with pytest.raises(EmbforgeError, match=r"f.jsonl:3: field 'neg' has 2 text\(s\) but train_group_size=6"):
        sample_group(rec, 6, random.Random(1), strict=True)


def test_no_negatives_gives_empty_list_and_warns_once(caplog):
    rec = _rec("q")
    with caplog.at_level(logging.WARNING, logger="embforge.data"):
        assert sample_group(rec, 4, random.Random(0)) == ("p", [])
        assert sample_group(rec, 4, random.Random(0)) == ("p", [])
    assert caplog.text.count("field 'neg' is empty") == 1
    with pytest.raises(EmbforgeError, match="f.jsonl:3: field 'neg' is empty"):
        sample_group(rec, 4, random.Random(0), strict=True)


def test_group_errors():
    with pytest.raises(EmbforgeError, match="field 'pos' is empty"):
        sample_group(_rec("q", pos=[]), 2, random.Random(0))
    with pytest.raises(EmbforgeError, match="at least 1"):
        sample_group(_rec("q"), 0, random.Random(0))


def _check_epoch(records, sampler, drop_last):
    batches = list(sampler)
    size = sampler.batch_size
    for b in batches:
        texts = [t for i in b for t in set(record_texts(records[i]))]
        assert len(texts) == len(set(texts)), f"duplicate text in batch {b}"
        assert 0 < len(b) <= size
        if drop_last:
            assert len(b) == size
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    if not drop_last:
        assert sorted(flat) == list(range(len(records)))
    else:
        assert len(flat) + sampler.dropped_records == len(records)
    assert len(sampler) == len(batches)
    return batches


# Few distinct texts, so duplicates (same query, one's positive as another's negative) are common.
TEXT = st.sampled_from([f"t{i}" for i in range(30)])
RECORD = st.builds(lambda q, p, n: RetrievalRecord(q, p, n), TEXT, st.lists(TEXT, min_size=1, max_size=2),
                   st.lists(TEXT, max_size=2))


@given(records=st.lists(RECORD, min_size=1, max_size=60), batch_size=st.integers(1, 8),
       seed=st.integers(0, 1000), drop_last=st.booleans())
@settings(max_examples=150, deadline=None)
def test_no_batch_holds_a_duplicate_text_and_every_record_appears_once(records, batch_size, seed, drop_last):
    sampler = NoDuplicateBatchSampler(records, batch_size, seed=seed, drop_last=drop_last)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        _check_epoch(records, sampler, drop_last)


def test_deterministic_per_seed_and_epoch_and_counts_rearrangements(caplog):
    records = [_rec(f"q{i % 10}", pos=[f"p{i}"]) for i in range(40)]  # each query appears 4 times
    a = NoDuplicateBatchSampler(records, 8, seed=1)
    b = NoDuplicateBatchSampler(records, 8, seed=1)
    with caplog.at_level(logging.INFO, logger="embforge.data"):
        first = list(a)
    assert first == list(b)
    assert a.rearranged_batches > 0
    assert f"rearranged {a.rearranged_batches} of {len(first)} batches" in caplog.text
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    plain = NoDuplicateBatchSampler([_rec(f"q{i}", pos=[f"p{i}"]) for i in range(40)], 8)
    assert len(list(plain)) == 5 and plain.rearranged_batches == 0


def test_one_record_shared_text_across_fields_is_a_clash():
    records = [_rec("a", pos=["x"]), _rec("b", pos=["y"], neg=["x"])]  # x: positive of one, negative of other
    batches = list(NoDuplicateBatchSampler(records, 2, seed=0))
    assert sorted(len(b) for b in batches) == [1, 1]


def test_scored_pairs_are_supported():
    pairs = [ScoredPair("a", "b", 1.0), ScoredPair("a", "c", 0.0), ScoredPair("d", "e", 0.5)]
    batches = list(NoDuplicateBatchSampler(pairs, 3, seed=0))
    assert all(not ({0, 1} <= set(b)) for b in batches)


@pytest.mark.parametrize("drop_last", [True, False])
def test_distributed_ranks_take_slices_of_one_global_batch(drop_last):
    records = [_rec(f"q{i % 25}", pos=[f"p{i}"]) for i in range(103)]
    world, per_rank = 3, 4
    samplers = [NoDuplicateBatchSampler(records, per_rank, seed=9, drop_last=drop_last, num_replicas=world, rank=r)
                for r in range(world)]
    for s in samplers:
        s.set_epoch(2)
    per = [list(s) for s in samplers]
    assert len({len(p) for p in per}) == 1  # every rank takes the same number of steps
    global_batches = samplers[0].global_batches()
    for step, gb in enumerate(global_batches):
        joined = [i for r in range(world) for i in per[r][step]]
        assert joined == gb
        texts = [t for i in gb for t in set(record_texts(records[i]))]
        assert len(texts) == len(set(texts))
        if drop_last:
            assert all(len(per[r][step]) == per_rank for r in range(world))
    seen = sorted(i for p in per for b in p for i in b)
    assert len(seen) == len(set(seen))
    assert len(seen) + samplers[0].dropped_records == 103


def test_works_as_dataloader_batch_sampler():
    from torch.utils.data import DataLoader

    records = [_rec(f"q{i % 7}", pos=[f"p{i}"]) for i in range(30)]
    sampler = NoDuplicateBatchSampler(records, 4, seed=0)
    loader = DataLoader(records, batch_sampler=sampler, collate_fn=lambda batch: [r.query for r in batch])
    queries = list(loader)
    assert len(queries) == len(sampler)
    assert all(len(q) == len(set(q)) for q in queries)
    assert sum(len(q) for q in queries) == 30


def test_sampler_argument_errors():
    with pytest.raises(EmbforgeError, match="batch_size"):
        NoDuplicateBatchSampler([], 0)
    with pytest.raises(EmbforgeError, match="rank must be in"):
        NoDuplicateBatchSampler([], 2, num_replicas=2, rank=2)
