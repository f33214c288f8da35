"""Records -> training batches: group sampling, instructions and tokenisation.

Group sampling is seeded by (seed, epoch, record index) rather than by a running RNG, so a batch's
content does not depend on what came before it: resuming from a checkpoint, or splitting a global
batch across processes, reproduces exactly the groups of an uninterrupted single-process run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from ..data.instructions import passage_text, query_text
from ..data.records import RetrievalRecord
from ..data.sampling import sample_group


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

    def __init__(self, encoder: Any, group_size: int):
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
