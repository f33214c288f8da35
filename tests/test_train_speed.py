"""Training-step speed-ups that must not change the result: the training attention, token-budget GradCache
chunks, and the opt-in attention-dropout override (which does change it, and says so)."""

import pytest
import torch
from test_train import config, weights

from embforge import Encoder
from embforge.errors import EmbforgeError
from embforge.training import attention as training_attention_module
from embforge.training import gradcache as gradcache_module
from embforge.training import run as train_run
from embforge.training.attention import NAME, set_attention_dropout, training_attention
from embforge.training.gradcache import chunk_bounds, gradcache_step
from embforge.training.objective import InfoNCEObjective

TEXTS = ["the cat sleeps on the old red sofa in the house", "a dog", "science study of cells and water",
         "big red car on the road", "one", "a bird eats the fish in the river near the city"]


def embed_and_grads(enc, feats, seed):
    enc.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    emb = enc(feats)
    (emb * torch.linspace(-1, 1, emb.shape[1])).sum().backward()
    return emb.detach(), {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}


def test_training_attention_draws_the_same_masks_and_gradients_as_sdpa(tiny_bert):
    """Dropout 0.1 on, padded batch: same seed, same dropped elements, so the same embeddings and gradients."""
    enc = Encoder.from_pretrained(tiny_bert)
    enc.train()
    feats = enc.tokenize(TEXTS)
    assert (feats["attention_mask"] == 0).any()  # the padding mask is exercised
    ref_emb, ref_grads = embed_and_grads(enc, feats, seed=7)
    other_emb, _ = embed_and_grads(enc, feats, seed=8)
    assert (ref_emb - other_emb).abs().max() > 1e-3  # dropout is on: another seed is another result
    with training_attention(enc.towers()):
        assert enc.backbone.config._attn_implementation == NAME
        emb, grads = embed_and_grads(enc, feats, seed=7)
    assert enc.backbone.config._attn_implementation == "sdpa"  # restored: encoding is untouched
    torch.testing.assert_close(emb, ref_emb, atol=1e-6, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_trainer_trains_with_the_training_attention(tiny_bert, tmp_path, monkeypatch):
    calls = []
    original = training_attention_module.attention_forward

    def counting(*args, **kwargs):
        calls.append(kwargs.get("dropout", 0.0))
        return original(*args, **kwargs)

    monkeypatch.setattr(training_attention_module, "attention_forward", counting)
    train_run.train(config(tiny_bert, tmp_path / "default", max_steps=1))
    assert not calls, "the training attention is opt-in: a default run keeps sdpa's arithmetic"
    train_run.train(config(tiny_bert, tmp_path / "opted", max_steps=1, training_attention=True))
    assert calls and all(p == pytest.approx(0.1) for p in calls)  # 2 layers x (queries, passages)


def test_chunk_bounds_by_rows_and_tokens():
    lengths = [3, 9, 2, 2, 2, 2, 12, 1]
    assert chunk_bounds(lengths, 3, None) == [(0, 3), (3, 6), (6, 8)]
    # budget 12: [3, 9] -> 2 x 9 = 18 > 12 so 3 alone; 9 alone (9, then 9 x 2); 2 x 6 rows = 12; 12 alone; 1
    assert chunk_bounds(lengths, None, 12) == [(0, 1), (1, 2), (2, 6), (6, 7), (7, 8)]
    assert chunk_bounds(lengths, 3, 12) == [(0, 1), (1, 2), (2, 5), (5, 6), (6, 7), (7, 8)]


def test_token_budget_chunks_give_the_gradients_of_fixed_chunks(tiny_bert_nodrop):
    enc = Encoder.from_pretrained(tiny_bert_nodrop)
    enc.train()
    objective = InfoNCEObjective(temperature=0.05, group_size=1)
    q, p = enc.tokenize(TEXTS, is_query=True), enc.tokenize(list(reversed(TEXTS)))

    def grads(**chunks):
        enc.zero_grad(set_to_none=True)
        loss = gradcache_step(lambda f, is_query: enc(f, is_query=is_query), q, p, objective, **chunks)
        return loss, {n: t.grad.clone() for n, t in enc.named_parameters() if t.grad is not None}

    loss_ref, ref = grads(chunk_size=2)
    loss, got = grads(chunk_size=None, chunk_tokens=20)
    assert loss == pytest.approx(loss_ref.item(), abs=1e-6)
    assert ref.keys() == got.keys() and len(ref) > 10
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-6, rtol=1e-4, msg=name)


def test_gradcache_with_token_budget_trains_like_plain(tiny_bert_nodrop, tmp_path, monkeypatch):
    common = {"max_steps": 2, "optim": "sgd", "learning_rate": 1e-2}
    plain = train_run.train(config(tiny_bert_nodrop, tmp_path / "p", **common)).output_dir
    shapes = []
    original = gradcache_module.split_features

    def recording(*args, **kwargs):
        chunks = original(*args, **kwargs)
        shapes.extend(tuple(c["input_ids"].shape) for c in chunks)
        return chunks

    monkeypatch.setattr(gradcache_module, "split_features", recording)
    cached = train_run.train(config(tiny_bert_nodrop, tmp_path / "g", gradcache=True, chunk_tokens=24,
                                    **common)).output_dir
    # the trainer's GradCache ran on budget chunks: several per side, none over 24 padded tokens
    assert len(shapes) > 4 and max(rows * width for rows, width in shapes) <= 24, shapes
    a, b, base = weights(plain), weights(cached), weights(tiny_bert_nodrop)
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-3
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0, msg=key)


def test_attention_dropout_override_reaches_every_attention_module(tiny_bert):
    enc = Encoder.from_pretrained(tiny_bert)
    attention = {id(m.dropout) for m in enc.modules()
                 if type(m).__name__.endswith("Attention") and isinstance(getattr(m, "dropout", None), torch.nn.Dropout)}
    hidden = [m for m in enc.modules() if isinstance(m, torch.nn.Dropout) and id(m) not in attention]
    assert len(attention) == enc.backbone.config.num_hidden_layers and hidden
    assert set_attention_dropout(enc.towers(), 0.0) == len(attention)
    for module in hidden:  # with the hidden-state dropout off as well, training mode must give eval's vectors
        module.p = 0.0
    enc.train()
    feats = enc.tokenize(TEXTS)
    with torch.no_grad():
        torch.manual_seed(0)
        train_mode = enc(feats)
        enc.eval()
        torch.testing.assert_close(train_mode, enc(feats))


# --torch_compile training like eager mode is checked by scripts/check_torch_compile.py: compiling takes
# minutes on 2 cores, too long for the suite.


def test_torch_compile_with_lora_is_refused(tiny_bert, tmp_path):
    with pytest.raises(EmbforgeError, match="--torch_compile with --apply_lora"):
        train_run.train(config(tiny_bert, tmp_path, torch_compile=True, apply_lora=True))
