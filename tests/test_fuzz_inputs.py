"""Corrupted inputs end in an EmbforgeError naming the file (and line), or in every line accounted for.

Each example takes a small valid input, applies one random corruption (byte flip, truncation, a
deleted or duplicated line, inserted bytes or text, a field given another JSON type, a key removed)
and loads it strictly and with ``skip_bad_records``. Any other exception is a reader bug: the CLI
would print a traceback instead of a line the user can act on.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embforge.data import BadRecords, load_records
from embforge.errors import EmbforgeError

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

KINDS = ("flip", "truncate", "delete_line", "dup_line", "insert_bytes", "insert_text", "retype", "drop_key")
JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**20), st.floats(), st.text(max_size=5),
                        st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=3),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _retype_line(line: bytes, draw, sep: bytes | None, drop: bool) -> bytes:
    """A JSON line gets one value replaced or one key removed; a TSV line one field (or the field itself)."""
    if sep is None:
        try:
            obj = json.loads(line)
        except ValueError:
            return line
        if not isinstance(obj, dict) or not obj:
            return line
        key = draw(st.sampled_from(sorted(obj)))
        if drop:
            del obj[key]
        else:
            obj[key] = draw(JSON_VALUES)
        return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()
    cols = line.split(sep)
    i = draw(st.integers(0, len(cols) - 1))
    if drop:
        del cols[i]
    else:
        cols[i] = json.dumps(draw(JSON_VALUES)).encode()
    return sep.join(cols)


def corrupt(data: bytes, draw, sep: bytes | None = None) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(KINDS))
    lines = data.split(b"\n")
    n = draw(st.integers(0, max(len(lines) - 2, 0)))  # the last element is the empty one after the final \n
    at = draw(st.integers(0, len(data)))
    if kind == "flip":
        at = min(at, len(data) - 1)
        return kind, data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    if kind == "truncate":
        return kind, data[:at]
    if kind == "delete_line":
        return kind, b"\n".join(lines[:n] + lines[n + 1:])
    if kind == "dup_line":
        return kind, b"\n".join(lines[:n + 1] + lines[n:])
    if kind == "insert_bytes":
        return kind, data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
    if kind == "insert_text":
        return kind, data[:at] + draw(st.text(min_size=1, max_size=6)).encode("utf-8", "surrogatepass") + data[at:]
    lines[n] = _retype_line(lines[n], draw, sep, drop=kind == "drop_key")
    return kind, b"\n".join(lines)


def _nonblank(data: bytes) -> int:
    """Lines a reader must turn into a record or a counted bad record (undecodable lines included)."""
    raw = data.split(b"\n")
    return sum(1 for i, line in enumerate(raw)
               if line.decode("utf-8-sig" if i == 0 else "utf-8", errors="replace").strip())


def _check_error(exc: EmbforgeError, files: list[Path]) -> None:
    """The message starts with one of the files, and a line number it gives exists in that file."""
    msg = str(exc)
    m = re.match(rf"^({'|'.join(re.escape(str(f)) for f in files)})(?::(\d+))?: ", msg)
    assert m, f"error names none of {files}: {msg}"
    if m.group(2):
        text = Path(m.group(1)).read_bytes()  # YAML also breaks lines at a lone \r
        assert 1 <= int(m.group(2)) <= max(text.count(b"\n"), len(text.splitlines())) + 1, msg


def _load_both(path: Path, files: list[Path], **kw) -> list[tuple[list, BadRecords]]:
    """(records, bad) for the strict and the skipping load that succeeded; errors are checked on the spot."""
    out = []
    for skip in (False, True):
        bad = BadRecords()
        try:
            out.append((load_records(path, skip_bad_records=skip, bad_records=bad, **kw), bad))
        except EmbforgeError as exc:
            _check_error(exc, files)
    return out


def _tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="embforge-fuzz-"))


FLAG = [{"query": f"query {i}", "pos": [f"pos {i}"], "neg": [f"neg {i}", "other"], "pos_scores": [1.0],
         "neg_scores": [0.1, 0.2], "prompt": "p: "} for i in range(5)]
FLAG_BYTES = "".join(json.dumps(r) + "\n" for r in FLAG).encode()


@FUZZ
@given(st.data())
def test_flag_jsonl_corruption(data):
    kind, raw = corrupt(FLAG_BYTES, data.draw)
    folder = _tmpdir()
    try:
        path = folder / "train.jsonl"
        path.write_bytes(raw)
        for records, bad in _load_both(path, [path]):
            # Every non-blank line is a record or a counted bad record: nothing vanishes unreported.
            assert len(records) + bad.count == _nonblank(raw), (kind, raw)
    finally:
        shutil.rmtree(folder)


STSB_BYTES = "".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i}.{i}\tA man is {i}.\tA person is {i}.\n"
                     for i in range(5)).encode()


@FUZZ
@given(st.data(), st.sampled_from(["sts-train.csv", "sts-dev.tsv"]))
def test_stsb_corruption(data, name):
    kind, raw = corrupt(STSB_BYTES, data.draw, sep=b"\t")
    folder = _tmpdir()
    try:
        path = folder / name
        path.write_bytes(raw)
        for records, bad in _load_both(path, [path], format="stsb"):
            assert len(records) + bad.count == _nonblank(raw), (kind, raw)
    finally:
        shutil.rmtree(folder)


BEIR = {
    "corpus.jsonl": "".join(json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": f"doc {i}"}) + "\n"
                            for i in range(4)).encode(),
    "queries.jsonl": "".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(4)).encode(),
    "qrels/train.tsv": b"query-id\tcorpus-id\tscore\n" + b"".join(f"q{i}\td{i}\t1\n".encode() for i in range(4)),
}


def _judged_queries(qrels: bytes) -> set[str]:
    """Query ids with a positive judgement, read the plain way (tabs, no quoting, one row per line)."""
    qids = set()
    for line in qrels.decode("utf-8", errors="replace").split("\n"):
        cols = [c.strip() for c in line.strip("\r").split("\t")]
        if len(cols) == 4:
            cols = [cols[0], cols[2], cols[3]]
        try:
            if len(cols) == 3 and int(float(cols[2])) > 0:  # grades are integers; 0.5 counts as 0
                qids.add(cols[0])
        except (ValueError, OverflowError):
            continue
    return qids


@FUZZ
@given(st.data(), st.sampled_from(sorted(BEIR)))
def test_beir_corruption(data, part):
    kind, raw = corrupt(BEIR[part], data.draw, sep=b"\t" if part.endswith(".tsv") else None)
    folder = _tmpdir()
    try:
        (folder / "qrels").mkdir()
        for name, content in BEIR.items():
            (folder / name).write_bytes(raw if name == part else content)
        files = [folder / name for name in BEIR] + [folder]  # "no records" is the folder's
        qrels = (folder / "qrels/train.tsv").read_bytes()
        for records, bad in _load_both(folder, files):
            # One record per judged query: a query lost without a count is what this test exists to catch.
            assert bad.count or len(records) == len(_judged_queries(qrels)), (kind, raw)
            assert len({r.extra["query_id"] for r in records}) == len(records)
    finally:
        shutil.rmtree(folder)


MIXTURE_YAML = b"""use_all: false
num_total_data: 7
allow_duplicate: true
datasets:
  name: [flag, sts]
  data_path: [flag.jsonl, sts.jsonl]
  data_ratio: [0.6, 0.4]
  format: [flag, angle-c]
