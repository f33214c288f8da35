"""``--sanity_test`` data: a small deterministic slice of a BEIR folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

# BEIR inputs are cut to this many queries per split, and the corpus to their positives plus this
# many other documents, so every step runs the real code in seconds.
SANITY_QUERIES = 8
SANITY_DOCS = 40
# A JSONL input (the score step's own file) is cut to its first records: as many as a sanity train step reads.
SANITY_RECORDS = 16


def slice_input(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """The sanity slice of an input: a BEIR folder's (:func:`slice_beir`) or a JSONL file's first records."""
    if Path(src).is_dir():
        return slice_beir(src, dst)
    return slice_jsonl(src, dst)


def slice_jsonl(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                n_records: int = SANITY_RECORDS) -> Path:
    """The first ``n_records`` non-blank lines of a JSONL file (deterministic, so reruns hash the same)."""
    from ..paths import atomic_write_bytes

    src, dst = Path(src), Path(dst)
    if dst.is_file():
        return dst
    lines: list[str] = []
    with src.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                lines.append(line if line.endswith("\n") else line + "\n")
                if len(lines) == n_records:
                    break
    atomic_write_bytes(dst, "".join(lines).encode("utf-8"))
    return dst


def slice_beir(src: str | os.PathLike[str], dst: str | os.PathLike[str], n_queries: int = SANITY_QUERIES,
               n_docs: int = SANITY_DOCS) -> Path:
    """A small BEIR folder: the first queries of each split, their positives and a few other docs.

    Deterministic, so reruns hash the same and resume.
    """
    from ..data.beir import iter_qrels
    from ..paths import atomic_dir

    src, dst = Path(src), Path(dst)
    if (dst / "corpus.jsonl").is_file():
        return dst
    qrel_files = sorted((src / "qrels").glob("*.tsv"))
    keep_queries: set[str] = set()
    keep_docs: set[str] = set()
    rows: dict[str, list[tuple[str, str, int]]] = {}
    for qrel_file in qrel_files:
        chosen: list[str] = []
        for _, qid, did, relevance in iter_qrels(qrel_file):
            if qid not in chosen:
                if len(chosen) >= n_queries:
                    continue
                chosen.append(qid)
            rows.setdefault(qrel_file.name, []).append((qid, did, relevance))
            keep_docs.add(did)
        keep_queries.update(chosen)
    with atomic_dir(dst, command="run slice") as tmp:
        (tmp / "qrels").mkdir()
        for name, triples in rows.items():
            body = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{r}\n" for q, d, r in triples)
            (tmp / "qrels" / name).write_text(body, encoding="utf-8")
        with (src / "queries.jsonl").open(encoding="utf-8") as fh, (tmp / "queries.jsonl").open("w") as out:
            for line in fh:
                if line.strip() and str(json.loads(line).get("_id")) in keep_queries:
                    out.write(line)
        extra = 0
        with (src / "corpus.jsonl").open(encoding="utf-8") as fh, (tmp / "corpus.jsonl").open("w") as out:
            for line in fh:
                if not line.strip():
                    continue
                did = str(json.loads(line).get("_id"))
                if did in keep_docs or extra < n_docs:
                    extra += did not in keep_docs
                    out.write(line)
    return dst
