"""The Python API: each CLI command and its twin give the same outputs on the same tiny input; in-memory
data trains like the same file; configs come from one dataclass with did-you-mean on typos."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file
from scipy.stats import spearmanr
from tiny import SENTENCES

import embforge
from embforge import Encoder
from embforge.api import build_config
from embforge.cli import main
from embforge.errors import EmbforgeError

WORDS = "cat dog bird fish house tree car road city water fire light music game science cell".split()
STSB = Path(__file__).resolve().parents[1] / "examples" / "data" / "stsbenchmark" / "sts-test.csv"
TRAIN = {"per_device_train_batch_size": 4, "max_steps": 2, "learning_rate": 1e-3, "report_to": "none",
         "use_cpu": True, "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "temperature": 0.05,
         "query_max_len": 16, "passage_max_len": 16, "seed": 0, "train_group_size": 2}


def rows(n: int = 8) -> list[dict]:
    return [{"query": f"the {w}", "pos": [f"a {w} in the house"],
             "neg": [f"{w} and the {WORDS[(i + k + 1) % len(WORDS)]} road" for k in range(2)]}
            for i, w in enumerate(WORDS[:n])]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def flags(options: dict) -> list[str]:
    out = []
    for key, value in options.items():
        out += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return out


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert np.array_equal(wa[key].numpy(), wb[key].numpy()), key


def without_timings(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("timings", "cache_hits")}


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache of its own


@pytest.fixture(scope="module")
def file_run(tiny_bert_nodrop, tmp_path_factory) -> tuple[Path, Path]:
    """(train.jsonl, final model) of one CLI training run, the reference for the twins below."""
    tmp = tmp_path_factory.mktemp("cli-train")
    data = write_jsonl(tmp / "train.jsonl", rows())
    out = tmp / "out"
    assert main(["train", "--model_name_or_path", str(tiny_bert_nodrop), "--train_data", str(data),
                 "--output_dir", str(out), *flags(TRAIN)]) == 0
    return data, out


# ------------------------------------------------------------------------------------------- train
def test_train_twin_writes_the_cli_weights(file_run, tiny_bert_nodrop, tmp_path):
    data, cli_final = file_run
    final = embforge.train(model_name_or_path=str(tiny_bert_nodrop), train_data=data, output_dir=tmp_path / "o",
                           **TRAIN)
    assert final == tmp_path / "o"
    assert_same_weights(final, cli_final)
    base = load_file(str(tiny_bert_nodrop / "model.safetensors"))
    trained = weights(final)
    assert any(not np.array_equal(base[k].numpy(), trained[k].numpy()) for k in base if k in trained)


@pytest.mark.parametrize("kind", ["list", "records", "dataset", "dataframe"])
def test_in_memory_data_trains_like_the_same_file(file_run, tiny_bert_nodrop, tmp_path, kind):
    data, cli_final = file_run
    items = rows()
    memory = {"list": items, "records": embforge.load_data(items), "dataset": datasets.Dataset.from_list(items),
              "dataframe": pd.DataFrame(items)}[kind]
    cfg = embforge.TrainConfig(model_name_or_path=str(tiny_bert_nodrop), output_dir=str(tmp_path / "o"), **TRAIN)
    final = embforge.train(cfg, train_data=memory)
    assert_same_weights(final, cli_final)
    report = json.loads((tmp_path / "o" / "train_report.json").read_text())
    assert report["train_data"].startswith("in-memory") and report["records"] == len(items)


def test_encoder_fit_trains_in_place_like_train(file_run, tiny_bert_nodrop, tmp_path):
    data, cli_final = file_run
    encoder = Encoder.from_pretrained(tiny_bert_nodrop, device="cpu")
    before = encoder.encode(SENTENCES)
    final = encoder.fit(pd.DataFrame(rows()), output_dir=tmp_path / "fit", **TRAIN)
    assert_same_weights(final, cli_final)
    after = encoder.encode(SENTENCES)
    assert not np.allclose(before, after, atol=1e-4)
    np.testing.assert_allclose(after, Encoder.from_pretrained(final, device="cpu").encode(SENTENCES), atol=1e-6)
    assert not any(p.name.startswith(".fit-start") for p in (tmp_path / "fit").iterdir())


def test_fit_maps_loss_kwargs_onto_train_config_fields(tiny_bert, monkeypatch, tmp_path):
    fields = {f.name for f in dataclasses.fields(embforge.TrainConfig)}
    names = ["cosine_w", "ibn_w", "angle_w", "cosine_tau", "ibn_tau", "angle_tau"]
    assert set(names) <= fields
    seen = {}
    from embforge.training import run as engine

    def fake_train(cfg, encoder=None):
        seen.update({k: getattr(cfg, k) for k in names})
        raise KeyboardInterrupt  # stop before training: only the config is under test

    monkeypatch.setattr(engine, "train", fake_train)
    encoder = Encoder.from_pretrained(tiny_bert, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        encoder.fit(rows(), output_dir=tmp_path, loss_kwargs={k: 3.5 for k in names})
    assert seen == {k: 3.5 for k in names}


def test_fit_rejects_unknown_loss_kwargs_and_a_model_name(tiny_bert, tmp_path):
    encoder = Encoder.from_pretrained(tiny_bert, device="cpu")
    with pytest.raises(EmbforgeError, match=r"loss_kwargs: unknown key 'cosin_w'.*did you mean 'cosine_w'"):
        encoder.fit(rows(), output_dir=tmp_path, loss_kwargs={"cosin_w": 1.0})
    with pytest.raises(EmbforgeError, match="model_name_or_path is for embforge.train"):
        encoder.fit(rows(), output_dir=tmp_path, model="elsewhere")
    with pytest.raises(EmbforgeError, match=r"unknown key 'max_step' \(did you mean 'max_steps'\?\)"):
        encoder.fit(rows(), output_dir=tmp_path, max_step=3)


# -------------------------------------------------------------------------------------------- eval
def write_beir(folder: Path) -> Path:
    docs = {f"d{i}": s for i, s in enumerate(SENTENCES)}
    queries = {"q1": "cat house", "q2": "protein gene", "q3": "red car", "q4": "bird"}
    qrels = [("q1", "d0"), ("q2", "d2"), ("q2", "d7"), ("q3", "d3"), ("q4", "d5")]
    (folder / "qrels").mkdir(parents=True)
    write_jsonl(folder / "corpus.jsonl", [{"_id": d, "title": "", "text": t} for d, t in docs.items()])
    write_jsonl(folder / "queries.jsonl", [{"_id": q, "text": t} for q, t in queries.items()])
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels))
    return folder


def test_eval_twin_returns_the_cli_report_on_beir(tiny_bert, tmp_path):
    data = write_beir(tmp_path / "beir")
    report_file = tmp_path / "cli.json"
    assert main(["eval", "--model", str(tiny_bert), "--data", str(data), "--k", "1,3", "--dims", "16,32",
                 "--report", str(report_file)]) == 0
    cli = json.loads(report_file.read_text())
    api = embforge.evaluate(model=str(tiny_bert), data=data, k="1,3", dims=[16, 32])
    assert api["dims"] == cli["dims"] and api["metrics"] == cli["metrics"]
    assert set(api["metrics"]) >= {"nDCG@3", "Recall@1", "MRR@3"}
    own = Encoder.from_pretrained(tiny_bert, device="cpu").evaluate(data, k="1,3", dims="16,32")
    assert own["dims"] == cli["dims"]


def test_encoder_evaluate_scored_pairs_in_memory_is_spearman_of_cosines(tmp_path):
    # The default model: a random tiny model's cosines all sit near one, where float noise reorders them.
    sts = tmp_path / "sts-test.csv"
    sts.write_text("".join(STSB.read_text(encoding="utf-8").splitlines(keepends=True)[:40]), encoding="utf-8")
    assert main(["eval", "--data", str(sts), "--report", str(tmp_path / "r.json")]) == 0
    cli = json.loads((tmp_path / "r.json").read_text())["metrics"]
    pairs = embforge.load_data(sts)
    encoder = Encoder.from_pretrained(device="cpu")
    memory = encoder.evaluate([{"text1": p.text1, "text2": p.text2, "label": p.score} for p in pairs])["metrics"]
    a, b = encoder.encode([p.text1 for p in pairs]), encoder.encode([p.text2 for p in pairs])
    by_hand = spearmanr((a * b).sum(axis=1), [p.score for p in pairs]).statistic
    assert memory["spearman"] == pytest.approx(by_hand, abs=1e-6)
    assert cli["spearman"] == pytest.approx(memory["spearman"], abs=1e-9)
    assert memory["spearman"] > 0.5  # a real model agrees with the gold scores


def test_evaluate_applies_instruction_for_one_call_only(tiny_bert, tmp_path):
    data = write_beir(tmp_path / "beir")
    encoder = Encoder.from_pretrained(tiny_bert, device="cpu")
    plain = encoder.evaluate(data)["metrics"]
    with_instruction = encoder.evaluate(data, query_instruction_for_retrieval="cell cell cell ")["metrics"]
    cli = tmp_path / "r.json"
    assert main(["eval", "--model", str(tiny_bert), "--data", str(data), "--query_instruction",
                 "cell cell cell ", "--report", str(cli)]) == 0
    assert with_instruction == json.loads(cli.read_text())["metrics"]
    assert with_instruction != plain
    assert encoder.config.query_instruction == ""


# ------------------------------------------------------------------------------ mine, encode, data
def test_mine_twin_writes_the_cli_file(tiny_bert, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", rows())
    common = {"range_for_sampling": "0-10", "negative_number": 3, "seed": 1}
    assert main(["mine", "--model", str(tiny_bert), "--input_file", str(src), "--output_file",
                 str(tmp_path / "cli.jsonl"), *flags(common)]) == 0
    stats = embforge.mine(model=str(tiny_bert), input_file=src, output_file=tmp_path / "api.jsonl", **common)
    assert (tmp_path / "api.jsonl").read_text() == (tmp_path / "cli.jsonl").read_text()
    assert stats["records"] == 8 and stats["pool_size"] == len({t for r in rows() for t in r["pos"] + r["neg"]})


def test_encode_twin_writes_the_cli_matrix(tiny_bert, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(SENTENCES) + "\n")
    assert main(["encode", "--model", str(tiny_bert), "--input", str(src), "--output", str(tmp_path / "c.npy"),
                 "--dim", "16"]) == 0
    out = embforge.encode(model=str(tiny_bert), input=src, output=tmp_path / "a.npy", dim=16)
    assert out == tmp_path / "a.npy"
    np.testing.assert_array_equal(np.load(out), np.load(tmp_path / "c.npy"))
    expected = Encoder.from_pretrained(tiny_bert, device="cpu").encode(SENTENCES, dim=16)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def test_data_twin_returns_what_the_cli_prints(tmp_path, capsys):
    src = write_jsonl(tmp_path / "t.jsonl", rows(5))
    capsys.readouterr()
    assert main(["data", str(src)]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = embforge.inspect_data(source=src)
    assert report == printed and report["count"] == 5 and report["format"] == "flag"


# ---------------------------------------------------------------------------------- configs
def test_unknown_keyword_fails_with_did_you_mean(tmp_path):
    with pytest.raises(EmbforgeError, match=r"unknown key 'lerning_rate' \(did you mean 'learning_rate'\?\)"):
        embforge.train(lerning_rate=1e-3, output_dir=str(tmp_path))
    with pytest.raises(EmbforgeError, match=r"unknown key 'dat' \(did you mean 'data'\?\)"):
        embforge.evaluate(dat="x")
    with pytest.raises(EmbforgeError, match=r"unknown key 'negative_numbr'.*did you mean 'negative_number'"):
        embforge.mine(negative_numbr=3)
    with pytest.raises(EmbforgeError, match=r"unknown option 'formt'.*did you mean 'format'"):
        embforge.load_data([{"text": "a", "positive": "b"}], formt="angle-c")
    with pytest.raises(EmbforgeError, match=r"unknown command 'mien'.*did you mean 'mine'"):
        embforge.command("mien")


def test_config_sources_layer_like_yaml_and_flags(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: m\nk: '1,5'\nbatch_size: 8\n")
    cfg = build_config(embforge.EvalConfig, yaml_file, {"batch_size": 4, "max_len": 32})
    assert (cfg.model_name_or_path, cfg.k, cfg.batch_size, cfg.max_length) == ("m", [1, 5], 4, 32)
    again = build_config(embforge.EvalConfig, cfg, {"split": "dev"})
    assert (again.batch_size, again.split, cfg.split) == (4, "dev", "test")  # the given config is not edited
    assert build_config(embforge.EvalConfig, {"ks": "3"}).k == [3]
    with pytest.raises(EmbforgeError, match="batch_size expects int"):
        build_config(embforge.EvalConfig, None, {"batch_size": "many"})
    with pytest.raises(EmbforgeError, match="config must be"):
        build_config(embforge.EvalConfig, 3)


def test_in_memory_train_data_stays_out_of_pickles_json_and_reports():
    import pickle

    frame = pd.DataFrame(rows(3))
    with pytest.raises(EmbforgeError, match="train_data expects str, got"):
        build_config(embforge.TrainConfig, {"train_data": frame})  # only fields named in objects hold data
    cfg = build_config(embforge.TrainConfig, {"train_data": frame, "output_dir": "x"}, {"lr": 0.5},
                       objects=("train_data",))
    assert str(cfg.train_data) == "in-memory DataFrame (3 rows)" and cfg.learning_rate == 0.5
    assert cfg.train_data.data is frame
    assert pickle.loads(pickle.dumps(cfg)).train_data == "in-memory DataFrame (3 rows)"  # checkpoints' args
    assert json.loads(cfg.to_json_string())["train_data"] == "in-memory DataFrame (3 rows)"  # TensorBoard's
    later_path = build_config(embforge.TrainConfig, {"train_data": frame, "output_dir": "x"},
                              {"train_file": "t.jsonl"}, objects=("train_data",))
    assert later_path.train_data == "t.jsonl"


def test_api_names_are_functions_not_subpackages():
    """The implementation packages are named training/evaluation/mining/merging/exporting, so importing
    them never shadows the API functions of the same verbs."""
    import embforge.evaluation.metrics  # noqa: F401
    import embforge.mining  # noqa: F401
    import embforge.training.run  # noqa: F401

    for name in ("train", "evaluate", "mine", "merge", "export"):
        assert getattr(embforge, name) is getattr(embforge.api, name)
    with pytest.raises(EmbforgeError, match="unknown key 'lerning_rate'"):
        embforge.train(lerning_rate=1)


# ------------------------------------------------------------------------ merge, export, csr, run
def test_merge_twin_writes_the_cli_weights(tiny_bert, tmp_path):
    from tiny import write_bert

    other = write_bert(tmp_path / "other", seed=1)
    assert main(["merge", "--models", str(tiny_bert), str(other), "--weights", "0.25", "0.75", "--output_dir",
                 str(tmp_path / "cli")]) == 0
    summary = embforge.merge(models=[tiny_bert, other], weights=[0.25, 0.75], output_dir=tmp_path / "api")
    assert_same_weights(tmp_path / "api", tmp_path / "cli")
    a, b, merged = weights(tiny_bert), weights(other), weights(tmp_path / "api")
    key = next(k for k in merged if merged[k].is_floating_point() and k in a)
    np.testing.assert_allclose(merged[key].numpy(), 0.25 * a[key].numpy() + 0.75 * b[key].numpy(), atol=1e-6)
    assert summary["weights"] == [0.25, 0.75]


def test_export_twin_writes_the_cli_folder(tiny_bert, tmp_path):
    common = ["--format", "sentence-transformers", "--verify", "false"]
    assert main(["export", "--model", str(tiny_bert), "--output_dir", str(tmp_path / "cli"), *common]) == 0
    embforge.export(model=tiny_bert, format="sentence-transformers", verify=False, output_dir=tmp_path / "api")
    cli_files = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    assert cli_files == sorted(p.relative_to(tmp_path / "api") for p in (tmp_path / "api").rglob("*") if p.is_file())
    assert_same_weights(tmp_path / "api", tmp_path / "cli")


def test_csr_train_twin_writes_the_cli_weights(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "emb.npz"
    np.savez(npz, embeddings=rng.standard_normal((96, 16)).astype(np.float32))
    options = {"epochs": 1, "batch_size": 32, "topk": 4, "hidden_size": 32, "auxk": 8, "device": "cpu"}
    assert main(["csr", "train", "--pretrained_emb", str(npz), "--output_dir", str(tmp_path / "cli"),
                 *flags(options)]) == 0
    embforge.command("csr train", pretrained_emb=npz, output_dir=tmp_path / "api", **options)
    assert_same_weights(tmp_path / "api", tmp_path / "cli")
    embforge.csr.train(pretrained_emb=str(npz), output_dir=str(tmp_path / "pkg"), show_progress=False, **options)
    assert_same_weights(tmp_path / "pkg", tmp_path / "cli")


def test_run_twin_takes_the_pipeline_yaml_or_its_mapping(file_run, tiny_bert_nodrop, tmp_path):
    import yaml

    data, cli_final = file_run
    pipeline = {"model": str(tiny_bert_nodrop), "train": {"train_data": str(data), **TRAIN},
                "eval": {"data": str(write_beir(tmp_path / "beir")), "split": "test", "k": "1,3"}}
    yaml_file = tmp_path / "pipeline.yaml"
    yaml_file.write_text(yaml.safe_dump({**pipeline, "output_dir": str(tmp_path / "cli")}))
    assert main(["run", str(yaml_file)]) == 0
    cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    from_yaml = embforge.run(yaml_file, output_dir=tmp_path / "api-yaml")
    from_mapping = embforge.run(pipeline, output_dir=tmp_path / "api-mapping")
    assert from_yaml["summary"] == from_mapping["summary"] == cli["summary"]
    assert set(cli["summary"]["nDCG@3"]) >= {"base"} and len(cli["summary"]["nDCG@3"]) >= 2  # before and after
    trained = [Path(p) for name, p in from_mapping["models"].items() if name != "base"]
    assert trained and all((p / "model.safetensors").is_file() for p in trained)
    assert_same_weights(trained[0], cli_final)


def test_in_memory_rows_follow_the_file_rules_and_name_the_bad_row():
    frame = pd.DataFrame([{"sentence1": "a", "sentence2": "b", "score": 4.0}, {"sentence1": "c", "sentence2": "d",
                                                                               "score": None}])
    with pytest.raises(EmbforgeError, match=r"DataFrame\[1\]: missing field 'label'"):
        embforge.load_data(frame)
    (pair,) = embforge.load_data(frame, skip_bad_records=True)
    assert (pair.text1, pair.text2, pair.score) == ("a", "b", 4.0)
    triplets = embforge.load_data(datasets.Dataset.from_list([{"text": "q", "positive": "p", "negative": "n"}]))
    assert (triplets[0].query, triplets[0].pos, triplets[0].neg) == ("q", ["p"], ["n"])
    with pytest.raises(EmbforgeError, match=r"records\[0\]: keys foo match no record format"):
        embforge.load_data([{"foo": 1}])
    with pytest.raises(EmbforgeError, match="must be a list of records or dicts"):
        embforge.load_data(42)
    dataset_dict = datasets.DatasetDict(train=datasets.Dataset.from_list(rows(2)), test=datasets.Dataset.from_list(rows(1)))
    assert len(embforge.load_data(dataset_dict)) == 2 and len(embforge.load_data(dataset_dict, split="test")) == 1
