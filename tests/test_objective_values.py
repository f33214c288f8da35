"""The objective training builds from a Config, on fixed embeddings, against losses written out by hand.

test_losses_wrappers.py checks the wrapper functions; these check the wiring from the train flags to
them (``resolve`` -> ``check_model_dims`` -> ``build_objective``, as ``train`` runs them), so a dim, a k,
a weight, the ESE layers or the teacher term lost on the way changes the value and fails here.
"""

import math

import pytest
import torch

from embforge.commands.train import Config
from embforge.config import from_dict
from embforge.losses.angle import angle_objective_groups
from embforge.losses.ese import pca_compress
from embforge.training.objective import Objective
from embforge.training.recipes import check_model_dims, resolve
from embforge.training.run import build_objective

TEMP = 0.5


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


# Two queries, four passages in groups of two (positive first), width 6; unit rows as the encoder gives.
Q = unit(torch.tensor([[0.9, -0.2, 0.4, 0.1, -0.5, 0.3],
                       [-0.3, 0.8, 0.2, -0.6, 0.1, 0.4]], dtype=torch.double))
P = unit(torch.tensor([[0.7, -0.1, 0.5, 0.2, -0.3, 0.1],
                       [0.2, 0.6, -0.4, 0.3, 0.5, -0.2],
                       [-0.2, 0.9, 0.1, -0.4, 0.3, 0.2],
                       [0.5, -0.3, -0.6, 0.4, 0.1, 0.7]], dtype=torch.double))


def assert_value(got, expected):
    assert float(got) == pytest.approx(float(expected), rel=0, abs=1e-12)


def nce(q, p, t=TEMP, g=2):
    """InfoNCE by hand: minus the mean log-softmax of each query's positive among all passages."""
    rows = torch.arange(q.shape[0])
    return -(q @ p.T / t).log_softmax(dim=-1)[rows, rows * g].mean()


def objective(tmp_path, width, *, ese_layers=(), teacher=False, pairs=False, **flags):
    cfg = from_dict(Config, {"output_dir": str(tmp_path), "report_to": "none", "use_cpu": True,
                             "temperature": TEMP, "train_group_size": 1 if pairs else 2, **flags})
    cfg = resolve(cfg)
    cfg = check_model_dims(cfg, width)
    obj = build_objective(cfg, list(ese_layers), with_teacher=teacher, pairs=pairs)
    assert isinstance(obj, Objective)
    return obj


def test_matryoshka_sums_each_weighted_renormalised_prefix(tmp_path):
    got = objective(tmp_path, 6, mrl_dims="6,4,2", mrl_weights="1,0.5,0.25")(Q, P)
    expected = sum(w * nce(unit(Q[:, :d]), unit(P[:, :d])) for d, w in ((6, 1.0), (4, 0.5), (2, 0.25)))
    assert_value(got, expected)
    # --recipe mrl: "auto" dims are the model's width and every ladder size below it, here 64 and 32
    g = torch.Generator().manual_seed(0)
    q, p = unit(torch.randn(2, 64, generator=g, dtype=torch.double)), unit(torch.randn(4, 64, generator=g,
                                                                                       dtype=torch.double))
    got = objective(tmp_path, 64, recipe="mrl")(q, p)
    assert_value(got, nce(q, p) + nce(unit(q[:, :32]), unit(p[:, :32])))


def keep_largest(x, k):
    """The k largest values of each row (not magnitudes: --topk_mode value), the rest zero."""
    return x * (x >= x.sort(dim=-1, descending=True).values[:, k - 1:k])


def test_multi_topk_adds_each_weighted_masked_term(tmp_path):
    # Q and P hold negatives larger in magnitude than kept positives, so magnitude and value masks differ.
    got = objective(tmp_path, 6, topk_k_list="2,4", topk_weights="2,0.5", topk_mode="value")(Q, P)
    expected = nce(Q, P) + sum(w * nce(unit(keep_largest(Q, k)), unit(keep_largest(P, k)))
                               for k, w in ((2, 2.0), (4, 0.5)))
    assert_value(got, expected)


