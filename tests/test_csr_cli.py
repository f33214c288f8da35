"""`embforge csr embed | train | encode` and `embforge eval --sparse`: round trips and bad input."""

import json
import tracemalloc

import numpy as np
import pytest
import torch
from test_csr_model import _one_thread  # noqa: F401  (autouse: one torch thread)
from tiny import SENTENCES

from embforge.cli import main
from embforge.csr import SparseCodes, encode_dense, load_stacked, save_stacked
from embforge.csr.config import TrainConfig
from embforge.csr.data import load_train_data
from embforge.csr.model import CSRModel, CSRSettings
from embforge.csr.training import fit


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny_npz(path, n=200, d=16, labels=True, key="embeddings"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    arrays = {key: x}
    if labels:
        arrays["labels"] = rng.integers(0, 3, n)
    np.savez(path, **arrays)
    return x


def test_train_then_encode_round_trip(tmp_path, capsys):
    x = tiny_npz(tmp_path / "emb.npz")
    out = tmp_path / "csr"
    code, stdout, err = run_cli(capsys, "csr", "train", "--pretrained_emb", tmp_path / "emb.npz", "--embed_dim", 16,
                                "--hidden_size", 48, "--topk", 4, "--auxk", 8, "--auxk_coef", 0.03,
                                "--use_CL", "--cl_coef", 0.1, "--use_label_CL", "--initial_top", 8,
                                "--k_decay_ratio", 0.5, "--epochs", 2, "--lr", 1e-3, "--batch_size", 64,
                                "--output_dir", out, "--log_every", 1)
    assert code == 0, err
    assert "dead latents" in stdout
    report = json.loads((out / "train_report.json").read_text())
    assert report["steps"] == 8 and report["memory_mapped"] and report["labels"]
    assert [h["k"] for h in report["history"]] == [8, 7, 6, 5, 4, 4, 4, 4]  # annealed over the first half
    assert {"recon_k", "recon_multi_k", "auxk", "cl", "label_cl", "dead_fraction"} <= set(report["history"][0])
    assert (out / "loss.png").stat().st_size > 0

    code, _, err = run_cli(capsys, "csr", "encode", "--csr_model", out, "--input", tmp_path / "emb.npz",
                           "--output", tmp_path / "codes.npz")
    assert code == 0, err
    codes = SparseCodes.load(tmp_path / "codes.npz")
    assert codes.indices.shape == (200, 4) and codes.hidden_size == 48
    expected = encode_dense(CSRModel.load(out), x)
    np.testing.assert_array_equal(codes.indices, expected.indices)
    np.testing.assert_array_equal(codes.values, expected.values)


def test_reference_layout_and_spellings(tmp_path, capsys):
    tiny_npz(tmp_path / "ref.npz", labels=False, key="data")  # the reference scripts' key
    code, _, err = run_cli(capsys, "csr", "train", "--pretrained_emb", tmp_path / "ref.npz", "--hidden-size", 32,
                           "--topk", 4, "--epochs", 1, "--batch-size", 100, "--model_suffix", "demo",
                           "--base_model", "random", "--output_dir", tmp_path / "o")
    assert code == 0, err
    folder = tmp_path / "o" / "csr_k4_demo"
    assert json.loads((folder / "csr_config.json").read_text())["base_model"] == "random"


@pytest.mark.parametrize("flags, message", [
    (["--topk", 65, "--hidden_size", 64], "--topk 65 is larger than --hidden_size 64"),
    (["--embed_dim", 32], "--embed_dim 32 does not match"),
    (["--use_label_CL"], "needs a 'labels' array"),
    (["--initial_topk", 100, "--hidden_size", 64], "--initial_topk must be between 1 and hidden_size"),
])
def test_bad_flags_fail_before_training(tmp_path, capsys, flags, message):
    tiny_npz(tmp_path / "emb.npz", labels=False)
    code, _, err = run_cli(capsys, "csr", "train", "--pretrained_emb", tmp_path / "emb.npz",
                           "--output_dir", tmp_path / "out", *flags)
    assert code == 2
    assert message in err and err.startswith("embforge csr train: error:")
    assert not (tmp_path / "out").exists()


def test_npz_without_embeddings_key(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", weights=np.zeros((4, 4), dtype=np.float32))
    code, _, err = run_cli(capsys, "csr", "train", "--pretrained_emb", tmp_path / "bad.npz",
                           "--output_dir", tmp_path / "out")
    assert code == 2 and "bad.npz: no embeddings array" in err and "found: weights" in err
    np.savez(tmp_path / "half.npz", embeddings=np.zeros((4, 4), dtype=np.float32), queries=np.zeros((2, 4)))
    code, _, err = run_cli(capsys, "csr", "train", "--pretrained_emb", tmp_path / "half.npz",
                           "--output_dir", tmp_path / "out")
    assert code == 2 and "both 'queries' and 'pair_index'" in err


def test_csr_group_without_subcommand_prints_help(capsys):
    code, _, err = run_cli(capsys, "csr")
    assert code == 2 and "embed" in err and "encode" in err


def test_training_reads_the_npz_memory_mapped(tmp_path):
    """Training must never hold a second copy of the matrix: numpy's traced peak stays far below it."""
    n, d = 20000, 64
    np.savez(tmp_path / "big.npz", embeddings=np.random.default_rng(0).normal(size=(n, d)).astype(np.float32))
    size = n * d * 4
    data = load_train_data(tmp_path / "big.npz")
    assert data.embeddings.memory_mapped
    cfg = TrainConfig(topk=4, hidden_size=32, auxk=0, epochs=1, batch_size=1000)
    model = CSRModel(CSRSettings(d, 32, 4, 0))
    tracemalloc.start()
    fit(model, data, cfg, torch.device("cpu"), show_progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < size / 4, f"peak numpy allocation {peak} bytes for a {size}-byte matrix"


def test_embed_eval_sparse_and_stacked_folder(tiny_bert, tmp_path, capsys):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = SENTENCES * 2
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(docs)))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n"
                                                for i, t in enumerate(SENTENCES[:4])))
    for split in ("train", "test"):
        (beir / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                                     "".join(f"q{i}\td{i}\t1\n" for i in range(4)))
    code, out, err = run_cli(capsys, "csr", "embed", "--model", tiny_bert, "--data", beir, "--with_queries",
                             "--output", tmp_path / "emb.npz", "--no_cache")
    assert code == 0, err
    with np.load(tmp_path / "emb.npz") as z:
        assert z["embeddings"].shape == (16, 32) and z["queries"].shape == (4, 32)
        assert z["pair_index"].tolist() == [0, 1, 2, 3] and z["ids"][0] == "d0"
    code, _, err = run_cli(capsys, "csr", "train", "--pretrained_emb", tmp_path / "emb.npz", "--topk", 4,
                           "--epochs", 2, "--batch_size", 8, "--use_CL", "--output_dir", tmp_path / "csr",
                           "--stack_on", tiny_bert)
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", "--model", tiny_bert, "--data", beir, "--sparse", tmp_path / "csr",
                             "--k", "1,10", "--report", tmp_path / "r.json", "--no_cache")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["methods"]) == {"csr k=4", "dense 4 (truncated)", "dense 32 (full)"}
    assert report["methods"]["csr k=4"]["latency"]["median_ms"] > 0
    assert (tmp_path / "r.png").stat().st_size > 0 and "nDCG@10" in out

    stacked = tmp_path / "csr" / "with_encoder"
    sparse = load_stacked(stacked)
    codes = sparse.encode(SENTENCES)
    dense = sparse.encoder.encode(SENTENCES)
    expected = encode_dense(CSRModel.load(tmp_path / "csr"), dense)
    np.testing.assert_array_equal(codes.indices, expected.indices)
    np.testing.assert_allclose(codes.values, expected.values, rtol=1e-6)
    # the stacked folder's encoder is the tiny model unchanged, and csr encode reads texts through it
    from embforge import Encoder

    np.testing.assert_allclose(Encoder.from_pretrained(stacked).encode(SENTENCES), dense, rtol=1e-6)
    txt = tmp_path / "t.txt"
    txt.write_text("\n".join(SENTENCES) + "\n")
    code, _, err = run_cli(capsys, "csr", "encode", "--csr_model", stacked, "--input", txt,
                           "--output", tmp_path / "tc.npz")
    assert code == 0, err
    np.testing.assert_array_equal(SparseCodes.load(tmp_path / "tc.npz").indices, expected.indices)
    # re-stacking through the API gives a folder that loads the same way
    save_stacked(sparse.encoder, sparse.csr, tmp_path / "again")
    np.testing.assert_array_equal(load_stacked(tmp_path / "again").encode(SENTENCES).indices, expected.indices)


def test_sentence_transformers_sparse_encoder_gives_the_same_codes(tiny_bert, tmp_path):
    from embforge import Encoder
    from embforge.csr import to_sparse_encoder
    from embforge.csr.model import CSRSettings as Settings

    torch.manual_seed(0)
    head = CSRModel(Settings(32, 96, 4, 8))
    with torch.no_grad():
        head.latent_bias.normal_()
        head.pre_bias.normal_(std=0.1)
    save_stacked(Encoder.from_pretrained(tiny_bert), head, tmp_path / "stacked")
    ours = load_stacked(tmp_path / "stacked").encode(SENTENCES).dense()
    st = to_sparse_encoder(tmp_path / "stacked")
    theirs = st.encode(SENTENCES, convert_to_tensor=True).to_dense().numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
    assert ((theirs != 0).sum(axis=1) <= 4).all()
