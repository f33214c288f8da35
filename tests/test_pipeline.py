import json
from pathlib import Path

import pytest

from embforge.cli import main
from embforge.errors import EmbforgeError
from embforge.pipeline import MARKERS, Pipeline, Step, execute, load_pipeline, run_pipeline, slice_beir

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- resume / skip / hash, on a fake pipeline
def fake(tmp_path, calls, settings=None, interrupt=None):
    """a -> b -> c; a reads input.txt; each writes NAME.txt; ``interrupt`` stops that step half-way."""
    settings = settings or {}
    out = tmp_path / "run"
    src = tmp_path / "input.txt"
    if not src.exists():
        src.write_text("v1")

    def step(name, upstream):
        path = out / f"{name}.txt"

        def action():
            calls.append(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("half")
            if interrupt == name:
                raise KeyboardInterrupt
            path.write_text(name.upper())
            return {"wrote": name}
        return Step(name, {"setting": settings.get(name, 0)}, {} if upstream else {"src": str(src)}, [str(path)],
                    action, upstream=upstream)

    return Pipeline("fake", "fake", out, [step("a", []), step("b", ["a"]), step("c", ["b"])])


def test_second_run_skips_every_finished_step(tmp_path):
    calls = []
    execute(fake(tmp_path, calls))
    assert calls == ["a", "b", "c"]
    report = execute(fake(tmp_path, calls))
    assert calls == ["a", "b", "c"]
    assert all(report["run"]["steps"][s]["skipped"] for s in "abc")
    assert report["run"]["steps"]["b"]["wrote"] == "b"  # the result recorded by the first run
    execute(fake(tmp_path, calls), force=True)
    assert calls == ["a", "b", "c"] * 2


def test_changed_setting_reruns_that_step_and_everything_after(tmp_path):
    calls = []
    execute(fake(tmp_path, calls))
    calls.clear()
    execute(fake(tmp_path, calls, settings={"b": 1}))
    assert calls == ["b", "c"]
    calls.clear()
    execute(fake(tmp_path, calls, settings={"b": 1}))
    assert calls == []


def test_changed_input_file_reruns_from_the_step_reading_it(tmp_path):
    calls = []
    execute(fake(tmp_path, calls))
    (tmp_path / "input.txt").write_text("v2")
    calls.clear()
    execute(fake(tmp_path, calls))
    assert calls == ["a", "b", "c"]


def test_missing_output_reruns_the_step(tmp_path):
    calls = []
    execute(fake(tmp_path, calls))
    (tmp_path / "run" / "c.txt").unlink()
    calls.clear()
    execute(fake(tmp_path, calls))
    assert calls == ["c"]


def test_interrupted_step_is_not_taken_as_done(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        execute(fake(tmp_path, calls, interrupt="b"))
    assert calls == ["a", "b"]
    marks = tmp_path / "run" / MARKERS
    assert (marks / "a.json").is_file() and not (marks / "b.json").exists()
    assert (tmp_path / "run" / "b.txt").read_text() == "half"  # output exists, but no marker
    calls.clear()
    rerun = fake(tmp_path, calls)
    execute(rerun)
    assert calls == ["b", "c"]
    assert (tmp_path / "run" / "b.txt").read_text() == "B"
    assert rerun.resumable == {"b"}  # same inputs as the interrupted attempt: its checkpoints may be used
    with pytest.raises(KeyboardInterrupt):
        execute(fake(tmp_path, calls, settings={"c": 1}, interrupt="c"))
    changed = fake(tmp_path, calls, settings={"c": 2})
    execute(changed)
    assert changed.resumable == set()  # other settings than the interrupted attempt: start afresh


# ---------------------------------------------------------------- validation before anything runs
def write_yaml(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


DATA = REPO / "examples" / "data" / "scifact"


@pytest.mark.parametrize("text, message", [
    ("output_dir: o\nmine:\n  input_file: {data}\ntrain:\n  num_train_epochs: 1\n  lerning_rate: 1e-4\n",
     r"p\.yaml:6: unknown key 'lerning_rate' in the train step \(did you mean 'learning_rate'\?\)"),
    ("ouput_dir: x\nmine:\n  input_file: {data}\n",
     r"p\.yaml:1: unknown key 'ouput_dir' \(did you mean 'output_dir'\?\)"),
    ("mine:\n  input_file: {data}\n  negative_numbr: 3\n", r"p\.yaml:3: .*'negative_numbr'.*'negative_number'"),
    ("eval:\n  data: {data}\n  k: 1,10\n  dims: [x]\n", r"p\.yaml:4: eval\.dims: expected comma-separated integers"),
    ("mine:\n  input_file: {data}\n  range_for_sampling: 10to100\n", r"p\.yaml:3: .*range"),
])
def test_bad_yaml_fails_with_line_and_did_you_mean(tmp_path, text, message):
    path = write_yaml(tmp_path, text.format(data=DATA))
    with pytest.raises(EmbforgeError, match=message):
        load_pipeline(path)


@pytest.mark.parametrize("config, message", [
    ({"mine": {"input_file": "nowhere/scifact"}}, r"mine\.input_file .*nowhere/scifact not found"),
    ({"train": {"num_train_epochs": 1}}, r"the train step has no data"),
    ({"merge": {"weights": [0.5, 0.5]}}, r"the merge step has nothing to merge"),
    ({"model": "no/such/model", "eval": {"data": "x"}}, r"model not found: no/such/model"),
    ({"name": "x"}, r"no steps"),
    ({"train": {"model_name_or_path": "m", "train_data": "x"}}, r"'model_name_or_path' in the train step is filled in"),
    ({"eval": {"data": "missing.jsonl"}}, r"eval\.data missing\.jsonl not found"),
])
def test_missing_inputs_fail_before_running(config, message):
    with pytest.raises(EmbforgeError, match=message):
        load_pipeline(config)


def test_cli_reports_yaml_errors(tmp_path, capsys):
    path = write_yaml(tmp_path, "trian:\n  num_train_epochs: 1\n")
    assert main(["run", str(path)]) == 2
    assert "unknown key 'trian' (did you mean 'train'?)" in capsys.readouterr().err


def test_slice_beir_keeps_positives_and_is_deterministic(bundled_data, tmp_path):
    a = slice_beir(bundled_data / "scifact", tmp_path / "a", n_queries=5, n_docs=10)
    b = slice_beir(bundled_data / "scifact", tmp_path / "b", n_queries=5, n_docs=10)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    from embforge.data.beir import load_beir

    for split in ("train", "test"):
        s = load_beir(a, split)
        assert len(s.queries) == 5
        assert all(d in s.corpus for rel in s.qrels.values() for d in rel)


# ---------------------------------------------------------------- a real pipeline on a tiny model
def test_tiny_pipeline_runs_every_step_and_resumes(tiny_bert, bundled_data, tmp_path, monkeypatch, capsys):
    from embforge.model import Encoder
    from embforge.store.fingerprint import model_fingerprint

    encodes = []  # (model fingerprint, max length, texts) of every passage-side encode
    real_encode = Encoder.encode

    def spy(self, texts, *args, **kwargs):
        if not kwargs.get("is_query", False):
            encodes.append((model_fingerprint(self), self.config.passage_max_len, len(texts)))
        return real_encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", spy)
    monkeypatch.setenv("EMBFORGE_CACHE", str(tmp_path / "cache"))
    scifact = str(bundled_data / "scifact")
    config = {"name": "tiny", "model": str(tiny_bert), "output_dir": str(tmp_path / "run"),
              "mine": {"input_file": scifact, "range_for_sampling": "2-20", "negative_number": 3},
              "train": {"learning_rate": 1e-3, "report_to": "none", "use_cpu": True, "save_strategy": "no",
                        "passage_max_len": 32, "query_max_len": 16, "train_group_size": 2},
              "eval": {"data": scifact, "k": "1,10", "dims": "16,32", "max_length": 32},
              "merge": {"weights": [0.5, 0.5]}}
    report = run_pipeline(config, sanity_test=True)
    out = tmp_path / "run" / "sanity_test"
    steps = report["run"]["steps"]
    assert list(steps) == ["mine", "eval-base", "train", "eval-trained", "merge", "eval-merged", "report"]
    assert not any(s["skipped"] for s in steps.values())
    # No work twice: mining takes eval.max_length, so eval-base reuses mine's encode of the base corpus;
    # the slice's 53 documents are encoded once per model (base, trained, merged), all at one length.
    assert [(length, n) for _, length, n in encodes] == [(32, 53)] * 3
    assert len({fingerprint for fingerprint, _, _ in encodes}) == 3
    assert load_pipeline(config, sanity_test=True).steps[0].config["max_length"] == 32  # mine's, from eval
    assert all(s["peak_rss_mb"] > 0 for s in steps.values())
    assert set(report["summary"]["nDCG@10"]) == {"base", "trained", "merged"}
    assert set(report["dims"]["trained"]) == {"16", "32"}
    for label in ("base", "trained", "merged"):
        ev = json.loads((out / "eval" / f"{label}.json").read_text())
        assert report["summary"]["nDCG@10"][label] == ev["metrics"]["nDCG@10"]
        assert ev["queries"] == 8  # the sanity slice
    assert report["gain"]["trained"]["nDCG@10"] == pytest.approx(
        report["summary"]["nDCG@10"]["trained"] - report["summary"]["nDCG@10"]["base"])
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    merged_card = (out / "merged" / "README.md").read_text()
    assert "## Merge" in merged_card and "| this model |" in merged_card and "| base model (before) |" in merged_card
    assert "| this model |" in (out / "train" / "README.md").read_text()

    again = run_pipeline(config, sanity_test=True)
    assert all(s["skipped"] for s in again["run"]["steps"].values())
    assert again["summary"] == report["summary"]
    # a changed merge weight reruns the merge and what follows it, nothing before
    config["merge"]["weights"] = [0.7, 0.3]
    third = run_pipeline(config, sanity_test=True)
    ran = [name for name, s in third["run"]["steps"].items() if not s["skipped"]]
    assert ran == ["merge", "eval-merged", "report"]


@pytest.mark.e2e
def test_scifact_yaml_sanity_test(tmp_path, capsys):
    code = main(["run", str(REPO / "examples" / "scifact.yaml"), "--sanity_test", "--output_dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "sanity_test" / "report.json").read_text())
    assert set(report["summary"]["nDCG@10"]) == {"base", "trained", "merged"}
    assert all(0.0 < v <= 1.0 for v in report["summary"]["nDCG@10"].values())
    assert report["base_model"] == "all-MiniLM-L6-v2 (embedded)"
    assert (tmp_path / "sanity_test" / "report.png").is_file()
    assert "| this model |" in (tmp_path / "sanity_test" / "merged" / "README.md").read_text()


# ---------------------------------------------------------------- no work twice, memory between steps
def test_a_finished_steps_garbage_is_collected_before_the_next_step(tmp_path):
    """A step's objects caught in reference cycles (a Trainer and its callbacks) are freed when it ends."""
    import gc
    import weakref

    class Big:
        pass

    seen = {}

    def first():
        big = Big()
        big.cycle = big  # only the cycle collector frees it
        seen["ref"] = weakref.ref(big)
        (tmp_path / "a").write_text("a")
        return {}

    def second():
        seen["alive"] = seen["ref"]() is not None
        (tmp_path / "b").write_text("b")
        return {}

    gc.disable()
    try:
        execute(Pipeline("p", "p", tmp_path / "run", [Step("a", {}, {}, [str(tmp_path / "a")], first),
                                                        Step("b", {}, {}, [str(tmp_path / "b")], second)]))
    finally:
        gc.enable()
    assert seen["alive"] is False
