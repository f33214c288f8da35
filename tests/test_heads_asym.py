"""SGPT's frozen backbone + added linear layers (--freeze --addxlinear --useact --linearthenpool) and
asymmetric query/passage towers (--asym): shapes, save/load in embforge and sentence-transformers,
what training changes, and exact resume."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from test_train import config, crash_at_step, steps_trained
from tiny import SENTENCES
from transformers import AutoModel

from embforge import Encoder
from embforge.errors import EmbforgeError
from embforge.model.heads import DenseHead, sgpt_layers
from embforge.training import run as train_run


def train_config(model, tmp_path, **kw):
    """test_train's tiny run, with a higher learning rate so a 2-step run visibly moves a head."""
    return config(model, tmp_path, **{"max_steps": 2, "learning_rate": 1e-2, **kw})


def randomize(module, seed=0):
    """Move weights away from their initial values, so equality checks cannot pass by accident."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))


def st_model(folder):
    return SentenceTransformer(str(folder), device="cpu")


def test_head_shapes_and_identity_start(tiny_bert):
    head = DenseHead(sgpt_layers(32, 3, use_activation=True, on_tokens=False))
    assert [tuple(layer.linear.weight.shape) for layer in head.layers] == [(32, 32)] * 3
    assert head.pooled(torch.zeros(5, 32)).shape == (5, 32) and head.token_dim is None
    tokens = DenseHead(sgpt_layers(32, 2, use_activation=False, on_tokens=True))
    assert tokens.tokens(torch.ones(2, 7, 32)).shape == (2, 7, 32) and tokens.token_dim == 32

    enc = Encoder.from_pretrained(tiny_bert, device="cpu")
    before = enc.encode(SENTENCES)
    enc.add_dense_head(sgpt_layers(32, 2, use_activation=False, on_tokens=False))
    # Identity start: without an activation a fresh head leaves the vectors as they were.
    np.testing.assert_allclose(enc.encode(SENTENCES), before, atol=1e-6)
    enc.add_dense_head([{"in_features": 32, "out_features": 16, "activation": "tanh"}])
    assert enc.embedding_dim == 16 and enc.encode(SENTENCES).shape == (len(SENTENCES), 16)
    with pytest.raises(EmbforgeError, match="takes 8 features"):
        DenseHead([{"in_features": 32, "out_features": 16}, {"in_features": 8, "out_features": 8}])
    with pytest.raises(EmbforgeError, match="follows a layer on the pooled vector"):
        DenseHead([{"in_features": 32, "out_features": 32},
                   {"in_features": 32, "out_features": 32, "on_tokens": True}])


@pytest.mark.parametrize("useact", [False, True])
def test_addxlinear_head_loads_identically_in_sentence_transformers(tiny_bert, tmp_path, useact):
    enc = Encoder.from_pretrained(tiny_bert, device="cpu", pooling="mean")
    enc.add_dense_head(sgpt_layers(32, 2, use_activation=useact, on_tokens=False))
    randomize(enc.head)
    ours = enc.encode(SENTENCES)
    out = enc.save(tmp_path / "m")

    modules = json.loads((out / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Dense", "3_Dense", "4_Normalize"]
    dense_cfg = json.loads((out / "2_Dense" / "config.json").read_text())
    assert dense_cfg["activation_function"].endswith("GELU" if useact else "Identity")
    assert dense_cfg["module_input_name"] == "sentence_embedding"
    assert set(load_file(str(out / "2_Dense" / "model.safetensors"))) == {"linear.weight", "linear.bias"}

    assert np.abs(st_model(out).encode(SENTENCES, batch_size=3) - ours).max() <= 1e-5
    again = Encoder.from_pretrained(out, device="cpu")
    assert again.config.dense == enc.config.dense
    np.testing.assert_array_equal(again.encode(SENTENCES), ours)


def test_linearthenpool_round_trip(tiny_bert, tmp_path):
    enc = Encoder.from_pretrained(tiny_bert, device="cpu", pooling="weightedmean")
    enc.add_dense_head(sgpt_layers(32, 2, use_activation=True, on_tokens=True))
    randomize(enc.head)
    ours = enc.encode(SENTENCES)
    # Same weights after pooling give other vectors: the order matters once there is an activation.
    after = Encoder.from_pretrained(tiny_bert, device="cpu", pooling="weightedmean")
    after.add_dense_head(sgpt_layers(32, 2, use_activation=True, on_tokens=False))
    after.head.load_state_dict(enc.head.state_dict())
    assert np.abs(after.encode(SENTENCES) - ours).max() > 1e-3

    out = enc.save(tmp_path / "ltp")
    again = Encoder.from_pretrained(out, device="cpu")
    assert all(layer["on_tokens"] for layer in again.config.dense)
    np.testing.assert_array_equal(again.encode(SENTENCES), ours)
    # Dense on token_embeddings before Pooling: sentence-transformers runs the same order.
    assert [m["path"] for m in json.loads((out / "modules.json").read_text())][:4] == ["", "1_Dense", "2_Dense",
                                                                                      "3_Pooling"]
    assert np.abs(st_model(out).encode(SENTENCES) - ours).max() <= 1e-5


def test_reads_dense_modules_from_a_sentence_transformers_folder(tiny_bert, tmp_path):
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    torch.manual_seed(3)
    st = SentenceTransformer(modules=[Transformer(str(tiny_bert)), Pooling(32, pooling_mode="mean"),
                                      Dense(32, 24), Dense(24, 16, bias=False, activation_function=None),
                                      Normalize()], device="cpu")
    st.save(str(tmp_path / "st"))
    enc = Encoder.from_pretrained(tmp_path / "st", device="cpu")
    assert [(d["out_features"], d["bias"], d["activation"]) for d in enc.config.dense] == [
        (24, True, "tanh"), (16, False, "identity")]
    assert enc.embedding_dim == 16
    assert np.abs(enc.encode(SENTENCES) - st.encode(SENTENCES)).max() <= 1e-5


def test_asym_towers_save_and_load_on_both_sides(tiny_bert, tmp_path):
    enc = Encoder.from_pretrained(tiny_bert, device="cpu")
    enc.make_asymmetric()
    np.testing.assert_array_equal(enc.encode(SENTENCES, is_query=True), enc.encode(SENTENCES))  # copies at start
    randomize(enc.query_backbone)
    q, p = enc.encode(SENTENCES, is_query=True), enc.encode(SENTENCES)
    assert np.abs(q - p).max() > 1e-3
    out = enc.save(tmp_path / "asym")

    again = Encoder.from_pretrained(out, device="cpu")
    assert again.config.asym and again.query_backbone is not None
    np.testing.assert_array_equal(again.encode(SENTENCES, is_query=True), q)
    np.testing.assert_array_equal(again.encode(SENTENCES), p)
    # AutoModel: the passage tower at the top, the query tower in query_encoder/.
    top, query = AutoModel.from_pretrained(out), AutoModel.from_pretrained(out / "query_encoder")
    assert torch.equal(top.embeddings.word_embeddings.weight, enc.backbone.embeddings.word_embeddings.weight)
    assert torch.equal(query.embeddings.word_embeddings.weight,
                       enc.query_backbone.embeddings.word_embeddings.weight)
    # sentence-transformers routes queries to the query tower and documents to the top-level one.
    st = st_model(out)
    assert np.abs(st.encode_query(SENTENCES) - q).max() <= 1e-5
    assert np.abs(st.encode_document(SENTENCES) - p).max() <= 1e-5
    assert np.abs(st.encode(SENTENCES) - p).max() <= 1e-5


def test_freeze_with_addxlinear_trains_only_the_head(tiny_bert, tmp_path):
    final = train_run.train(train_config(tiny_bert, tmp_path, freeze=True, addxlinear=2, useact=True)).output_dir
    trained, base = load_file(str(final / "model.safetensors")), load_file(str(tiny_bert / "model.safetensors"))
    for key in base:
        assert torch.equal(trained[key], base[key]), key
    weight = load_file(str(final / "2_Dense" / "model.safetensors"))["linear.weight"]
    assert not torch.allclose(weight, torch.eye(32), atol=1e-4)  # moved away from its identity start
    enc = Encoder.from_pretrained(final, device="cpu")
    assert enc.config.dense == sgpt_layers(32, 2, use_activation=True, on_tokens=False)
    assert np.abs(st_model(final).encode(SENTENCES) - enc.encode(SENTENCES)).max() <= 1e-5


def test_asym_training_makes_query_and_passage_vectors_differ(tiny_bert_nodrop, tmp_path):
    final = train_run.train(train_config(tiny_bert_nodrop, tmp_path, asym=True, max_steps=3)).output_dir
    enc = Encoder.from_pretrained(final, device="cpu")
    q, p = enc.encode(SENTENCES, is_query=True), enc.encode(SENTENCES)
    assert np.abs(q - p).max() > 1e-3
    resaved = Encoder.from_pretrained(enc.save(tmp_path / "again"), device="cpu")
    np.testing.assert_array_equal(resaved.encode(SENTENCES, is_query=True), q)
    np.testing.assert_array_equal(resaved.encode(SENTENCES), p)


def test_resume_restores_head_and_query_tower_exactly(tiny_bert_nodrop, tmp_path, monkeypatch):
    common = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "asym": True, "addxlinear": 2,
              "useact": True, "learning_rate": 1e-3}
    straight = train_run.train(train_config(tiny_bert_nodrop, tmp_path / "a", **common)).output_dir

    with crash_at_step(3):
        train_run.train(train_config(tiny_bert_nodrop, tmp_path / "b", **common))
    checkpoint = tmp_path / "b" / "out" / "checkpoint-2"
    assert (checkpoint / "query_encoder" / "model.safetensors").exists()
    assert (checkpoint / "3_Dense" / "model.safetensors").exists()
    steps = steps_trained(monkeypatch)
    resumed = train_run.train(train_config(tiny_bert_nodrop, tmp_path / "b", resume_from_checkpoint="last", **common)).output_dir
    assert steps == [2, 3]  # resumed at checkpoint-2, not retrained from step 0

    for part in ("model.safetensors", "query_encoder/model.safetensors", "2_Dense/model.safetensors",
                 "3_Dense/model.safetensors"):
        a, b = load_file(str(straight / part)), load_file(str(resumed / part))
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=f"{part}:{key}")


@pytest.mark.parametrize("overrides, message", [
    ({"linearthenpool": True}, "--linearthenpool shapes the layers"),
    ({"useact": True}, "--useact shapes the layers"),
    ({"freeze": True}, "--freeze leaves nothing to train"),
    ({"addxlinear": -1}, "--addxlinear must be >= 0"),
])
def test_architecture_flags_are_checked_before_training(tiny_bert, tmp_path, overrides, message):
    with pytest.raises(EmbforgeError, match=message):
        train_run.train(train_config(tiny_bert, tmp_path, **overrides))
