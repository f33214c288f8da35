"""Records -> training batches: query groups or scored pairs, instructions and tokenisation.

Group sampling is seeded by (seed, epoch, record index) rather than by a running RNG, so a batch's
content does not depend on what came before it: resuming from a checkpoint, or splitting a global
batch across processes, reproduces exactly the groups of an uninterrupted single-process run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..data.instructions import passage_text, query_text
from ..data.records import RetrievalRecord, ScoredPair
from ..data.sampling import sample_group_indices
from ..errors import EmbforgeError

if TYPE_CHECKING:  # pragma: no cover
    from ..data.streaming import Drawn, DuplicateFreeStream
    from ..model.encoder import Encoder


#: A group item: (query text, [positive, negatives...]), plus the teacher's score of each of those passages
#: when the dataset was asked for them (``with_scores``).
GroupItem = tuple[str, list[str]] | tuple[str, list[str], list[float]]


class GroupDataset(Dataset):
    """Item i = (query text, [positive, negatives...]) for record i in the current epoch; with ``with_scores``,
    (query text, passages, their teacher scores): the record's ``pos_scores`` / ``neg_scores`` entries of the
    very passages sampled, so a score always travels with its text."""

    def __init__(self, records: Sequence[RetrievalRecord], group_size: int, seed: int,
                 query_instruction: str | None, passage_instruction: str | None, strict: bool = False,
                 with_scores: bool = False):
        self.records = records
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0
        self.query_instruction = query_instruction
        self.passage_instruction = passage_instruction
        self.strict = strict
        self.with_scores = with_scores

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> GroupItem:
        return self.group(self.records[index], self.epoch, index)

    def group(self, record: RetrievalRecord, epoch: int, index: int) -> GroupItem:
        """(query text, [positive, negatives...]) of ``record``, drawn with the key (seed, epoch, index)."""
        rng = random.Random(f"{self.seed}/{epoch}/{index}")
        pos, negs = sample_group_indices(record, self.group_size, rng, strict=self.strict)
        texts = [record.pos[pos], *(record.neg[i] for i in negs)]
        group = [passage_text(t, self.passage_instruction) for t in texts]
        query = query_text(record, self.query_instruction)
        if not self.with_scores:
            return query, group
        return query, group, [*teacher_scores(record, [pos], "pos"), *teacher_scores(record, negs, "neg")]


def teacher_scores(record: RetrievalRecord, chosen: Sequence[int], side: str) -> list[float]:
    """The record's ``{side}_scores`` at the ``chosen`` indices; a record without them (or with a count that
    does not match its texts, possible for records built in Python) fails naming its file:line."""
    scores, texts = getattr(record, f"{side}_scores"), getattr(record, side)
    where = record.source or "a record"
    if not chosen:
        return []
    if scores is None:
        raise EmbforgeError(f"{where}: --teacher_scores needs '{side}_scores' (one teacher score per '{side}' "
                            "text) in every record; this one has none")
    if len(scores) != len(texts):
        raise EmbforgeError(f"{where}: field '{side}_scores' has {len(scores)} scores for {len(texts)} texts")
    return [scores[i] for i in chosen]


class GroupCollator:
    """Tokenises queries and passage groups with the encoder's own rules and per-side max lengths; items
    carrying teacher scores add ``teacher_scores`` (B, group_size), aligned with the passages."""

    def __init__(self, encoder: Encoder, group_size: int):
        self.encoder = encoder
        self.group_size = group_size

    def __call__(self, items: Sequence[GroupItem]) -> dict[str, Any]:
        queries = [item[0] for item in items]
        passages, scores = [], []
        for item in items:
            group = item[1]
            short = self.group_size - len(group)
            # A record without enough negatives (non-strict): pad its group with its positive
            # repeated; duplicates of the target score the same and add no false negative.
            # (Its teacher score is repeated with it.)
            passages.extend(group + [group[0]] * short)
            if len(item) == 3:
                scores.append(item[2] + [item[2][0]] * short)
        enc = self.encoder
        out: dict[str, Any] = {
            "query": enc.collate(enc.token_ids(queries, is_query=True, instruction="")),
            "passage": enc.collate(enc.token_ids(passages, is_query=False, instruction="")),
        }
        if scores:
            out["teacher_scores"] = torch.tensor(scores, dtype=torch.float32)
        return out


class PairDataset(Dataset):
    """Item i = (text1, text2, score in [0, 1]) for scored pair i (AnglE format A, STS-B, SICK-R).

    Scores are rescaled with the data's own range (STS-B 0-5, SICK 1-5, NLI 0/1 all become [0, 1]),
    so cosine regression gets targets a cosine can reach and AnglE's in-batch term can call the
    upper half of the range positive without knowing the scale.
    """

    def __init__(self, records: Sequence[ScoredPair], instruction: str | None = None,
                 score_range: tuple[float, float] | None = None):
        self.records = records
        self.instruction = instruction
        values = [r.score for r in records]
        self.low, self.high = score_range or (min(values), max(values))
        if self.high == self.low:
            raise EmbforgeError(f"every training pair has the score {self.low}: a pair loss has nothing to rank")

    def set_epoch(self, epoch: int) -> None:  # pairs are fixed; the sampler shuffles
        pass

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[str, str, float]:
        return self.pair(self.records[index])

    def pair(self, r: ScoredPair) -> tuple[str, str, float]:
        prefix = self.instruction or ""
        return prefix + r.text1, prefix + r.text2, (r.score - self.low) / (self.high - self.low)


class StreamingDataset(IterableDataset):
    """This process's micro-batches of a :class:`~embforge.data.streaming.DuplicateFreeStream`, as lists of
    items (``item(drawn)``: a group or a scored pair) for a ``DataLoader(batch_size=None)``.

    Rank ``rank`` takes its slice of each global batch, as with the in-memory sampler. ``start`` global
    batches are skipped first (the ones a resumed run already trained): they are formed again but never
    turned into texts or tokens. DataLoader workers take every ``num_workers``-th batch in turn, which is
    the order the DataLoader reads them back in.
    """

    def __init__(self, stream: DuplicateFreeStream, items: GroupDataset | PairDataset, batch_size: int,
                 rank: int = 0) -> None:
        self.stream, self.items, self.batch_size, self.rank = stream, items, batch_size, rank
        self.start = 0

    def item(self, drawn: Drawn) -> Any:
        record = drawn.record
        if isinstance(self.items, PairDataset) and isinstance(record, ScoredPair):
            return self.items.pair(record)
        if isinstance(self.items, GroupDataset) and isinstance(record, RetrievalRecord):
            return self.items.group(record, drawn.epoch, drawn.index)
        raise EmbforgeError(f"{record.source or 'a record'}: a {type(record).__name__} in a stream of the other kind")

    def set_epoch(self, epoch: int) -> None:  # passes over the data are counted by the stream itself
        pass

    def __iter__(self) -> Iterator[list[Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        lo = self.rank * self.batch_size
        for i, batch in enumerate(self.stream):
            if i >= self.start and (i - self.start) % workers == worker:
                yield [self.item(drawn) for drawn in batch[lo:lo + self.batch_size]]


class PairCollator:
    """Both sides as passages (a scored pair has no query side), plus the scores."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder

    def __call__(self, items: list[tuple[str, str, float]]) -> dict[str, Any]:
        enc = self.encoder
        return {
            "text1": enc.collate(enc.token_ids([a for a, _, _ in items], is_query=False, instruction="")),
            "text2": enc.collate(enc.token_ids([b for _, b, _ in items], is_query=False, instruction="")),
            "scores": torch.tensor([s for _, _, s in items], dtype=torch.float32),
        }
