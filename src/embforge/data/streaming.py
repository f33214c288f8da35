"""Training data larger than memory: one source read lazily, pass after pass, into duplicate-free batches.

A pass reads the source in its own order (:func:`~embforge.data.formats.iter_records`, so a bad line is
reported at its file:line as in memory). Records wait in a pool of at most ``buffer`` records, the
batch being formed included; each batch takes records from the pool in a seeded random order, skipping
any that shares a text with a record already taken (a false in-batch negative otherwise): that record
stays in the pool for a later batch. When the pool runs dry the next pass (epoch) begins, so batches are
always full, which cross-device negatives need. The last batch formed before a pass opens is marked
(``Drawn.ends_pass``): the end of a data epoch, where ``--save_strategy epoch`` saves; a batch that opens a
pass may still finish the previous pass's records, so the mark needs one batch of look-ahead (one batch
more in memory, and an error forming a batch surfaces one step early).

The batches are a pure function of (data, seed, buffer, batch size): nothing but the position in the
stream decides them, so a resumed run re-reads the stream and skips the batches it already trained
instead of storing them, and every process of a distributed run computes the same global batches and
takes its slice.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import EmbforgeError
from .formats import Record, iter_records
from .records import RetrievalRecord, ScoredPair
from .sampling import record_texts

logger = logging.getLogger("embforge.data")

#: Mixed into the seed so the stream's draws differ from other users of the run's seed.
STREAM_KEY = 0x5EED


@dataclass(frozen=True)
class Drawn:
    """A record as the stream hands it out: ``index`` is its position in pass ``epoch`` (from 0), the key
    of its group sampling, so a record's negatives depend on where it is in the data, not on the batch."""

    record: Record
    epoch: int
    index: int
    ends_pass: bool = False  # its batch is the last one formed before the next pass began


@dataclass(frozen=True)
class StreamSource:
    """A single training source (a path, or in-memory rows such as a ``datasets.IterableDataset``) that can
    be read again from the start any number of times."""

    source: Any
    format: str | None = None
    split: str | None = None
    strict: bool = False
    skip_bad_records: bool = False
    max_records: int | None = None

    def open(self) -> Iterator[Record]:
        """One pass over the records, parsed as they are read."""
        records = iter_records(self.source, format=self.format, split=self.split, strict=self.strict,
                               skip_bad_records=self.skip_bad_records)
        return itertools.islice(records, self.max_records) if self.max_records else records


@dataclass
class StreamSummary:
    """What training must know of all the records before the first step, gathered in one pass at
    constant memory: their number, their score range (pairs), and a few representatives: the first record,
    the first of each kind, the first without negatives, the first carrying scores and the first with
    the fewest negatives. The data-kind checks (``check_data_kind``, ``warn_unused_scores``, ``--strict``)
    reach the same verdict on the representatives as on the full list, since they ask "is there one"."""

    count: int = 0
    low: float = float("inf")
    high: float = float("-inf")
    _picked: dict[str, tuple[int, Record]] = field(default_factory=dict)

    @property
    def representatives(self) -> list[Record]:
        unique = {i: record for i, record in self._picked.values()}
        return [unique[i] for i in sorted(unique)]

    def watch(self, records: Iterable[Record]) -> Iterator[Record]:
        """Pass ``records`` through unchanged, taking note of them."""
        for record in records:
            i = self.count
            self.count += 1
            keys = [type(record).__name__]
            if isinstance(record, ScoredPair):
                self.low, self.high = min(self.low, record.score), max(self.high, record.score)
            elif isinstance(record, RetrievalRecord):
                keys += [name for name in ("pos_scores", "neg_scores") if getattr(record, name) is not None]
                keys += [] if record.neg else ["no-negatives"]
                fewest = self._picked.get("fewest")
                if fewest is None or len(record.neg) < len(fewest[1].neg):  # type: ignore[union-attr]
                    self._picked["fewest"] = (i, record)
            for key in keys:
                self._picked.setdefault(key, (i, record))
            yield record


class DuplicateFreeStream:
    """Global batches of ``size`` records without a shared text, drawn from a pool of ``buffer`` records.

    ``open_pass()`` starts a new pass over the data (an epoch). Iterating starts from the beginning of
    the first pass every time, and yields the same batches every time; the stream never ends (bound the
    run by its steps). ``dropped`` counts records discarded because the whole pool shared texts with the
    batch being formed (data far more repetitive than the buffer can spread).
    """

    def __init__(self, open_pass: Callable[[], Iterable[Record]], size: int, buffer: int, seed: int,
                 label: object = "the training data") -> None:
        if size < 1:
            raise EmbforgeError(f"the batch size must be at least 1, got {size}")
        if buffer < size:
            raise EmbforgeError(f"--stream_buffer {buffer} must hold at least one global batch ({size} records)")
        self.open_pass, self.size, self.buffer, self.seed, self.label = open_pass, size, buffer, seed, label
        self.dropped = 0

    def __iter__(self) -> Iterator[list[Drawn]]:
        formed = self._formed()
        batch, _ = next(formed)
        for following, opened in formed:  # one batch ahead: whether the next batch opens a pass
            yield [replace(d, ends_pass=True) for d in batch] if opened else batch
            batch = following

    def _formed(self) -> Iterator[tuple[list[Drawn], bool]]:
        """The batches, each with whether forming it opened a new pass."""
        rng = np.random.default_rng([self.seed, STREAM_KEY])
        size, buffer = self.size, self.buffer
        pool: list[tuple[Drawn, frozenset[str]]] = []
        epoch, index = 0, 0
        reader: Iterator[Record] | None = iter(self.open_pass())
        while True:
            batch: list[Drawn] = []
            seen: set[str] = set()
            passes = 0  # passes begun while forming this batch
            while len(batch) < size:
                while reader is not None and len(pool) + len(batch) < buffer:
                    record = next(reader, None)
                    if record is None:
                        reader = None
                        break
                    pool.append((Drawn(record, epoch, index), frozenset(record_texts(record))))
                    index += 1
                taken = []
                for j in rng.permutation(len(pool)).tolist():
                    drawn, texts = pool[j]
                    if seen.isdisjoint(texts):
                        batch.append(drawn)
                        seen |= texts
                        taken.append(j)
                        if len(batch) == size:
                            break
                for j in sorted(taken, reverse=True):  # swap-remove: the pool's order is part of the pure state
                    pool[j] = pool[-1]
                    pool.pop()
                if len(batch) == size:
                    break
                if reader is None:
                    self._next_pass_check(index, passes, epoch)
                    passes += 1
                    epoch, index, reader = epoch + 1, 0, iter(self.open_pass())
                else:
                    self._drop(len(pool), epoch)
                    pool.clear()
            yield batch, passes > 0

    def _next_pass_check(self, read: int, passes: int, epoch: int) -> None:
        if read == 0:
            raise EmbforgeError(f"{self.label}: no training records" + (
                f" in pass {epoch + 1} over the data (did it change during training?)" if epoch else ""))
        if passes:
            raise EmbforgeError(f"{self.label}: no batch of {self.size} records without duplicate texts can be "
                                "formed from the data; use a smaller batch or more varied data")

    def _drop(self, n: int, epoch: int) -> None:
        if not self.dropped:
            logger.warning("%s: all %d records waiting in the stream buffer share a text with the batch being "
                           "formed (pass %d); dropping them. The data repeats texts more than --stream_buffer %d "
                           "can spread: raise it, or deduplicate the data", self.label, n, epoch, self.buffer)
        self.dropped += n
