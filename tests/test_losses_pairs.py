"""CoSENT, cosine regression and AnglE: hand-computed values on small tensors and gradient checks."""

import cmath
import math

import torch

from embforge.losses.angle import (
    angle_loss,
    angle_objective_groups,
    angle_objective_pairs,
    complex_similarity,
    pair_in_batch_negatives,
)
from embforge.losses.cosent import cosent
from embforge.losses.cosine import cosine_regression
from embforge.losses.infonce import info_nce


def unit_pairs(thetas, scale_b=2.0):
    """a_i = (1, 0); b_i = scale * (cos t, sin t), so cos(a_i, b_i) = cos t whatever the scale."""
    a = torch.tensor([[1.0, 0.0]] * len(thetas), dtype=torch.double)
    b = torch.tensor([[scale_b * math.cos(t), scale_b * math.sin(t)] for t in thetas], dtype=torch.double)
    return a, b


def ranking(values, scores, scale):
    terms = [math.exp(scale * (values[j] - values[i])) for i in range(len(values)) for j in range(len(values))
             if scores[i] > scores[j]]
    return math.log(1 + sum(terms))


def test_cosent_equals_hand_value_and_ignores_vector_length():
    thetas, scores = [0.3, 0.2, 1.0], [0.9, 0.1, 0.5]
    a, b = unit_pairs(thetas)
    cos = [math.cos(t) for t in thetas]
    # ordered pairs (s_i > s_j): (0,1), (0,2), (2,1)
    expected = math.log(1 + math.exp(2 * (cos[1] - cos[0])) + math.exp(2 * (cos[2] - cos[0]))
                        + math.exp(2 * (cos[1] - cos[2])))
    got = cosent(a, b, torch.tensor(scores, dtype=torch.double), scale=2.0)
    assert abs(got.item() - expected) < 1e-12
    # all labels equal: no ordered pair, loss log(1) = 0
    assert cosent(a, b, torch.ones(3, dtype=torch.double)).item() == 0.0


def test_cosine_regression_is_the_mean_squared_error_of_cosines():
    thetas, targets = [0.0, math.pi / 2, math.pi / 3], [1.0, 0.5, 0.0]
    a, b = unit_pairs(thetas, scale_b=3.0)
    expected = ((1 - 1) ** 2 + (0 - 0.5) ** 2 + (0.5 - 0) ** 2) / 3
    assert abs(cosine_regression(a, b, torch.tensor(targets)).item() - expected) < 1e-12


def test_angle_value_is_re_plus_im_of_the_normalised_complex_inner_product():
    torch.manual_seed(0)
    a, b = torch.randn(3, 6, dtype=torch.double), torch.randn(3, 6, dtype=torch.double)
    for i in range(3):
        z = [complex(a[i, k].item(), a[i, k + 3].item()) for k in range(3)]
        w = [complex(b[i, k].item(), b[i, k + 3].item()) for k in range(3)]
        inner = sum(x * y.conjugate() for x, y in zip(z, w))
        inner /= math.sqrt(sum(abs(x) ** 2 for x in z)) * math.sqrt(sum(abs(y) ** 2 for y in w))
        assert abs(complex_similarity(a[i:i + 1], b[i:i + 1]).item() - (inner.real + inner.imag)) < 1e-12
        # its real part is the cosine of the full vectors
        assert abs(inner.real - torch.cosine_similarity(a[i], b[i], dim=0).item()) < 1e-12


def test_angle_loss_on_one_complex_number_per_text():
    # D = 2: z = e^{i alpha}, w = e^{i beta}; value = |cos(alpha - beta) + sin(alpha - beta)|
    alphas, betas, scores = [0.1, 1.2, -0.4], [0.5, 0.2, 0.9], [2.0, 0.0, 1.0]
    a = torch.tensor([[math.cos(x), math.sin(x)] for x in alphas], dtype=torch.double)
    b = torch.tensor([[math.cos(x), math.sin(x)] for x in betas], dtype=torch.double) * 0.5
    values = [abs((cmath.exp(1j * (x - y))).real + (cmath.exp(1j * (x - y))).imag) for x, y in zip(alphas, betas)]
    expected = ranking(values, scores, 3.0)
    assert abs(angle_loss(a, b, torch.tensor(scores, dtype=torch.double), scale=3.0).item() - expected) < 1e-12


