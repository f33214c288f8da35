"""Files -> records. Readers stream records and never touch a model.

Single sources go through :func:`load_records` / :func:`iter_records` (format auto-detected, or
named); YAML mixtures through :mod:`embforge.data.mixture`; training-time sampling through
:mod:`embforge.data.sampling`; precomputed embeddings through :mod:`embforge.data.npz`. A BEIR folder
read as an evaluation set (corpus + queries + qrels of one split) comes from :func:`load_beir`.
In-memory data from Python (lists of dicts, ``datasets.Dataset``, pandas DataFrames) goes through
:func:`load_records` too (:mod:`embforge.data.memory`).
"""

from .beir import BeirSplit, load_beir
from .formats import FORMATS, count_records, detect_format, iter_records
from .instructions import passage_text, query_text
from .loading import load_records
from .memory import InMemoryData
from .problems import BadRecord, BadRecords
from .records import RetrievalRecord, ScoredPair

__all__ = [
    "FORMATS", "BadRecord", "BadRecords", "BeirSplit", "InMemoryData", "load_beir", "RetrievalRecord", "ScoredPair", "count_records", "detect_format",
    "iter_records", "load_records", "passage_text", "query_text",
]
