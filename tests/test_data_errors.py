"""Bad input: every case names file:line and the field, or is skipped and counted with its location."""

from __future__ import annotations

import json
import logging
import re

import pytest

from embforge.data import BadRecords, load_records
from embforge.errors import EmbforgeError


def _e(path) -> str:
    """A path as a regex that matches only itself (tmp paths may hold regex characters)."""
    return re.escape(str(path))


GOOD = {"query": "q", "pos": ["p"], "neg": ["n"]}


def _file(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines), encoding="utf-8")
    return path


# (bad line, message pattern naming the field)
FLAG_CASES = [
    ('{"query": "q", "pos": ["p"]', r"invalid JSON"),
    ({"pos": ["p"], "query": None}, r"missing field 'query'"),
    ({"query": "q", "pos": []}, r"field 'pos' is empty"),
    ({"query": "q", "pos": ["p", 7]}, r"field 'pos' item 1 must be a string, got int"),
    ({"query": 3, "pos": ["p"]}, r"field 'query' must be a string, got int"),
    ({"query": "q", "pos": ["p"], "neg": "n", "neg_scores": [0.1, 0.2]}, r"field 'neg_scores' has 2 scores for 1 texts"),
    ({"query": "q", "pos": {"a": 1}}, r"field 'pos' must be a list of strings, got dict"),
    ({"query": "q", "pos": ["p"], "prompt": 5}, r"field 'prompt' must be a string"),
    ({"query": " ", "pos": ["p"]}, r"field 'query' is an empty text"),
    ('["query", "pos"]', r"expected a JSON object, got list"),
]


@pytest.mark.parametrize("bad,pattern", FLAG_CASES)
def test_flag_bad_line_names_file_line_and_field(tmp_path, bad, pattern):
    path = _file(tmp_path, [GOOD, GOOD, bad, GOOD])
    with pytest.raises(EmbforgeError, match=rf"{_e(path)}:3: {pattern}"):
        load_records(path, format="flag")


ANGLE_CASES = [
    ("angle-a", {"text1": "a", "text2": "b", "label": "yes"}, r"field 'label' must be a number"),
    ("angle-a", {"text1": "a", "text2": "b", "label": True}, r"field 'label' must be a number"),
    ("angle-a", {"text1": "a", "text2": "b"}, r"missing field 'label'"),
    ("angle-b", {"text": "a", "positive": "b"}, r"missing field 'negative'"),
    ("angle-c", {"text": "a", "positive": ["b"]}, r"field 'positive' must be a string, got list"),
]
ANGLE_GOOD = {"angle-a": {"text1": "a", "text2": "b", "label": 1}, "angle-b": {"text": "a", "positive": "b", "negative": "c"},
              "angle-c": {"text": "a", "positive": "b"}}


@pytest.mark.parametrize("fmt,bad,pattern", ANGLE_CASES)
def test_angle_bad_line(tmp_path, fmt, bad, pattern):
    path = _file(tmp_path, [ANGLE_GOOD[fmt], bad])
    with pytest.raises(EmbforgeError, match=rf"{_e(path)}:2: {pattern}"):
        load_records(path)  # format detected from line 1


def test_skip_bad_records_counts_and_keeps_first_five_locations(tmp_path, caplog):
    lines = [GOOD] + [{"query": "q", "pos": []}] * 7 + ["{oops", GOOD]
    path = _file(tmp_path, lines)
    bad = BadRecords()
    with caplog.at_level(logging.WARNING, logger="embforge.data"):
        records = load_records(path, skip_bad_records=True, bad_records=bad)
    assert len(records) == 2
    assert bad.count == 8
    assert bad.first_locations == [f"{path}:{n}" for n in range(2, 7)]
    assert "field 'pos' is empty" in bad.first_messages[0]
    assert f"{path}: skipped 8 bad record(s); first at {path}:2" in caplog.text


def test_invalid_utf8_is_a_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    with pytest.raises(EmbforgeError, match=rf"{_e(path)}:2: not valid UTF-8"):
        load_records(path, format="flag")
    assert len(load_records(path, format="flag", skip_bad_records=True)) == 1


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(EmbforgeError, match="no such file or folder"):
        load_records(tmp_path / "nope.jsonl")
    # A folder or a dangling link where the file should be: unreadable for every user, root included
    # (root reads a chmod 0 file, so a permission test would prove nothing there).
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    with pytest.raises(EmbforgeError, match=rf"^{_e(folder)}: cannot read: Is a directory$"):
        load_records(folder, format="flag")
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(EmbforgeError, match=rf"^{_e(link)}: file not found$"):
        load_records(link, format="flag")
    with pytest.raises(EmbforgeError, match="no records"):
        load_records(_file(tmp_path, [], name="empty.jsonl"), format="flag")


