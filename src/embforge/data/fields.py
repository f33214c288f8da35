"""Field rules: one mapping (a JSONL line, a parquet/csv row, an HF dataset row) -> one record.

Every tabular-ish source goes through these rules, so a column called ``pos`` means the same in a
JSONL file, a parquet file and a ``save_to_disk`` folder, and a bad value gets the same message
(location + field name) wherever it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .problems import BadRecord, warn_or_raise
from .records import RetrievalRecord, ScoredPair

# Keys each format must have; the first format whose keys are all present wins.
REQUIRED: dict[str, tuple[str, ...]] = {
    "flag": ("query", "pos"),
    "angle-a": ("text1", "text2", "label"),
    "angle-b": ("text", "positive", "negative"),
    "angle-c": ("text", "positive"),
}
FLAG_KNOWN = ("query", "pos", "neg", "prompt", "pos_scores", "neg_scores", "type")

# sentence-transformers' column names, used only when the canonical key is absent, so HF datasets
# in the (anchor, positive, negative) or (sentence1, sentence2, score) layouts load unchanged.
DEFAULT_ALIASES: dict[str, str] = {"anchor": "text", "sentence1": "text1", "sentence2": "text2",
                                   "score": "label"}


def rename_fields(obj: Mapping[str, Any], field_map: Mapping[str, str] | None) -> dict[str, Any]:
    """Apply a user's ``{their_column: our_field}`` map, then the default aliases where unambiguous."""
    out = dict(obj)
    for theirs, ours in (field_map or {}).items():
        if theirs in out:
            out[ours] = out.pop(theirs)
    for theirs, ours in DEFAULT_ALIASES.items():
        if theirs in out and ours not in out:
            out[ours] = out.pop(theirs)
    return out


def format_of(keys: Mapping[str, Any] | list[str]) -> str | None:
    """The record format a set of keys describes, or None when it matches none."""
    have = set(keys)
    for name, need in REQUIRED.items():
        if have.issuperset(need):
            return name
    return None


def _text(obj: Mapping[str, Any], key: str, loc: str) -> str:
    if key not in obj or obj[key] is None:
        raise BadRecord(loc, f"missing field {key!r}", key)
    value = obj[key]
    if not isinstance(value, str):
        raise BadRecord(loc, f"field {key!r} must be a string, got {type(value).__name__}", key)
    if not value.strip():
        raise BadRecord(loc, f"field {key!r} is an empty text", key)
    return value


def _texts(obj: Mapping[str, Any], key: str, loc: str, required: bool) -> list[str]:
    """A list of texts; a bare string counts as a list of one (csv columns cannot hold lists)."""
    value = obj.get(key)
    if value is None:
        if required:
            raise BadRecord(loc, f"missing field {key!r}", key)
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise BadRecord(loc, f"field {key!r} must be a list of strings, got {type(value).__name__}", key)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise BadRecord(loc, f"field {key!r} item {i} must be a string, got {type(item).__name__}", key)
        if not item.strip():
            raise BadRecord(loc, f"field {key!r} item {i} is an empty text", key)
    if required and not value:
        raise BadRecord(loc, f"field {key!r} is empty (every query needs at least one positive)", key)
    return list(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scores(obj: Mapping[str, Any], key: str, texts: list[str], loc: str) -> list[float] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(_number(v) for v in value):
        raise BadRecord(loc, f"field {key!r} must be a list of numbers", key)
    if len(value) != len(texts):
        raise BadRecord(loc, f"field {key!r} has {len(value)} scores for {len(texts)} texts", key)
    return [float(v) for v in value]


def _optional_str(obj: Mapping[str, Any], key: str, loc: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRecord(loc, f"field {key!r} must be a string, got {type(value).__name__}", key)
    return value


def flag_record(obj: Mapping[str, Any], loc: str, strict: bool = False) -> RetrievalRecord:
    query = _text(obj, "query", loc)
    pos = _texts(obj, "pos", loc, required=True)
    neg = _texts(obj, "neg", loc, required=False)
    overlap = set(pos) & set(neg)
    if overlap:
        warn_or_raise("neg-has-pos", f"{loc}: field 'neg' repeats a positive text (a false negative)", strict)
    return RetrievalRecord(
        query=query, pos=pos, neg=neg,
        prompt=_optional_str(obj, "prompt", loc),
        pos_scores=_scores(obj, "pos_scores", pos, loc),
        neg_scores=_scores(obj, "neg_scores", neg, loc),
        type=_optional_str(obj, "type", loc),
        source=loc,
        extra={k: v for k, v in obj.items() if k not in FLAG_KNOWN},
    )


def angle_a_record(obj: Mapping[str, Any], loc: str, strict: bool = False) -> ScoredPair:
    text1, text2 = _text(obj, "text1", loc), _text(obj, "text2", loc)
    if "label" not in obj or obj["label"] is None:
        raise BadRecord(loc, "missing field 'label'", "label")
    label = obj["label"]
    if not _number(label):
        raise BadRecord(loc, f"field 'label' must be a number (0/1 or a score), got {type(label).__name__}", "label")
    return ScoredPair(text1, text2, float(label), loc)


def angle_b_record(obj: Mapping[str, Any], loc: str, strict: bool = False) -> RetrievalRecord:
    return RetrievalRecord(query=_text(obj, "text", loc), pos=[_text(obj, "positive", loc)],
                           neg=[_text(obj, "negative", loc)], source=loc)


def angle_c_record(obj: Mapping[str, Any], loc: str, strict: bool = False) -> RetrievalRecord:
    return RetrievalRecord(query=_text(obj, "text", loc), pos=[_text(obj, "positive", loc)], source=loc)


RULES: dict[str, Callable[[Mapping[str, Any], str, bool], RetrievalRecord | ScoredPair]] = {"flag": flag_record, "angle-a": angle_a_record, "angle-b": angle_b_record, "angle-c": angle_c_record}


def to_record(obj: Any, fmt: str, loc: str, strict: bool = False) -> RetrievalRecord | ScoredPair:
    """Apply ``fmt``'s rule; a row that is not a mapping is a bad record, not a crash."""
    if not isinstance(obj, Mapping):
        raise BadRecord(loc, f"expected a JSON object, got {type(obj).__name__}")
    return RULES[fmt](obj, loc, strict)