def test_pair_in_batch_negatives_uses_only_positive_pairs_as_rows():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.double)
    b = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]], dtype=torch.double)
    positive = torch.tensor([True, False, True])
    s = 2.0

    def ce(row, target):
        return -row[target] + math.log(sum(math.exp(x) for x in row))

    sims = (a @ b.T).tolist()
    back = (b @ a.T).tolist()
    expected = (ce([s * x for x in sims[0]], 0) + ce([s * x for x in sims[2]], 2)) / 2
    expected = (expected + (ce([s * x for x in back[0]], 0) + ce([s * x for x in back[2]], 2)) / 2) / 2
    assert abs(pair_in_batch_negatives(a, b, positive, scale=s).item() - expected) < 1e-12
    assert pair_in_batch_negatives(a, b, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_angle_objective_pairs_adds_the_weighted_terms():
    torch.manual_seed(1)
    a, b = torch.randn(4, 6, dtype=torch.double), torch.randn(4, 6, dtype=torch.double)
    scores = torch.tensor([0.9, 0.2, 0.6, 0.0], dtype=torch.double)
    positive = scores > 0.5
    got = angle_objective_pairs(a, b, scores, positive, cosine_w=1.5, cosine_tau=10, ibn_w=2.0, ibn_tau=5,
                                angle_w=0.5, angle_tau=7)
    expected = (1.5 * cosent(a, b, scores, 10) + 2.0 * pair_in_batch_negatives(a, b, positive, 5)
                + 0.5 * angle_loss(a, b, scores, 7))
    assert torch.allclose(got, expected)


def test_angle_objective_groups_format_b_and_c():
    torch.manual_seed(2)
    q, p = torch.randn(2, 4, dtype=torch.double), torch.randn(4, 4, dtype=torch.double)  # groups of 2
    got = angle_objective_groups(q, p, group_size=2, ibn_w=3.0, ibn_tau=20.0, angle_w=0.5, angle_tau=20.0)
    qn, pn = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(p, dim=-1)
    ibn = info_nce(qn, pn, temperature=0.05, group_size=2)
    # format B pairs: (q0, p0)=1, (q0, p1)=0, (q1, p2)=1, (q1, p3)=0
    left = torch.stack([q[0], q[0], q[1], q[1]])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.double)
    assert torch.allclose(got, 3.0 * ibn + 0.5 * angle_loss(left, p, labels, 20.0))
    # format C (no negatives): only the in-batch term
    q1, p1 = q, p[::2]
    only = angle_objective_groups(q1, p1, group_size=1, ibn_w=1.0, ibn_tau=20.0, angle_w=5.0, angle_tau=20.0)
    assert torch.allclose(only, info_nce(qn, pn[::2], temperature=0.05, group_size=1))


def test_pair_loss_gradients():
    torch.manual_seed(3)
    a = torch.randn(5, 6, dtype=torch.double, requires_grad=True)
    b = torch.randn(5, 6, dtype=torch.double, requires_grad=True)
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3], dtype=torch.double)
    positive = scores > 0.5
    checks = [
        lambda x, y: cosent(x, y, scores, 5.0),
        lambda x, y: cosine_regression(x, y, scores),
        lambda x, y: angle_loss(x, y, scores, 5.0),
        lambda x, y: pair_in_batch_negatives(x, y, positive, 5.0),
        lambda x, y: angle_objective_pairs(x, y, scores, positive, cosine_w=1, cosine_tau=5, ibn_w=1, ibn_tau=5,
                                           angle_w=1, angle_tau=5),
    ]
    for fn in checks:
        assert torch.autograd.gradcheck(fn, (a, b))
    q = torch.randn(2, 6, dtype=torch.double, requires_grad=True)
    p = torch.randn(6, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: angle_objective_groups(x, y, group_size=3, ibn_w=1, ibn_tau=5,
                                                                        angle_w=1, angle_tau=5), (q, p))
