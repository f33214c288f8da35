"""Encoding speed-ups keep the vectors; the opt-in precisions change them and the cache key with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embforge.errors import EmbforgeError
from embforge.model import Encoder
from embforge.model.encoder import _batches
from embforge.model.precision import apply_precision, compile_towers
from embforge.store.encode import encode_store
from embforge.store.fingerprint import model_fingerprint

# lengths spread from 1 to ~40 words, so a token budget makes batches of very different sizes
TEXTS = [" ".join(["the cat sat on a mat"] * (1 + i % 7)) + f" {i}" for i in range(37)]


def test_token_budget_batches_by_padded_tokens():
    # sorted longest first: 10 tokens wide -> 3 rows in 32 tokens; then 8 wide -> 4 rows; then the rest
    lengths = [10, 9, 9, 8, 8, 3, 3, 2, 1]
    assert [list(r) for r in _batches(lengths, 100, 32)] == [[0, 1, 2], [3, 4, 5, 6], [7, 8]]
    assert [list(r) for r in _batches(lengths, 4, None)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert [list(r) for r in _batches([50, 40], 8, 16)] == [[0], [1]]  # a text wider than the budget goes alone


@pytest.mark.parametrize("max_tokens", [60, 200, 4096])
def test_token_budget_keeps_vectors(tiny_bert, max_tokens):
    enc = Encoder.from_pretrained(tiny_bert, device="cpu")
    fixed = enc.encode(TEXTS, batch_size=5)
    budget = enc.encode(TEXTS, batch_size=5, max_tokens=max_tokens)
    assert np.abs(budget - fixed).max() < 1e-5
    sizes = [len(r) for r in _batches(sorted((len(x) for x in enc.token_ids(TEXTS)), reverse=True), 5, max_tokens)]
    assert len(set(sizes)) > 1 or max_tokens == 4096  # the budget did make batches of other sizes


def test_int8_changes_vectors_a_little_and_the_cache_key(tiny_bert, private_cache, monkeypatch):
    enc = Encoder.from_pretrained(tiny_bert, device="cpu")
    fp32 = enc.encode(TEXTS)
    key = model_fingerprint(enc)
    store, stats = encode_store(enc, TEXTS)
    assert stats.encoded == 1
    apply_precision(enc, quantize="int8")
    assert type(enc.backbone.encoder.layer[0].attention.self.query).__name__ == "Linear"  # torch.ao's dynamic one
    assert type(enc.backbone.encoder.layer[0].attention.self.query).__module__.startswith(
        "torch.ao.nn.quantized.dynamic")
    int8 = enc.encode(TEXTS)
    assert 0 < np.abs(int8 - fp32).max() < 0.2 and (int8 * fp32).sum(1).min() > 0.9
    assert model_fingerprint(enc) != key
    calls = []
    real = enc.encode
    monkeypatch.setattr(enc, "encode", lambda texts, **kw: calls.append(len(texts)) or real(texts, **kw))
    store8, stats8 = encode_store(enc, TEXTS)
    assert calls == [len(TEXTS)] and stats8.encoded == 1 and stats8.reused == 0  # re-encoded, not read back
    assert store8.root != store.root
    # the store batches by 64: int8 activations are scaled per batch, so compare at the same batching
    same_batches = real(TEXTS, batch_size=64)
    assert np.abs(np.concatenate([b for _, b in store8.blocks()]) - same_batches).max() == 0


def test_bfloat16_on_cpu_changes_the_key_and_float16_is_refused(tiny_bert, private_cache):
    enc = Encoder.from_pretrained(tiny_bert, device="cpu")
    fp32, key = enc.encode(TEXTS), model_fingerprint(enc)
    with pytest.raises(EmbforgeError, match="float16 needs a GPU"):
        apply_precision(enc, dtype="float16")
    with pytest.raises(EmbforgeError, match="one of float32, float16, bfloat16"):
        apply_precision(enc, dtype="half")
    apply_precision(enc, dtype="bfloat16")
    assert next(enc.parameters()).dtype == torch.bfloat16
    bf16 = enc.encode(TEXTS)
    assert bf16.dtype == np.float32 and 0 < np.abs(bf16 - fp32).max() < 0.05
    assert model_fingerprint(enc) != key


def test_quantized_digest_sees_the_int8_weights(tiny_bert):
    a = apply_precision(Encoder.from_pretrained(tiny_bert, device="cpu"), quantize="int8")
    b = apply_precision(Encoder.from_pretrained(tiny_bert, device="cpu"), quantize="int8")
    assert model_fingerprint(a) == model_fingerprint(b)  # same weights, same key: a rerun reads its cache
    for enc, shift in ((a, 0.0), (b, 1e-6)):  # biases that print alike (0.2500): the bytes must be hashed
        dense = enc.backbone.encoder.layer[1].output.dense
        weight, bias = dense._weight_bias()
        dense.set_weight_bias(weight, torch.nn.Parameter(bias.detach() + 0.25 + shift))
    assert model_fingerprint(a) != model_fingerprint(b)


def test_compiled_towers_keep_vectors_and_key(tiny_bert):
    enc = Encoder.from_pretrained(tiny_bert, device="cpu")
    eager, key = enc.encode(TEXTS, batch_size=8), model_fingerprint(enc)
    compile_towers(enc)
    assert hasattr(enc.backbone.forward, "_torchdynamo_orig_callable")  # the forward encode calls is dynamo's
    assert np.abs(enc.encode(TEXTS, batch_size=8) - eager).max() < 1e-5
    assert model_fingerprint(enc) == key  # same vectors: the eager run's cache stays valid
    assert "_orig_mod" not in "".join(enc.state_dict())  # saving writes the usual names


def test_encode_command_reencodes_under_int8_and_reuses_fp32(tiny_bert, tmp_path, capsys):
    from embforge.encoding import EncodeConfig, encode_file

    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    outs = {}
    for name, quantize in (("fp32", None), ("int8", "int8"), ("again", None)):
        encode_file(EncodeConfig(input_file=str(tmp_path / "in.txt"), output_file=str(tmp_path / f"{name}.npy"),
                                 model_name_or_path=str(tiny_bert), store_dir=str(tmp_path / "store"),
                                 quantize=quantize))
        outs[name] = (capsys.readouterr().out, np.load(tmp_path / f"{name}.npy"))
    assert "1 encoded, 0 reused" in outs["fp32"][0] and "1 encoded, 0 reused" in outs["int8"][0]
    assert "0 encoded, 1 reused" in outs["again"][0]
    assert np.abs(outs["int8"][1] - outs["fp32"][1]).max() > 5e-5  # int8 vectors (fp32 rounding is ~1e-7)
    assert np.array_equal(outs["again"][1], outs["fp32"][1])