def test_unknown_format_lists_expected_keys(tmp_path):
    path = _file(tmp_path, [{"question": "q"}])
    with pytest.raises(EmbforgeError, match=r"keys \(question\); expected flag: query, pos"):
        load_records(path)


def test_strict_makes_a_positive_among_negatives_an_error(tmp_path):
    path = _file(tmp_path, [{"query": "q", "pos": ["p"], "neg": ["p", "n"]}])
    assert len(load_records(path)) == 1
    with pytest.raises(EmbforgeError, match=rf"{_e(path)}:1: field 'neg' repeats a positive"):
        load_records(path, strict=True)


def test_beir_qrels_unknown_ids_and_bad_score(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    _file(folder, [{"_id": "d1", "title": "T", "text": "doc one"}], name="corpus.jsonl")
    _file(folder, [{"_id": "q1", "text": "query one"}], name="queries.jsonl")
    (folder / "qrels" / "train.tsv").write_bytes(
        b"query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td9\t1\r\nq7\td1\t1\r\nq1\td1\thigh\r\n")
    qrels = folder / "qrels" / "train.tsv"
    with pytest.raises(EmbforgeError, match=rf"{_e(qrels)}:3: field 'corpus-id' 'd9' is not in corpus.jsonl"):
        load_records(folder)
    bad = BadRecords()
    (rec,) = load_records(folder, skip_bad_records=True, bad_records=bad)
    assert rec.pos == ["T doc one"]
    assert bad.first_locations == [f"{qrels}:3", f"{qrels}:4", f"{qrels}:5"]
    assert "field 'query-id' 'q7'" in bad.first_messages[1]
    assert "field 'score' must be a number" in bad.first_messages[2]


def test_stsb_bad_score_and_short_row(tmp_path):
    path = tmp_path / "sts-train.csv"
    path.write_text("main\tf\t2012\t1\t4.0\ta\tb\nmain\tf\t2012\t2\tx\ta\tb\nmain\tf\t2012\t3\t1.0\ta\n",
                    encoding="utf-8")
    with pytest.raises(EmbforgeError, match=rf"{_e(path)}:2: field 'score' must be a number, got 'x'"):
        load_records(path)
    bad = BadRecords()
    assert len(load_records(path, skip_bad_records=True, bad_records=bad)) == 1
    assert bad.first_locations == [f"{path}:2", f"{path}:3"]


def test_sick_bad_relatedness(tmp_path):
    path = tmp_path / "SICK.txt"
    path.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tSemEval_set\r\n"
                    "1\ta\tb\t4.5\tTRAIN\r\n2\ta\tc\tn/a\tTEST", encoding="utf-8")
    with pytest.raises(EmbforgeError, match=rf"{_e(path)}:3: field 'relatedness_score' must be a number"):
        load_records(path)


def test_nli_bad_label_and_misaligned_files(tmp_path):
    folder = tmp_path / "nli"
    folder.mkdir()
    (folder / "s1.dev").write_text("p .\np .\np .\n")
    (folder / "s2.dev").write_text("e .\nc .\nx .\n")
    (folder / "labels.dev").write_text("entailment\ncontradiction\nmaybe\n")
    with pytest.raises(EmbforgeError, match=rf"{_e(folder / 'labels.dev')}:3: field 'label' must be one of"):
        load_records(folder)
    (rec,) = load_records(folder, skip_bad_records=True)
    assert (rec.pos, rec.neg) == (["e ."], ["c ."])
    (folder / "s2.dev").write_text("e .\nc .\n")
    with pytest.raises(EmbforgeError, match=rf"{_e(folder / 's2.dev')}:3: file ends here"):
        load_records(folder)


def test_hf_row_with_wrong_type_names_row_and_field(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"query": ["a", "b"], "pos": [["x"], []]}).to_parquet(str(tmp_path / "t.parquet"))
    with pytest.raises(EmbforgeError, match=r"t.parquet:row 2: field 'pos' is empty"):
        load_records(tmp_path / "t.parquet")


def _beir(folder, corpus=({"_id": "d1", "text": "doc one"},), queries=({"_id": "q1", "text": "query one"},),
          qrels="q1\td1\t1\n"):
    (folder / "qrels").mkdir(parents=True)
    _file(folder, corpus, name="corpus.jsonl")
    _file(folder, queries, name="queries.jsonl")
    (folder / "qrels" / "train.tsv").write_text(qrels)
    return folder


