"""Decoder LLMs as encoders: pooling under both paddings, EOS, SGPT brackets, LoRA save/load, k-bit errors."""

import json
import types

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from tiny import SENTENCES

from embforge import Encoder
from embforge.cli import main as cli
from embforge.errors import EmbforgeError
from embforge.model.pooling import POOLING_MODES
from embforge.training.peft_modes import (
    apply_parameter_efficiency,
    finalize_for_saving,
    llm_overrides,
    validate_llm_options,
)


def unpadded_states(enc: Encoder, text: str) -> torch.Tensor:
    """Token states of one text run alone (no padding), straight from the backbone."""
    ids = enc.token_ids([text])[0]
    with torch.no_grad():
        return enc.backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]


def by_hand(states: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "cls":
        return states[0]
    if mode == "lasttoken":
        return states[-1]
    if mode == "mean":
        return states.mean(0)
    weights = torch.arange(1, states.shape[0] + 1, dtype=states.dtype).unsqueeze(1)  # 1..n, SGPT
    return (states * weights).sum(0) / weights.sum()


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_each_pooling_under_each_padding_matches_the_hand_computed_vector(request, model, side, pooling):
    enc = Encoder.from_pretrained(request.getfixturevalue(model), device="cpu", pooling=pooling,
                                  padding_side=side, normalize=False)
    expected = torch.stack([by_hand(unpadded_states(enc, s), pooling) for s in SENTENCES]).numpy()
    np.testing.assert_allclose(enc.encode(SENTENCES, batch_size=4), expected, atol=1e-5)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_decoder_defaults_append_eos_and_persist(request, model, tmp_path):
    enc = Encoder.from_pretrained(request.getfixturevalue(model), device="cpu", is_llm=True)
    assert (enc.config.pooling, enc.config.padding_side, enc.config.append_eos) == ("lasttoken", "left", True)
    eos = enc.tokenizer.eos_token_id
    plain = enc.tokenizer("the cat sleeps", add_special_tokens=False)["input_ids"]
    ids = enc.token_ids(["the cat sleeps"])[0]
    assert ids[-1] == eos and ids[-1 - len(plain):-1] == plain
    assert len(enc.token_ids(["the " * 100], is_query=True)[0]) == enc.config.query_max_len
    assert enc.token_ids(["the " * 100], is_query=True)[0][-1] == eos  # truncation keeps the EOS
    vecs = enc.encode(SENTENCES, batch_size=3)

    out = enc.save(tmp_path / "llm")
    saved = json.loads((out / "embforge.json").read_text())
    assert (saved["pooling"], saved["padding_side"], saved["append_eos"]) == ("lasttoken", "left", True)
    np.testing.assert_array_equal(Encoder.from_pretrained(out, device="cpu").encode(SENTENCES, batch_size=3), vecs)
    # The saved tokenizer appends EOS itself, so sentence-transformers reads the same last token.
    st = SentenceTransformer(str(out), device="cpu").encode(SENTENCES, batch_size=3)
    assert np.abs(st - vecs).max() <= 1e-5
    # Without the EOS the last token is the text's last word: a different vector.
    no_eos = Encoder.from_pretrained(request.getfixturevalue(model), device="cpu", is_llm=True, append_eos=False)
    assert np.abs(no_eos.encode(SENTENCES) - vecs).max() > 1e-3


def test_missing_pad_token_falls_back_to_eos(tiny_gpt2):
    enc = Encoder.from_pretrained(tiny_gpt2, device="cpu")
    assert enc.tokenizer.pad_token == enc.tokenizer.eos_token == "</s>"


def test_encode_command_reproduces_saved_llm_vectors(tiny_llama, tmp_path):
    enc = Encoder.from_pretrained(tiny_llama, device="cpu", is_llm=True, brackets="specb",
                                  query_instruction="find ")
    out = enc.save(tmp_path / "m")
    (tmp_path / "q.txt").write_text("\n".join(SENTENCES) + "\n")
    assert cli(["encode", "--model", str(out), "--input", str(tmp_path / "q.txt"), "--output",
                str(tmp_path / "q.npy"), "--is_query", "--batch_size", "3"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "q.npy"), enc.encode(SENTENCES, is_query=True), atol=1e-6)


@pytest.mark.parametrize("style,query_marks,passage_marks", [
    ("specb", ("[", "]"), ("{", "}")),
    ("speca", ("[SOS]", None), ("{SOS}", None)),
])
def test_brackets_wrap_each_side_and_round_trip(tiny_llama, tmp_path, style, query_marks, passage_marks):
    enc = Encoder.from_pretrained(tiny_llama, device="cpu", is_llm=True, brackets=style)
    tok = enc.tokenizer
    body = tok("the cat sleeps", add_special_tokens=False)["input_ids"]
    bos = [tok.bos_token_id] if enc._frame[0] else []
    for is_query, (opening, closing) in ((True, query_marks), (False, passage_marks)):
        ids = enc.token_ids(["the cat sleeps"], is_query=is_query)[0]
        expected = bos + [tok.convert_tokens_to_ids(opening)] + body
        expected += ([tok.convert_tokens_to_ids(closing)] if closing else []) + [tok.eos_token_id]
        assert ids == expected
        assert tok.unk_token_id not in ids
    q, p = enc.encode(SENTENCES, is_query=True), enc.encode(SENTENCES)
    assert np.abs(q - p).max() > 1e-3  # one model, two sides told apart by the brackets

    out = enc.save(tmp_path / style)
    assert json.loads((out / "embforge.json").read_text())["brackets"] == style
    again = Encoder.from_pretrained(out, device="cpu")
    assert again.token_ids(SENTENCES, is_query=True) == enc.token_ids(SENTENCES, is_query=True)
    np.testing.assert_array_equal(again.encode(SENTENCES, is_query=True), q)
    np.testing.assert_array_equal(again.encode(SENTENCES), p)


def lora_cfg(**kw):
    base = dict(apply_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules=None,
                save_adapter_only=False, freezenonbias=False, freeze=False, addxlinear=0, asym=False,
                load_kbit=None, gradient_checkpointing=False)
    return types.SimpleNamespace(**{**base, **kw})


def lora_train_a_little(enc: Encoder, steps: int = 3) -> None:
    """A few contrastive steps so the LoRA B matrices leave zero and the adapter changes the vectors."""
    params = [p for p in enc.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5)
    enc.train()
    for _ in range(steps):
        q = enc.embed(SENTENCES[:4], is_query=True)
        p = enc.embed(SENTENCES[4:8])
        loss = torch.nn.functional.cross_entropy(q @ p.T / 0.05, torch.arange(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()


@pytest.mark.parametrize("model,targets", [
    ("tiny_llama", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    ("tiny_gpt2", {"c_attn", "c_proj", "c_fc"}),
])
def test_lora_targets_follow_the_architecture(request, model, targets):
    enc = Encoder.from_pretrained(request.getfixturevalue(model), device="cpu", is_llm=True)
    apply_parameter_efficiency(enc, lora_cfg())
    wrapped = {name.rsplit(".", 1)[-1] for name, mod in enc.backbone.named_modules() if hasattr(mod, "lora_A")}
    assert wrapped == targets
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_lora_train_merge_and_reload_give_equal_vectors(request, model, tmp_path):
    folder = request.getfixturevalue(model)
    base = Encoder.from_pretrained(folder, device="cpu", is_llm=True).encode(SENTENCES)
    enc = Encoder.from_pretrained(folder, device="cpu", is_llm=True)
    cfg = lora_cfg()
    apply_parameter_efficiency(enc, cfg)
    lora_train_a_little(enc)
    trained = enc.encode(SENTENCES)
    assert np.abs(trained - base).max() > 1e-3

    finalize_for_saving(enc, cfg)  # merge
    assert not hasattr(enc.backbone, "peft_config")
    np.testing.assert_allclose(enc.encode(SENTENCES), trained, atol=1e-5)
    out = enc.save(tmp_path / "merged")
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    np.testing.assert_allclose(Encoder.from_pretrained(out, device="cpu").encode(SENTENCES), trained, atol=1e-5)
    st = SentenceTransformer(str(out), device="cpu").encode(SENTENCES)
    assert np.abs(st - trained).max() <= 1e-5


def test_lora_adapter_only_save_reloads_on_its_base(tiny_llama, tmp_path):
    enc = Encoder.from_pretrained(tiny_llama, device="cpu", is_llm=True, billm_start_index=1, pooling="mean")
    cfg = lora_cfg(save_adapter_only=True)
    apply_parameter_efficiency(enc, cfg)
    lora_train_a_little(enc)
    trained = enc.encode(SENTENCES)
    finalize_for_saving(enc, cfg)  # keeps the adapter
    out = enc.save(tmp_path / "adapter")
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    again = Encoder.from_pretrained(out, device="cpu")
    assert again.config.billm_start_index == 1
    np.testing.assert_allclose(again.encode(SENTENCES), trained, atol=1e-5)


def test_adapter_folder_with_a_missing_base_is_a_clear_error(tiny_llama, tmp_path):
    enc = Encoder.from_pretrained(tiny_llama, device="cpu", is_llm=True)
    apply_parameter_efficiency(enc, lora_cfg(save_adapter_only=True))
    out = enc.save(tmp_path / "adapter")
    cfg_path = out / "adapter_config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "base_model_name_or_path": "/nowhere/x"}))
    with pytest.raises(EmbforgeError, match="base model '/nowhere/x' of this LoRA adapter is not a local folder"):
        Encoder.from_pretrained(out, device="cpu")


def test_train_command_with_llm_flags_saves_a_loadable_model(tiny_llama, tmp_path):
    out = tmp_path / "run"
    assert cli(["train", "--model_name_or_path", str(tiny_llama), "--sanity_test", "--output_dir", str(out),
                "--is_llm", "--apply_lora", "--specb", "--apply_billm", "--billm_start_index", "1",
                "--report_to", "none", "--save_strategy", "no"]) == 0
    saved = json.loads((out / "embforge.json").read_text())
    assert {k: saved[k] for k in ("pooling", "padding_side", "append_eos", "brackets", "billm_start_index")} == {
        "pooling": "lasttoken", "padding_side": "left", "append_eos": True, "brackets": "specb",
        "billm_start_index": 1}
    enc = Encoder.from_pretrained(out, device="cpu")
    assert enc.encode(SENTENCES).shape == (len(SENTENCES), 32)


def test_llm_flag_conflicts_and_kbit_fail_before_loading(tiny_llama, monkeypatch):
    import embforge.model.llm as llm

    with pytest.raises(EmbforgeError, match="--speca and --specb"):
        validate_llm_options(types.SimpleNamespace(speca=True, specb=True))
    monkeypatch.setattr(llm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbforgeError, match="--load_kbit 4 needs the bitsandbytes package"):
        validate_llm_options(types.SimpleNamespace(load_kbit=4, apply_lora=True))
    with pytest.raises(EmbforgeError, match="bitsandbytes"):
        Encoder.from_pretrained(tiny_llama, load_kbit=4)
    monkeypatch.undo()
    monkeypatch.setattr(llm.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EmbforgeError, match="--load_kbit 8 needs a CUDA GPU"):
        validate_llm_options(types.SimpleNamespace(load_kbit=8, apply_lora=True))
    with pytest.raises(EmbforgeError, match="must be 4 or 8"):
        llm.kbit_load_kwargs(3)


def test_is_llm_overrides_leave_explicit_flags_alone():
    cfg = types.SimpleNamespace(is_llm=True, pooling="weightedmean", padding_side="right", append_eos=None,
                                apply_billm=False, speca=False, specb=True)
    out = llm_overrides(cfg)
    assert out["padding_side"] == "right" and out["append_eos"] is True and out["brackets"] == "specb"
    assert "pooling" not in out  # the explicit --pooling goes through the normal override
    assert llm_overrides(types.SimpleNamespace(is_llm=False))["append_eos"] is None


def test_lora_top_layers_adapts_only_the_last_layers(tiny_llama):
    enc = Encoder.from_pretrained(tiny_llama, device="cpu", is_llm=True)
    apply_parameter_efficiency(enc, lora_cfg(lora_top_layers=1))
    wrapped = {name for name, mod in enc.backbone.named_modules() if hasattr(mod, "lora_A")}
    assert wrapped and all(".layers.1." in name for name in wrapped)
    with pytest.raises(EmbforgeError, match="--lora_top_layers must be between 1 and 2"):
        apply_parameter_efficiency(Encoder.from_pretrained(tiny_llama, device="cpu"), lora_cfg(lora_top_layers=3))