def test_loss_weights_weigh_each_loss(tmp_path):
    a = unit(torch.tensor([[1.0, 0.2, -0.3, 0.5], [0.1, 1.0, 0.4, -0.2], [-0.5, 0.3, 1.0, 0.2]],
                          dtype=torch.double))
    b = unit(torch.tensor([[0.8, 0.1, -0.1, 0.6], [0.6, 0.2, 0.9, 0.1], [-0.4, 0.7, 0.6, -0.3]],
                          dtype=torch.double))
    scores = torch.tensor([0.9, 0.2, 0.6], dtype=torch.double)
    got = objective(tmp_path, 4, pairs=True, loss="cosent,cosine", loss_weights="0.25,3")(a, b, scores=scores)
    cos = (a * b).sum(dim=-1)
    ranked = [math.exp(20 * (cos[j] - cos[i])) for i in range(3) for j in range(3) if scores[i] > scores[j]]
    cosent = math.log(1 + sum(ranked))
    regression = ((cos - scores) ** 2).mean()
    assert_value(got, 0.25 * cosent + 3.0 * regression)
    # groups: InfoNCE and AnglE (ibn 20 at scale 20 + angle 1 at scale 20, the defaults) weighted apart
    got = objective(tmp_path, 6, loss="infonce,angle", loss_weights="0.5,2")(Q, P)
    angle = angle_objective_groups(Q, P, group_size=2, ibn_w=20.0, ibn_tau=20.0, angle_w=1.0, angle_tau=20.0)
    assert_value(got, 0.5 * nce(Q, P) + 2.0 * angle)


def feature_kl(x, target, t):
    """t * KL(softmax(target / t) || softmax(x / t)) over features, mean over rows (AnglE's scaling)."""
    q = (target / t).softmax(dim=-1)
    return t * (q * (q.log() - (x / t).log_softmax(dim=-1))).sum() / x.shape[0]


def test_ese_adds_compressed_prefix_and_layer_terms(tmp_path):
    # The encoder packs [last layer | layer 1 | layer 2] side by side (train's ese_layers for 3 layers).
    layers = {0: (Q, P), 1: (Q.flip(-1), P.roll(1, dims=-1)), 2: (Q.roll(2, dims=-1), P.flip(-1))}
    q = torch.cat([layers[i][0] for i in range(3)], dim=-1)
    p = torch.cat([layers[i][1] for i in range(3)], dim=-1)
    k, t = 2, 0.5
    got = objective(tmp_path, 6, apply_ese=True, ese_compression_size=k, ese_kl_temperature=t,
                    ese_layers=[1, 2])(q, p)

    def compressed(x, y):
        return nce(unit(x[:, :k]), unit(y[:, :k])) + sum(feature_kl(e[:, :k], pca_compress(e, k), t) for e in (x, y))

    expected = (nce(Q, P) + compressed(Q, P)
                + (compressed(*layers[1]) / (1 + math.log(1)) + compressed(*layers[2]) / (1 + math.log(2))) / 2)
    assert_value(got, expected)


def test_distillation_adds_weighted_teacher_kl(tmp_path):
    tq = torch.tensor([[1.0, 0.2, 0.0], [0.1, 0.9, 0.3]], dtype=torch.double)   # another width than the student
    tp = torch.tensor([[0.9, 0.3, 0.1], [0.2, 0.1, 1.0], [0.0, 1.0, 0.4], [0.6, 0.5, 0.2]], dtype=torch.double)
    w, t = 0.7, 0.25
    got = objective(tmp_path, 6, teacher=True, distill_w=w, distill_temperature=t)(Q, P, teacher=(tq, tp))
    target = (unit(tq) @ unit(tp).T / t).softmax(dim=-1)
    kl = (target * (target.log() - (Q @ P.T / t).log_softmax(dim=-1))).sum() / 2
    assert_value(got, nce(Q, P) + w * kl)
    assert kl > 0.05  # the teacher term is large enough for a dropped weight to show

