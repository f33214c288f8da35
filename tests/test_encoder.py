import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from tiny import SENTENCES
from transformers import AutoModel, AutoTokenizer

from embforge import Encoder, EncoderConfig
from embforge.errors import EmbforgeError
from embforge.model.pooling import POOLING_MODES


def st_vectors(folder, texts, **kw):
    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode(texts, convert_to_numpy=True, batch_size=3, **kw)


@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_saved_model_reloads_identically_in_embforge_and_sentence_transformers(tiny_bert, tmp_path, pooling):
    enc = Encoder.from_pretrained(tiny_bert, pooling=pooling, normalize=True)
    before = enc.encode(SENTENCES, batch_size=3)
    out = enc.save(tmp_path / "saved")

    again = Encoder.from_pretrained(out).encode(SENTENCES, batch_size=3)
    np.testing.assert_array_equal(before, again)
    assert np.abs(st_vectors(out, SENTENCES) - before).max() <= 1e-5

    # The backbone alone loads with plain transformers.
    AutoModel.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    assert json.loads((out / "embforge.json").read_text())["pooling"] == pooling


def test_unnormalised_model_round_trips_through_sentence_transformers(tiny_bert, tmp_path):
    enc = Encoder.from_pretrained(tiny_bert, pooling="mean", normalize=False)
    vecs = enc.encode(SENTENCES)
    assert not np.allclose(np.linalg.norm(vecs, axis=1), 1.0)
    out = enc.save(tmp_path / "raw")
    assert not (out / "2_Normalize").exists()
    assert np.abs(st_vectors(out, SENTENCES) - vecs).max() <= 1e-5


def test_encode_restores_input_order_and_is_batch_invariant(tiny_bert):
    enc = Encoder.from_pretrained(tiny_bert)
    ref = np.stack([enc.encode(s) for s in SENTENCES])  # one at a time: no padding at all
    for bs in (1, 2, 3, 8):
        np.testing.assert_allclose(enc.encode(SENTENCES, batch_size=bs), ref, atol=1e-5)
    assert enc.encode(SENTENCES).dtype == np.float32


def test_encode_matches_forward_with_gradient(tiny_bert):
    enc = Encoder.from_pretrained(tiny_bert)
    enc.eval()
    with torch.no_grad():
        direct = enc.embed(SENTENCES).numpy()
    np.testing.assert_allclose(enc.encode(SENTENCES), direct, atol=1e-5)
    enc.train()
    enc.encode(SENTENCES[:2])
    assert enc.training


def test_query_instruction_and_lengths_follow_the_side(tiny_bert, tmp_path):
    enc = Encoder.from_pretrained(tiny_bert, query_instruction="search query ", query_max_len=4,
                                  passage_max_len=32)
    q = enc.token_ids(["the cat sleeps in the house"], is_query=True)[0]
    p = enc.token_ids(["the cat sleeps in the house"], is_query=False)[0]
    assert len(q) == 4 and len(p) == 8
    assert enc.tokenizer.decode(q[1:3]) == "search query"
    # Saved instructions become sentence-transformers prompts, so both libraries embed queries alike.
    enc.config.query_max_len = 32
    out = enc.save(tmp_path / "instr")
    ours = enc.encode(SENTENCES, is_query=True)
    theirs = st_vectors(out, SENTENCES, prompt_name="query")
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.abs(enc.encode(SENTENCES) - ours).max() > 1e-3


def test_matryoshka_dim_truncates_and_renormalises(tiny_bert):
    enc = Encoder.from_pretrained(tiny_bert)
    full = enc.encode(SENTENCES)
    cut = enc.encode(SENTENCES, dim=8)
    assert cut.shape == (len(SENTENCES), 8)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-5)
    with pytest.raises(EmbforgeError, match="dim must be between 1 and 32"):
        enc.encode(SENTENCES, dim=33)


def test_reads_pooling_from_a_sentence_transformers_folder(tiny_bert, tmp_path):
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    st = SentenceTransformer(modules=[Transformer(str(tiny_bert)), Pooling(32, pooling_mode="cls")], device="cpu")
    st.save(str(tmp_path / "st"))
    enc = Encoder.from_pretrained(tmp_path / "st")
    assert enc.config.pooling == "cls" and enc.config.normalize is False
    assert np.abs(enc.encode(SENTENCES) - st.encode(SENTENCES)).max() <= 1e-5


def test_plain_hf_folder_gets_defaults_by_architecture(tiny_bert, tiny_llama):
    assert Encoder.from_pretrained(tiny_bert).config.pooling == "mean"
    llm = Encoder.from_pretrained(tiny_llama)
    assert llm.config.pooling == "lasttoken" and llm.config.padding_side == "left"
    assert llm.tokenizer.pad_token is not None


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("pooling", ["lasttoken", "weightedmean", "mean"])
def test_decoder_poolings_do_not_depend_on_padding_side(request, model, pooling):
    folder = request.getfixturevalue(model)
    left = Encoder.from_pretrained(folder, pooling=pooling, padding_side="left")
    right = Encoder.from_pretrained(folder, pooling=pooling, padding_side="right")
    alone = np.stack([right.encode(s) for s in SENTENCES])
    np.testing.assert_allclose(left.encode(SENTENCES, batch_size=4), alone, atol=1e-5)
    np.testing.assert_allclose(right.encode(SENTENCES, batch_size=4), alone, atol=1e-5)


def test_bad_model_paths_are_clear_errors(tmp_path):
    with pytest.raises(EmbforgeError, match="model not found: .*missing"):
        Encoder.from_pretrained(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    with pytest.raises(EmbforgeError, match="not a model folder"):
        Encoder.from_pretrained(tmp_path / "junk")
    with pytest.raises(EmbforgeError, match="unknown pooling 'sum'"):
        EncoderConfig(pooling="sum")


@pytest.mark.e2e
def test_default_model_equals_sentence_transformers(bundled_data):
    texts = [json.loads(line)["text"] for line in (bundled_data / "scifact" / "queries.jsonl").open()][:40]
    texts += [json.loads(line)["text"] for _, line in zip(range(24), (bundled_data / "scifact" / "corpus.jsonl").open())]
    enc = Encoder.from_pretrained()
    theirs = SentenceTransformer(enc.name_or_path, device="cpu").encode(texts, batch_size=16)
    assert np.abs(enc.encode(texts, batch_size=16) - theirs).max() <= 1e-5
