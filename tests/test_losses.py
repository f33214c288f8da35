import math

import torch

from embforge.losses.infonce import info_nce


def test_info_nce_equals_hand_computed_value():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # groups of 2: (positive, hard negative) per query
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
    t = 0.5
    # query 0 scores: [1, .6, 0, .8]/t, target 0 ; query 1: [0, .8, 1, .6]/t, target 2
    def ce(scores, target):
        scores = [s / t for s in scores]
        return -scores[target] + math.log(sum(math.exp(s) for s in scores))
    expected = (ce([1, .6, 0, .8], 0) + ce([0, .8, 1, .6], 2)) / 2
    got = info_nce(q, p, temperature=t, group_size=2)
    assert abs(got.item() - expected) < 1e-6

    own_only = (ce([1, .6], 0) + ce([1, .6], 0)) / 2  # each query against its own group
    assert abs(info_nce(q, p, temperature=t, group_size=2, in_batch=False).item() - own_only) < 1e-6

    back = (ce([1, 0], 0) + ce([0, 1], 1)) / 2  # positives against queries
    assert abs(info_nce(q, p, temperature=t, group_size=2, symmetric=True).item() - (expected + back) / 2) < 1e-6


def test_query_offset_selects_the_global_targets():
    torch.manual_seed(0)
    q = torch.randn(4, 3, dtype=torch.double)
    p = torch.randn(8, 3, dtype=torch.double)
    full = info_nce(q, p, temperature=0.1, group_size=2)
    halves = [info_nce(q[i:i + 2], p, temperature=0.1, group_size=2, query_offset=i) for i in (0, 2)]
    assert torch.allclose(full, sum(halves) / 2)


def test_info_nce_gradient_is_correct():
    torch.manual_seed(0)
    q = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    p = torch.randn(6, 4, dtype=torch.double, requires_grad=True)
    for kwargs in ({}, {"symmetric": True}, {"in_batch": False}):
        assert torch.autograd.gradcheck(
            lambda a, b, kw=kwargs: info_nce(a, b, temperature=0.3, group_size=2, **kw), (q, p))