"""


@FUZZ
@given(st.data())
def test_mixture_yaml_corruption(data):
    from embforge.data.mixture import allocate, load_mixture_config

    kind, raw = corrupt(MIXTURE_YAML, data.draw, sep=b": ")
    folder = _tmpdir()
    try:
        (folder / "flag.jsonl").write_bytes(FLAG_BYTES)
        (folder / "sts.jsonl").write_text("".join(json.dumps({"text": f"a{i}", "positive": f"b{i}"}) + "\n"
                                                  for i in range(3)), encoding="utf-8")
        path = folder / "mix.yaml"
        path.write_bytes(raw)
        try:
            records = load_records(path)
        except EmbforgeError as exc:
            _check_error(exc, [path])
            return
        cfg = load_mixture_config(path)  # it loaded once, so it loads again; the count follows from it
        have = [len(load_records(d.path, format=d.format, split=d.split)) for d in cfg.datasets]
        if cfg.use_all:
            want = sum(have)
        else:
            alloc = allocate(cfg.num_total_data, [d.ratio for d in cfg.datasets])
            want = sum(a if cfg.allow_duplicate else min(a, h) for a, h in zip(alloc, have))
        assert len(records) == want, (kind, raw, yaml.safe_load(raw))
    finally:
        shutil.rmtree(folder)
