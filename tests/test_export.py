import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from tiny import SENTENCES

from embforge import Encoder
from embforge.cli import main
from embforge.errors import EmbforgeError
from embforge.exporting import export_model


@pytest.fixture
def ort():
    """Only the ONNX tests need the optional onnx extra; the other export tests run without it."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    return pytest.importorskip("onnxruntime")


# Other texts, batch size and lengths than the ones the graph was traced with: the axes must be dynamic.
TEXTS = [SENTENCES[6], "cat", SENTENCES[2] + " " + SENTENCES[0], SENTENCES[4], "the dog"]


def onnx_vectors(ort, folder, encoder, is_query=False, name="model.onnx"):
    session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
    feats = encoder.tokenize(TEXTS, is_query=is_query)
    feeds = {"input_ids": feats["input_ids"].numpy(), "attention_mask": feats["attention_mask"].numpy()}
    return session.run(["sentence_embedding"], feeds)[0]


@pytest.mark.parametrize("pooling, normalize", [("mean", True), ("cls", True), ("mean", False)])
def test_onnx_vectors_match_embforge(ort, tiny_bert_nodrop, tmp_path, pooling, normalize):
    src = tmp_path / "model"
    Encoder.from_pretrained(tiny_bert_nodrop, pooling=pooling, normalize=normalize, device="cpu").save(src)
    result = export_model(src, "onnx", tmp_path / "onnx")
    assert result["max_abs_diff"] is not None and result["max_abs_diff"] <= 1e-4
    enc = Encoder.from_pretrained(src, device="cpu")
    want = enc.encode(TEXTS)
    got = onnx_vectors(ort, tmp_path / "onnx", enc)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalize
    cfg = json.loads((tmp_path / "onnx" / "onnx_config.json").read_text())
    assert cfg["encoder"]["pooling"] == pooling and cfg["embedding_dim"] == want.shape[1]
    assert (tmp_path / "onnx" / "tokenizer.json").is_file()


def test_onnx_two_towers_and_dense_head(ort, tiny_bert_nodrop, tmp_path):
    enc = Encoder.from_pretrained(tiny_bert_nodrop, device="cpu")
    enc.add_dense_head([{"in_features": 32, "out_features": 8, "bias": True, "activation": "tanh",
                         "on_tokens": False}])
    enc.make_asymmetric()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in enc.query_backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in enc.head.parameters():
            p.copy_(torch.randn_like(p))
    enc.save(tmp_path / "m")
    export_model(tmp_path / "m", "onnx", tmp_path / "onnx")
    enc = Encoder.from_pretrained(tmp_path / "m", device="cpu")
    for is_query, name in ((False, "model.onnx"), (True, "query_model.onnx")):
        want = enc.encode(TEXTS, is_query=is_query)
        assert want.shape[1] == 8
        assert np.abs(onnx_vectors(ort, tmp_path / "onnx", enc, is_query, name) - want).max() <= 1e-4
    assert np.abs(enc.encode(TEXTS, is_query=True) - enc.encode(TEXTS)).max() > 1e-3  # the towers differ


def test_sentence_transformers_export_of_a_plain_hf_folder(tiny_bert_nodrop, tmp_path, capsys):
    out = tmp_path / "st"
    assert main(["export", "--model", str(tiny_bert_nodrop), "--format", "sentence-transformers",
                 "--output_dir", str(out)]) == 0
    assert "max |difference|" in capsys.readouterr().out
    want = Encoder.from_pretrained(tiny_bert_nodrop).encode(TEXTS)
    got = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    assert np.abs(got - want).max() <= 1e-5


def test_export_errors(tiny_bert_nodrop, tmp_path, capsys):
    with pytest.raises(EmbforgeError, match="the output folder holds the input"):
        export_model(tiny_bert_nodrop, "onnx", tiny_bert_nodrop)
    assert main(["export", "--model", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "model not found" in capsys.readouterr().err
