import json

import numpy as np
import pytest
from tiny import SENTENCES

from embforge import Encoder
from embforge.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_every_flag_with_default(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["encode", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--input", "--output", "--model", "--field", "--batch_size", "--is_query", "--dim"):
        assert flag in out
    assert "(default: 64)" in out


def test_encode_txt_to_npy_and_jsonl_to_npz(tiny_bert, tmp_path, capsys):
    txt = tmp_path / "in.txt"
    txt.write_text("\n".join(SENTENCES) + "\n")
    code, out, _ = run_cli(capsys, "encode", "--model", str(tiny_bert), "--input", str(txt), "--output",
                           str(tmp_path / "e.npy"), "--batch_size", "3")
    assert code == 0 and "8 x 32" in out
    expected = Encoder.from_pretrained(tiny_bert).encode(SENTENCES, batch_size=3)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), expected)

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"_id": f"d{i}", "body": s}) + "\n" for i, s in enumerate(SENTENCES)))
    code, _, _ = run_cli(capsys, "encode", "--model", str(tiny_bert), "--input", str(jsonl), "--field", "body",
                         "--output", str(tmp_path / "e.npz"), "--dim", "16", "--batch_size", "3")
    assert code == 0
    data = np.load(tmp_path / "e.npz")
    assert data["embeddings"].shape == (8, 16)
    assert list(data["ids"]) == [f"d{i}" for i in range(8)]


@pytest.mark.parametrize("case, expected", [
    ("missing_model", "model not found"),
    ("not_a_model", "not a model folder"),
    ("empty_input", "the input is empty"),
    ("missing_field", "in.jsonl:2: missing field 'text'"),
    ("bad_json", "in.jsonl:1: invalid JSON"),
    ("bad_pooling", "unknown pooling 'max': expected one of cls, mean, weightedmean, lasttoken"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_bert, tmp_path, capsys, case, expected):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "a cat"}\n{"body": "a dog"}\n')
    model, inp, extra = str(tiny_bert), str(jsonl), []
    if case in ("missing_model", "not_a_model"):
        model = str(tmp_path / "nope") if case == "missing_model" else str(tmp_path)
        jsonl.write_text('{"text": "a cat"}\n')
    elif case == "empty_input":
        inp = str(tmp_path / "empty.txt")
        (tmp_path / "empty.txt").write_text("")
    elif case == "bad_json":
        jsonl.write_text('{"text": "a cat"\n')
    elif case == "bad_pooling":
        extra = ["--pooling", "max"]
    argv = ["encode", "--model", model, "--input", inp, "--output", str(tmp_path / "o.npy"), *extra]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.npy").exists()
