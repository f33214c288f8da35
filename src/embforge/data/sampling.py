"""Training-time sampling without a model: groups (one positive, g-1 negatives) and batches.

Both are pure functions of (records, seed, epoch), so a resumed run sees exactly the batches and
groups it would have seen, and a test can check them without a GPU.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import EmbforgeError
from .problems import warn_or_raise
from .records import RetrievalRecord, ScoredPair

logger = logging.getLogger("embforge.data")

Rng = random.Random | np.random.Generator


def _below(rng: Rng, n: int) -> int:
    return int(rng.integers(n)) if isinstance(rng, np.random.Generator) else rng.randrange(n)


def _without_replacement(rng: Rng, n: int, k: int) -> list[int]:
    if isinstance(rng, np.random.Generator):
        return [int(i) for i in rng.choice(n, size=k, replace=False)]
    return rng.sample(range(n), k)


def sample_group(record: RetrievalRecord, group_size: int, rng: Rng, strict: bool = False) -> tuple[str, list[str]]:
    """(one positive, ``group_size - 1`` negatives) for one query, FlagEmbedding's ``train_group_size``.

    Negatives are drawn without replacement. A record with fewer negatives than needed gives all of
    them once and fills the rest by drawing with replacement (more variety than drawing every slot
    with replacement); a record with none gives an empty list, and the loss falls back to in-batch
    negatives. Both cases warn once per process, or raise under ``strict`` naming the record's
    source, because a data set full of short lists silently weakens training.
    """
    pos, negs = sample_group_indices(record, group_size, rng, strict)
    return record.pos[pos], [record.neg[i] for i in negs]


def sample_group_indices(record: RetrievalRecord, group_size: int, rng: Rng,
                         strict: bool = False) -> tuple[int, list[int]]:
    """:func:`sample_group` as indices into ``record.pos`` and ``record.neg`` (the same draws), so that
    per-passage data such as teacher scores can follow the texts chosen."""
    if group_size < 1:
        raise EmbforgeError(f"train_group_size must be at least 1, got {group_size}")
    if not record.pos:
        raise EmbforgeError(f"{record.source or 'record'}: field 'pos' is empty (every query needs a positive)")
    positive = _below(rng, len(record.pos))
    need, have = group_size - 1, len(record.neg)
    if need == 0:
        return positive, []
    where = record.source or "a record"
    if have == 0:
        warn_or_raise("no-negatives", f"{where}: field 'neg' is empty but train_group_size={group_size} "
                      "asks for negatives; using none for this query", strict)
        return positive, []
    if have >= need:
        return positive, _without_replacement(rng, have, need)
    warn_or_raise("few-negatives", f"{where}: field 'neg' has {have} text(s) but train_group_size={group_size} "
                  f"needs {need}; repeating negatives", strict)
    order = _without_replacement(rng, have, have)
    order += [_below(rng, have) for _ in range(need - have)]
    return positive, order


def record_texts(record: Any) -> list[str]:
    """Every text a record can put into a batch: query, all positives and all negatives.

    Conservative on purpose: any positive or negative may be the one sampled for the group, so two
    records that share any text can produce a false in-batch negative.
    """
    if isinstance(record, RetrievalRecord):
        return [record.query, *record.pos, *record.neg]
    if isinstance(record, ScoredPair):
        return [record.text1, record.text2]
    if isinstance(record, str):
        return [record]
    if isinstance(record, dict):
        return record_texts(RetrievalRecord(record["query"], list(record.get("pos", [])), list(record.get("neg", []))))
    raise TypeError(f"cannot take texts from a {type(record).__name__}")


class NoDuplicateBatchSampler:
    """Batches of record indices in which no text appears in two different records.

    A text shared by two records of one batch (the same query twice, or one query's positive as
    another's negative) is scored as a negative for a query it answers: a false in-batch negative.
    Each epoch shuffles the indices with ``(seed, epoch)`` and fills batches greedily in that order;
    a record that clashes with the batch being filled is deferred and tried first for the next
    batch. Batches where that happened are counted in ``rearranged_batches`` and logged. Records
    that clash with everything left end up in smaller batches at the end (dropped with
    ``drop_last``), so every record appears exactly once per epoch without ``drop_last``.

    Distributed training: the sampler builds *global* batches of ``batch_size * num_replicas``
    records, free of duplicates as a whole (cross-device negatives see all of them), and yields
    rank ``rank``'s slice of ``batch_size``. Every rank computes the same global batches from the
    same seed, so no communication is needed. Short trailing global batches are split as evenly as
    possible; one with fewer records than ranks is dropped (counted in ``dropped_records``) so that
    every rank takes the same number of steps. Use ``drop_last=True`` when the loss gathers
    embeddings across ranks, since all_gather needs equal batch sizes.

    Pass it to ``torch.utils.data.DataLoader(dataset, batch_sampler=sampler)`` and call
    ``set_epoch(epoch)`` before each epoch, as with ``DistributedSampler``.
    """

    def __init__(self, records: Sequence[Any], batch_size: int, seed: int = 42, drop_last: bool = False,
                 shuffle: bool = True, num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise EmbforgeError(f"batch_size must be at least 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise EmbforgeError(f"rank must be in [0, num_replicas); got rank={rank}, num_replicas={num_replicas}")
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.rearranged_batches = 0
        self.dropped_records = 0
        ids: dict[str, int] = {}
        # Texts become small ints once, so each epoch's clash checks are set operations on ints.
        self._texts: list[frozenset[int]] = [
            frozenset(ids.setdefault(t, len(ids)) for t in record_texts(r)) for r in records
        ]
        self._cache: tuple[int, list[list[int]]] | None = None

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """The duplicate-free global batches of ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        n = len(self._texts)
        order: list[int] = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                            else np.arange(n)).tolist()
        size = self.global_batch_size
        batches: list[list[int]] = []
        deferred: list[int] = []
        rearranged = 0
        stream = iter(order)
        exhausted = False
        while not exhausted or deferred:
            batch: list[int] = []
            seen: set[int] = set()
            clashed = False
            still_deferred: list[int] = []
            for k, i in enumerate(deferred):  # records that waited get the first chance
                if len(batch) == size:
                    still_deferred.extend(deferred[k:])
                    break
                if seen.isdisjoint(self._texts[i]):
                    batch.append(i)
                    seen |= self._texts[i]
                else:
                    still_deferred.append(i)
            took_deferred = len(deferred) > len(still_deferred)
            deferred = still_deferred
            while len(batch) < size and not exhausted:
                j = next(stream, None)
                if j is None:
                    exhausted = True
                    break
                if seen.isdisjoint(self._texts[j]):
                    batch.append(j)
                    seen |= self._texts[j]
                else:
                    deferred.append(j)
                    clashed = True
            if not batch:  # cannot happen (a lone record never clashes), but never loop forever
                break
            rearranged += clashed or took_deferred
            batches.append(batch)
        dropped = 0
        if self.drop_last:
            dropped = sum(len(b) for b in batches if len(b) < size)
            batches = [b for b in batches if len(b) == size]
        elif self.num_replicas > 1:
            dropped = sum(len(b) for b in batches if len(b) < self.num_replicas)
            batches = [b for b in batches if len(b) >= self.num_replicas]
        self.rearranged_batches = int(rearranged)
        self.dropped_records = dropped
        if rearranged or dropped:
            logger.info("no-duplicate sampler, epoch %d: rearranged %d of %d batches to avoid duplicate texts; "
                        "dropped %d record(s)", epoch, rearranged, len(batches), dropped)
        self._cache = (epoch, batches)
        return batches

    def _slice(self, batch: list[int]) -> list[int]:
        if self.num_replicas == 1:
            return batch
        if len(batch) == self.global_batch_size:
            return batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return [int(i) for i in np.array_split(np.asarray(batch), self.num_replicas)[self.rank]]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield self._slice(batch)

    def __len__(self) -> int:
        return len(self.global_batches())