BEIR_CASES = [
    ("corpus", '{"_id": "d2", "text": ', r"invalid JSON: Expecting value"),
    ("corpus", '["d2", "text"]', r"expected a JSON object"),
    ("corpus", {"text": "doc two"}, r"missing field '_id'"),
    ("corpus", {"_id": "d2", "title": "T"}, r"missing field 'text'"),
    ("corpus", {"_id": ["d2"], "text": "doc two"}, r"field '_id' must be a string or an integer, got list"),
    ("corpus", {"_id": "d2", "text": 5}, r"field 'text' must be a string, got int"),
    ("corpus", {"_id": "d2", "title": 5, "text": "doc two"}, r"field 'title' must be a string, got int"),
    ("queries", '{"_id": "q2"', r"invalid JSON: Expecting ',' delimiter"),
    ("queries", {"text": "query two"}, r"missing field '_id'"),
    ("queries", {"_id": "q2"}, r"missing field 'text'"),
    ("queries", {"_id": True, "text": "query two"}, r"field '_id' must be a string or an integer, got bool"),
    ("queries", {"_id": "q2", "text": 1.5}, r"field 'text' must be a string, got float"),
]


@pytest.mark.parametrize("part,bad,pattern", BEIR_CASES)
def test_beir_bad_corpus_or_query_line(tmp_path, part, bad, pattern):
    from embforge.data.beir import load_beir

    good = {"corpus": {"_id": "d1", "text": "doc one"}, "queries": {"_id": "q1", "text": "query one"}}[part]
    folder = _beir(tmp_path / "beir", **{part: [good, bad]})
    where = rf"^{_e(folder / f'{part}.jsonl')}:2: {pattern}"
    with pytest.raises(EmbforgeError, match=where):
        load_records(folder)  # training
    with pytest.raises(EmbforgeError, match=where):
        load_beir(folder, "train")  # evaluation


@pytest.mark.parametrize("rows,line,got", [
    ("q1\td1\n", 1, 2),
    ("q1 d1 1\n", 1, 1),  # spaces, not tabs
    ("q1\td1\t1\tx\ty\n", 1, 5),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\n", 3, 2),
])
def test_beir_qrels_row_with_wrong_column_count(tmp_path, rows, line, got):
    from embforge.data.beir import load_beir

    folder = _beir(tmp_path / "beir", qrels=rows)
    where = rf"^{_e(folder / 'qrels' / 'train.tsv')}:{line}: expected 3 tab-separated columns \(query-id, " \
            rf"corpus-id, score\), got {got}$"
    with pytest.raises(EmbforgeError, match=where):
        load_records(folder)
    with pytest.raises(EmbforgeError, match=where):
        load_beir(folder, "train")


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path):
    """What Windows editors write: a BOM, CRLF line ends and blank lines, in every BEIR file and in JSONL."""
    from embforge.data.beir import load_beir
    from embforge.data.retrieval_jsonl import read_query_jsonl

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    bom = b"\xef\xbb\xbf"
    (folder / "corpus.jsonl").write_bytes(bom + b'{"_id": "d1", "text": "doc one"}\r\n\r\n  \r\n'
                                          b'{"_id": "d2", "title": "T", "text": "doc two"}\r\n')
    (folder / "queries.jsonl").write_bytes(bom + b'{"_id": "q1", "text": "query one"}\r\n\r\n')
    (folder / "qrels" / "train.tsv").write_bytes(bom + b"q1\td2\t1\r\n\r\nq1\td1\t0\r\n")
    split = load_beir(folder, "train")
    assert split.corpus == {"d1": "doc one", "d2": "T doc two"}
    assert split.queries == {"q1": "query one"} and split.qrels == {"q1": {"d2": 1, "d1": 0}}
    (rec,) = load_records(folder)
    assert (rec.query, rec.pos) == ("query one", ["T doc two"])

    path = tmp_path / "flag.jsonl"
    path.write_bytes(bom + b'{"query": "q", "pos": ["p"]}\r\n\r\n \r\n{"query": "q2", "pos": ["p2"], "neg": ["n"]}\r\n')
    assert [(r.query, r.pos, r.neg, r.source) for r in load_records(path)] == [
        ("q", ["p"], [], f"{path}:1"), ("q2", ["p2"], ["n"], f"{path}:4")]
    assert read_query_jsonl(path) == [{"query": "q", "pos": ["p"]}, {"query": "q2", "pos": ["p2"], "neg": ["n"]}]


