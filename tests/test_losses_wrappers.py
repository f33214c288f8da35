"""Matryoshka, multi-TopK, ESE and distillation: hand-computed values and gradient checks."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embforge.losses.distill import similarity_distillation
from embforge.losses.ese import ese_loss, feature_kl, pca_compress
from embforge.losses.infonce import info_nce
from embforge.losses.matryoshka import matryoshka
from embforge.losses.topk import multi_topk, topk_mask


def dot_loss(x, y):
    return -(x * y).sum()


def test_matryoshka_weights_each_renormalised_prefix():
    x = torch.tensor([[3.0, 4.0, 1.0, 0.0]], dtype=torch.double)
    y = torch.tensor([[4.0, 3.0, 0.0, 2.0]], dtype=torch.double)
    # dim 4: cosine of the full vectors; dim 2: cosine of (3,4) and (4,3) = 24/25
    full = (12 + 12) / (math.sqrt(26) * math.sqrt(29))
    expected = -(1.0 * full + 0.5 * 24 / 25)
    got = matryoshka(dot_loss, [x, y], dims=[4, 2], weights=[1.0, 0.5])
    assert abs(got.item() - expected) < 1e-12
    raw = matryoshka(dot_loss, [x, y], dims=[2], normalize=False)
    assert raw.item() == -24.0
    with pytest.raises(ValueError, match="2 dims but 1 weights"):
        matryoshka(dot_loss, [x, y], dims=[4, 2], weights=[1.0])


def test_topk_mask_by_magnitude_and_by_value():
    x = torch.tensor([[3.0, -5.0, 1.0, 2.0]])
    assert topk_mask(x, 2, "magnitude").tolist() == [[3.0, -5.0, 0.0, 0.0]]
    assert topk_mask(x, 2, "value").tolist() == [[3.0, 0.0, 0.0, 2.0]]
    with pytest.raises(ValueError, match="topk mode"):
        topk_mask(x, 2, "abs")


def test_multi_topk_sums_the_weighted_masked_losses():
    x = torch.tensor([[3.0, -5.0, 1.0, 2.0]], dtype=torch.double)
    y = torch.tensor([[1.0, 1.0, 1.0, 1.0]], dtype=torch.double)
    # k=2 by magnitude keeps (3, -5); k=4 keeps everything; the loss is minus the sum of the kept entries
    loss = multi_topk(lambda a, b: dot_loss(a, y), [x, None], [2, 4], weights=[2.0, 1.0], mode="magnitude",
                      normalize=False)
    assert loss.item() == -(2.0 * (3 - 5) + 1.0 * (3 - 5 + 1 + 2))
    normed = multi_topk(lambda a, b: dot_loss(a, y), [x, None], [2], mode="value", normalize=True)
    assert abs(normed.item() + (3 + 2) / math.sqrt(13)) < 1e-12


def test_pca_compress_matches_numpy():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(5, 6))
    gram = m.T @ m / math.sqrt(6)
    soft = np.exp(gram - gram.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    u, s, _ = np.linalg.svd(soft)
    expected = m @ (u[:, :3] * s[:3])
    got = pca_compress(torch.tensor(m), 3).numpy()
    # singular vectors are defined up to sign: compare column by column up to that sign
    for c in range(3):
        sign = np.sign(expected[0, c]) * np.sign(got[0, c])
        assert np.allclose(got[:, c] * sign, expected[:, c], atol=1e-10)


def test_feature_kl_equals_hand_value():
    student = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.double)   # softmax (1/4, 3/4)
    target = torch.tensor([[0.0, 0.0]], dtype=torch.double)             # softmax (1/2, 1/2)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert abs(feature_kl(student, target, 1.0).item() - expected) < 1e-12
    # at temperature 2 the inputs are halved and the result is multiplied by 2 (AnglE's scaling)
    p = [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]  # softmax(0, ln(3) / 2)
    expected2 = 2 * (0.5 * math.log(0.5 / p[0]) + 0.5 * math.log(0.5 / p[1]))
    assert abs(feature_kl(student, target, 2.0).item() - expected2) < 1e-12


def test_ese_loss_combines_full_compressed_and_layer_terms():
    torch.manual_seed(0)
    full = [torch.randn(4, 6, dtype=torch.double), torch.randn(4, 6, dtype=torch.double)]
    layer1 = [torch.randn(4, 6, dtype=torch.double), torch.randn(4, 6, dtype=torch.double)]
    layer3 = [torch.randn(4, 6, dtype=torch.double), torch.randn(4, 6, dtype=torch.double)]
    k, t = 2, 0.5

    def fn(x, y):
        return -(F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(dim=-1).mean()

    def compressed(embs):
        cut = [F.normalize(e[:, :k], dim=-1) for e in embs]
        return fn(*cut) + sum(feature_kl(e[:, :k], pca_compress(e, k), t) for e in embs)

    expected = fn(*full) + compressed(full) + (compressed(layer1) / (1 + math.log(1))
                                               + compressed(layer3) / (1 + math.log(3))) / 2
    got = ese_loss(fn, full, [(1, layer1), (3, layer3)], compression_size=k, kl_temperature=t)
    assert torch.allclose(got, expected)
    assert torch.allclose(ese_loss(fn, full, [], k, t), fn(*full) + compressed(full))


def test_ese_gradient_treats_the_pca_target_as_a_constant():
    torch.manual_seed(1)
    x = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    target = pca_compress(x.detach(), 2)
    ese_loss(lambda e: e.pow(2).sum(), [x], [], compression_size=2, kl_temperature=1.0, normalize=False).backward()
    y = x.detach().clone().requires_grad_(True)
    (y.pow(2).sum() + y[:, :2].pow(2).sum() + feature_kl(y[:, :2], target, 1.0)).backward()
    assert torch.allclose(x.grad, y.grad)
    assert torch.autograd.gradcheck(lambda s: feature_kl(s, target, 0.7), (x[:, :2].detach().requires_grad_(True),))


def test_similarity_distillation_equals_hand_kl():
    sq = torch.tensor([[1.0, 0.0]], dtype=torch.double)
    sp = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.double)       # student cosines (1, 0)
    tq = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.double)
    tp = torch.tensor([[0.6, 0.8, 0.0], [0.6, 0.0, 0.8]], dtype=torch.double)  # teacher cosines (0.6, 0.6)
    t = 0.5
    ps = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    expected = 0.5 * math.log(0.5 / ps[0]) + 0.5 * math.log(0.5 / ps[1])
    assert abs(similarity_distillation(sq, sp, tq, tp, t).item() - expected) < 1e-12
    assert similarity_distillation(sq, sp, sq, sp, t).item() < 1e-15  # own teacher at the start: zero


def test_wrapper_gradients():
    torch.manual_seed(2)
    q = torch.randn(3, 8, dtype=torch.double, requires_grad=True)
    p = torch.randn(6, 8, dtype=torch.double, requires_grad=True)

    def nce(a, b):
        return info_nce(a, b, temperature=0.5, group_size=2)

    assert torch.autograd.gradcheck(lambda a, b: matryoshka(nce, [a, b], [8, 4, 2], [1.0, 0.5, 0.25]), (q, p))
    assert torch.autograd.gradcheck(lambda a, b: multi_topk(nce, [a, b], [2, 5], [1.0, 2.0], "magnitude"), (q, p))
    tq, tp = torch.randn(3, 5, dtype=torch.double), torch.randn(6, 5, dtype=torch.double)
    assert torch.autograd.gradcheck(lambda a, b: similarity_distillation(a, b, tq, tp, 0.3), (q, p))
