"""Records -> training batches: query groups or scored pairs, instructions and tokenisation.

Group sampling is seeded by (seed, epoch, record index) rather than by a running RNG, so a batch's
content does not depend on what came before it: resuming from a checkpoint, or splitting a global
batch across processes, reproduces exactly the groups of an uninterrupted single-process run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from ..data.instructions import passage_text, query_text
from ..data.records import RetrievalRecord, ScoredPair
from ..data.sampling import sample_group
from ..errors import EmbforgeError

if TYPE_CHECKING:  # pragma: no cover
    from ..model.encoder import Encoder


class GroupDataset(Dataset):
    """Item i = (query text, [positive, negatives...]) for record i in the current epoch."""

    def __init__(self, records: Sequence[RetrievalRecord], group_size: int, seed: int,
                 query_instruction: str | None, passage_instruction: str | None, strict: bool = False):
        self.records = records
        self.group_size = group_size
        self.seed = seed
        self.epoch = 0
        self.query_instruction = query_instruction
        self.passage_instruction = passage_instruction
        self.strict = strict

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[str, list[str]]:
        record = self.records[index]
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        positive, negatives = sample_group(record, self.group_size, rng, strict=self.strict)
        group = [passage_text(t, self.passage_instruction) for t in [positive, *negatives]]
        return query_text(record, self.query_instruction), group


class GroupCollator:
    """Tokenises queries and passage groups with the encoder's own rules and per-side max lengths."""

    def __init__(self, encoder: Encoder, group_size: int):
        self.encoder = encoder
        self.group_size = group_size

    def __call__(self, items: list[tuple[str, list[str]]]) -> dict[str, dict[str, torch.Tensor]]:
        queries = [q for q, _ in items]
        passages = []
        for _, group in items:
            if len(group) < self.group_size:
                # A record without enough negatives (non-strict): pad its group with its positive
                # repeated; duplicates of the target score the same and add no false negative.
                group = group + [group[0]] * (self.group_size - len(group))
            passages.extend(group)
        enc = self.encoder
        return {
            "query": enc.collate(enc.token_ids(queries, is_query=True, instruction="")),
            "passage": enc.collate(enc.token_ids(passages, is_query=False, instruction="")),
        }


class PairDataset(Dataset):
    """Item i = (text1, text2, score in [0, 1]) for scored pair i (AnglE format A, STS-B, SICK-R).

    Scores are rescaled with the data's own range (STS-B 0-5, SICK 1-5, NLI 0/1 all become [0, 1]),
    so cosine regression gets targets a cosine can reach and AnglE's in-batch term can call the
    upper half of the range positive without knowing the scale.
    """

    def __init__(self, records: Sequence[ScoredPair], instruction: str | None = None):
        self.records = records
        self.instruction = instruction
        values = [r.score for r in records]
        self.low, self.high = min(values), max(values)
        if self.high == self.low:
            raise EmbforgeError(f"every training pair has the score {self.low}: a pair loss has nothing to rank")

    def set_epoch(self, epoch: int) -> None:  # pairs are fixed; the sampler shuffles
        pass

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[str, str, float]:
        r = self.records[index]
        prefix = self.instruction or ""
        return prefix + r.text1, prefix + r.text2, (r.score - self.low) / (self.high - self.low)


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
