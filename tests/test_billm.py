"""BiLLM: from layer i on a decoder attends both ways; before it, and when off, it stays causal."""

import json

import numpy as np
import pytest
import torch
from tiny import SENTENCES

from embforge import Encoder
from embforge.errors import EmbforgeError
from embforge.model.billm import ENV_START_INDEX, apply_billm, bidirectional_from_causal
from embforge.training.peft_modes import billm_start, validate_llm_options

# Same first four words, different last word: a causal model's states at position < 4 cannot tell them apart.
PAIR = ("the cat sleeps in the house", "the cat sleeps in the car")
PROBE = 2  # a token position well before the change


def layer_states(enc: Encoder, texts, side: str):
    """Hidden states after each layer at PROBE for each text (batched with a short text to force padding)."""
    enc.config.padding_side = side
    feats = enc.collate(enc.token_ids([*texts, "a dog"]))
    with torch.no_grad():
        out = enc.backbone(**feats, output_hidden_states=True)
    first_real = feats["attention_mask"].argmax(dim=1)
    return [torch.stack([h[row, first_real[row] + PROBE] for row in range(len(texts))]) for h in out.hidden_states]


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_earlier_tokens_see_later_ones_only_with_billm(request, model, side):
    folder = request.getfixturevalue(model)
    enc = Encoder.from_pretrained(folder, device="cpu")
    causal = layer_states(enc, PAIR, side)
    assert torch.allclose(causal[-1][0], causal[-1][1], atol=1e-6)  # causal: the later word is invisible

    enc = Encoder.from_pretrained(folder, device="cpu", billm_start_index=0)
    bi = layer_states(enc, PAIR, side)
    assert (bi[-1][0] - bi[-1][1]).abs().max() > 1e-3  # bidirectional: it is seen


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_bidirectional_only_from_the_start_layer(request, model):
    enc = Encoder.from_pretrained(request.getfixturevalue(model), device="cpu", billm_start_index=1)
    states = layer_states(enc, PAIR, "left")  # [embeddings, after layer 0, after layer 1]
    assert torch.allclose(states[1][0], states[1][1], atol=1e-6)  # layer 0 is still causal
    assert (states[2][0] - states[2][1]).abs().max() > 1e-3  # layer 1 is not


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_stays_masked_under_billm(request, model, side):
    enc = Encoder.from_pretrained(request.getfixturevalue(model), device="cpu", billm_start_index=0,
                                  padding_side=side, pooling="mean")
    alone = np.stack([enc.encode(s) for s in SENTENCES])  # no padding at all
    np.testing.assert_allclose(enc.encode(SENTENCES, batch_size=4), alone, atol=1e-5)


def test_billm_is_saved_and_reapplied_at_load(tiny_llama, tmp_path):
    # Mean pooling: under last-token pooling a bidirectional last layer changes nothing, since the last
    # token already saw every key and the keys come from the (causal) layer before.
    causal = Encoder.from_pretrained(tiny_llama, device="cpu", pooling="mean").encode(SENTENCES)
    enc = Encoder.from_pretrained(tiny_llama, device="cpu", pooling="mean", billm_start_index=1)
    vecs = enc.encode(SENTENCES)
    assert np.abs(vecs - causal).max() > 1e-3
    out = enc.save(tmp_path / "billm")
    assert json.loads((out / "embforge.json").read_text())["billm_start_index"] == 1
    np.testing.assert_array_equal(Encoder.from_pretrained(out, device="cpu").encode(SENTENCES), vecs)


def test_billm_survives_an_asymmetric_copy(tiny_llama):
    enc = Encoder.from_pretrained(tiny_llama, device="cpu", billm_start_index=0)
    enc.make_asymmetric()
    np.testing.assert_allclose(enc.encode(SENTENCES, is_query=True), enc.encode(SENTENCES), atol=1e-6)


def test_apply_billm_checks_the_index(tiny_llama):
    enc = Encoder.from_pretrained(tiny_llama, device="cpu")
    with pytest.raises(EmbforgeError, match="has 2 decoder layers"):
        apply_billm(enc.backbone, 2)
    with pytest.raises(EmbforgeError, match="billm_start_index must be >= 0"):
        Encoder.from_pretrained(tiny_llama, device="cpu", billm_start_index=-1)


def test_start_index_from_flag_then_environment(monkeypatch):
    class Cfg:
        apply_billm, billm_start_index, speca, specb, load_kbit = True, None, False, False, None

    monkeypatch.delenv(ENV_START_INDEX, raising=False)
    assert billm_start(Cfg) == 0
    monkeypatch.setenv(ENV_START_INDEX, "3")
    assert billm_start(Cfg) == 3
    Cfg.billm_start_index = 1
    assert billm_start(Cfg) == 1  # the flag wins
    Cfg.billm_start_index = None
    monkeypatch.setenv(ENV_START_INDEX, "x")
    with pytest.raises(EmbforgeError, match="BiLLM_START_INDEX='x'"):
        validate_llm_options(Cfg)
    Cfg.apply_billm = False
    assert billm_start(Cfg) is None


def test_bidirectional_mask_keeps_padding_only():
    # Boolean SDPA mask, batch of one, left padding of one token over 4 positions.
    causal = torch.tril(torch.ones(4, 4, dtype=torch.bool))
    causal[:, 0] = False
    bi = bidirectional_from_causal(causal.view(1, 1, 4, 4))
    assert bi.shape == (1, 1, 4, 4)
    assert torch.equal(bi[0, 0], torch.tensor([[False, True, True, True]] * 4))
    # Additive float mask (eager attention): 0 = attend, min = masked.
    neg = torch.finfo(torch.float32).min
    eager = torch.where(causal, 0.0, neg).view(1, 1, 4, 4)
    assert torch.equal(bidirectional_from_causal(eager)[0, 0, 0], torch.tensor([neg, 0.0, 0.0, 0.0]))
    assert bidirectional_from_causal(None) is None
