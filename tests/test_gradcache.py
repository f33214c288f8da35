import pytest
import torch

from embforge import Encoder
from embforge.training.gradcache import gradcache_step
from embforge.training.objective import InfoNCEObjective, Objective

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
    objective = InfoNCEObjective(temperature=0.05, group_size=2, symmetric=True)
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


@pytest.mark.parametrize("mode", ["kd", "margin_mse"])
def test_gradcache_gradients_equal_plain_training_with_teacher_scores(tiny_bert_nodrop, mode):
    """The data's teacher-score term (with Matryoshka and InfoNCE beside it) through GradCache: the same
    weight gradients as the plain step, and different ones when the teacher scores change."""
    enc = Encoder.from_pretrained(tiny_bert_nodrop)
    enc.train()
    objective = Objective(temperature=0.05, group_size=2, losses={"infonce": 1.0}, mrl_dims=[32, 16],
                          score_loss=mode, kd_weight=2.0, kd_temperature=0.5)
    scores = torch.tensor([[3.0, 1.0], [0.5, 2.0], [1.0, 1.5], [4.0, -1.0], [0.0, 0.2], [2.0, 2.0]])
    q_feat, p_feat = enc.tokenize(QUERIES, is_query=True), enc.tokenize(PASSAGES)

    def plain(teacher):
        objective(enc(q_feat, is_query=True), enc(p_feat), teacher_scores=teacher).backward()

    def cached():
        gradcache_step(lambda f, is_query: enc(f, is_query=is_query), q_feat, p_feat,
                       lambda q, p: objective(q, p, teacher_scores=scores), 4)

    ref, got = grads_after(enc, lambda: plain(scores)), grads_after(enc, cached)
    other = grads_after(enc, lambda: plain(scores.flip(-1)))
    assert ref.keys() == got.keys() and len(ref) > 10
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
    assert max((ref[n] - other[n]).abs().max().item() for n in ref) > 1e-3


def test_gradcache_replays_dropout_masks(tiny_bert):
    """Dropout on, chunks of 2: 3 query and 6 passage chunks, each drawing its own masks. The reference embeds
    the same chunks in the same order from the same seed, with the graph kept, so it draws the masks of
    GradCache's first pass; the re-forward of every chunk must draw them again."""
    enc = Encoder.from_pretrained(tiny_bert)  # dropout 0.1
    enc.train()
    objective = InfoNCEObjective(temperature=0.05, group_size=2)
    q_feat, p_feat = enc.tokenize(QUERIES, is_query=True), enc.tokenize(PASSAGES)
    q_chunks = [enc.tokenize(QUERIES[i:i + 2], is_query=True) for i in range(0, len(QUERIES), 2)]
    p_chunks = [enc.tokenize(PASSAGES[i:i + 2]) for i in range(0, len(PASSAGES), 2)]

    def plain(seed):
        torch.manual_seed(seed)
        q = torch.cat([enc(f, is_query=True) for f in q_chunks])
        objective(q, torch.cat([enc(f) for f in p_chunks])).backward()

    def cached():
        torch.manual_seed(3)
        gradcache_step(lambda f, is_query: enc(f, is_query=is_query), q_feat, p_feat, objective, 2)

    ref, got, other = grads_after(enc, lambda: plain(3)), grads_after(enc, cached), grads_after(enc, lambda: plain(4))
    assert ref.keys() == got.keys() and len(ref) > 10
    assert not all(torch.allclose(ref[n], other[n], atol=1e-5, rtol=1e-4) for n in ref)  # the masks matter
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
