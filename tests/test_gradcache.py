import pytest
import torch

from embforge import Encoder
from embforge.training.gradcache import gradcache_step
from embforge.training.objective import ContrastiveObjective

QUERIES = ["the cat sleeps", "a dog runs on the road", "science study", "big red car", "one two", "a bird eats"]
PASSAGES = [w for q in QUERIES for w in (q + " in the house", "the old man and the " + q.split()[-1])]


def grads_after(encoder, step):
    encoder.zero_grad(set_to_none=True)
    step()
    return {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("chunk", [1, 4])
def test_gradcache_gradients_equal_plain_training(tiny_bert_nodrop, checkpointing, chunk):
    enc = Encoder.from_pretrained(tiny_bert_nodrop)
    enc.train()
    if checkpointing:
        enc.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    objective = ContrastiveObjective(temperature=0.05, group_size=2, symmetric=True)
    q_feat, p_feat = enc.tokenize(QUERIES, is_query=True), enc.tokenize(PASSAGES)

    def plain():
        objective(enc(q_feat, is_query=True), enc(p_feat)).backward()

    def cached():
        gradcache_step(lambda f, is_query: enc(f, is_query=is_query), q_feat, p_feat, objective, chunk)

    ref, got = grads_after(enc, plain), grads_after(enc, cached)
    assert ref.keys() == got.keys() and len(ref) > 10
    for name in ref:
        assert torch.allclose(ref[name], got[name], atol=1e-5, rtol=1e-4), name
    assert max(g.abs().max().item() for g in ref.values()) > 1e-3  # not trivially zero


def test_gradcache_replays_dropout_masks(tiny_bert):
    """With one chunk per side the re-forward must draw the masks the plain step drew, from the same seed."""
    enc = Encoder.from_pretrained(tiny_bert)  # dropout 0.1
    enc.train()
    objective = ContrastiveObjective(temperature=0.05, group_size=2)
    q_feat, p_feat = enc.tokenize(QUERIES, is_query=True), enc.tokenize(PASSAGES)

    def plain():
        torch.manual_seed(3)
        objective(enc(q_feat, is_query=True), enc(p_feat)).backward()

    def cached():
        torch.manual_seed(3)
        gradcache_step(lambda f, is_query: enc(f, is_query=is_query), q_feat, p_feat, objective, 64)

    ref, got = grads_after(enc, plain), grads_after(enc, cached)
    for name in ref:
        assert torch.allclose(ref[name], got[name], atol=1e-5, rtol=1e-4), name