def test_mixture_naming_a_missing_file_points_at_its_yaml_line(tmp_path, capsys):
    from embforge.cli import main

    _file(tmp_path, [GOOD], name="a.jsonl")
    y = tmp_path / "mix.yaml"
    y.write_text("use_all: true\ndatasets:\n  name: [a, b]\n  data_path:\n    - a.jsonl\n    - b.jsonl\n")
    want = f"{y}:6: datasets.data_path of 'b': {tmp_path / 'b.jsonl'}: no such file or folder"
    with pytest.raises(EmbforgeError, match=rf"^{_e(want)}$"):
        load_records(y)
    assert main(["data", str(y)]) == 2
    assert want in capsys.readouterr().err
    y.write_text("use_all: true\ndatasets:\n  name: [b]\n  data_path: b.jsonl\n")  # one dataset, scalar path
    with pytest.raises(EmbforgeError, match=rf"^{_e(y)}:4: datasets.data_path of 'b'"):
        load_records(y)


def test_csv_with_the_wrong_columns_names_file_and_expected_columns(tmp_path, capsys):
    from embforge.cli import main

    path = tmp_path / "pairs.csv"
    path.write_text("question,answer\nwhat,that\n", encoding="utf-8")
    with pytest.raises(EmbforgeError, match=rf"^{_e(path)}: columns question, answer match no record format; "
                                            r"expected flag: query, pos; angle-a: text1, text2, label"):
        load_records(path)
    assert main(["eval", "--data", str(path)]) == 2  # not STS-B either: say what an STS file looks like
    err = capsys.readouterr().err
    assert f"{path}: unrecognised data" in err
    assert "tab-separated genre, file, year, id, score, sentence1, sentence2" in err and "sentence_A" in err
    sts = tmp_path / "sts"
    sts.mkdir()
    (sts / "sts-test.csv").write_text("sentence1\tsentence2\tscore\na\tb\t1.0\n", encoding="utf-8")
    want = (f"{sts / 'sts-test.csv'}:1: expected at least 7 tab-separated fields "
            "(genre, file, year, id, score, sentence1, sentence2), got 3")
    with pytest.raises(EmbforgeError, match=rf"^{_e(want)}$"):
        load_records(sts, split="test")
    assert main(["eval", "--data", str(sts)]) == 2
    assert want in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf\r\n  \r\n"])
def test_mine_with_no_input_records_fails_and_writes_nothing(tmp_path, tiny_bert, capsys, content):
    from embforge.cli import main

    src = tmp_path / "in.jsonl"
    src.write_bytes(content)
    out = tmp_path / "out.jsonl"
    assert main(["mine", "--model", str(tiny_bert), "--input_file", str(src), "--output_file", str(out)]) == 2
    assert f"{src}: no records (expected JSONL lines with query, pos and neg)" in capsys.readouterr().err
    assert not out.exists()


def test_qrels_first_row_with_a_decimal_score_is_data_not_a_header(tmp_path):
    from embforge.data.beir import load_beir

    folder = _beir(tmp_path / "beir", qrels="q1\td1\t1.0\n")
    assert load_beir(folder, "train").qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize("part", ["corpus", "queries"])
def test_beir_duplicate_id_names_both_lines_or_keeps_the_first_copy(tmp_path, tiny_bert, capsys, part):
    """A dict keeps the last copy: the judged text would vanish and 7 lines would count as 6 records."""
    from embforge.cli import main

    prefix = "d" if part == "corpus" else "q"
    lines = [{"_id": f"{prefix}{i}", "text": f"text {i}"} for i in (2, 3, 1, 4, 5, 6, 1)]  # id 1: lines 3, 7
    lines[2]["text"], lines[6]["text"] = "first copy", "second copy"
    folder = _beir(tmp_path / "beir", **{part: lines}, qrels="q1\td1\t1\n")
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    path = folder / f"{part}.jsonl"
    want = f"{path}:7: duplicate _id '{prefix}1' (first seen at {path}:3)"
    with pytest.raises(EmbforgeError, match=rf"^{_e(want)}$"):
        load_records(folder)  # training
    assert main(["eval", "--model", str(tiny_bert), "--data", str(folder)]) == 2  # evaluation
    assert want in capsys.readouterr().err
    bad = BadRecords()
    (rec,) = load_records(folder, skip_bad_records=True, bad_records=bad)
    assert (rec.pos if part == "corpus" else [rec.query]) == ["first copy"]
    assert (bad.count, bad.first_locations) == (1, [f"{path}:7"])
