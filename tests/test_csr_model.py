"""CSR model and losses: TopK codes, decoder init, AuxK revival, annealing, label-contrastive term."""

import math

import numpy as np
import pytest
import torch

from embforge.csr import losses
from embforge.csr.config import TrainConfig
from embforge.csr.model import CSRModel, CSRSettings, top_k
from embforge.csr.schedule import k_at
from embforge.csr.sparse import SparseCodes, encode_dense
from embforge.csr.training import step_losses
from embforge.errors import EmbforgeError


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_codes_have_exactly_k_nonzeros_at_the_top_k_positions():
    torch.manual_seed(0)
    model = CSRModel(CSRSettings(embed_dim=16, hidden_size=64, topk=5))
    with torch.no_grad():
        model.latent_bias.fill_(10.0)  # every pre-activation positive, so ReLU zeroes none of the k
    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    codes = encode_dense(model, x, batch_size=7)
    dense = codes.dense()
    assert codes.indices.shape == codes.values.shape == (50, 5)
    assert ((dense != 0).sum(axis=1) == 5).all()
    pre = (x - model.pre_bias.detach().numpy()) @ model.encoder.weight.detach().numpy().T + 10.0
    expected = np.sort(np.argsort(-pre, axis=1)[:, :5], axis=1)
    np.testing.assert_array_equal(np.sort(codes.indices, axis=1), expected)
    np.testing.assert_allclose(dense[np.arange(50)[:, None], expected], np.take_along_axis(pre, expected, 1),
                               rtol=1e-5, atol=1e-5)
    # a smaller k at encode time gives exactly that many
    assert ((encode_dense(model, x, k=3).dense() != 0).sum(axis=1) == 3).all()


def test_relu_after_topk_zeroes_negative_selected_latents():
    codes = top_k(torch.tensor([[3.0, -1.0, -2.0, 0.5]]), 3)
    assert codes.values.tolist() == [[3.0, 0.5, 0.0]]
    assert SparseCodes(codes.indices.numpy(), codes.values.numpy(), 4).to_scipy().nnz == 2


def test_decoder_starts_as_unit_norm_transposed_encoder_and_sparse_decode_matches_dense():
    torch.manual_seed(1)
    model = CSRModel(CSRSettings(embed_dim=8, hidden_size=24, topk=4))
    w_enc = model.encoder.weight.detach()
    w_dec = model.decoder.weight.detach()
    np.testing.assert_allclose(w_dec.norm(dim=0).numpy(), np.ones(24), rtol=1e-6)
    np.testing.assert_allclose((w_dec * w_enc.norm(dim=1)).numpy(), w_enc.T.numpy(), rtol=1e-5, atol=1e-7)
    x = torch.randn(5, 8)
    codes = model.encode(x)
    dense_recon = codes.dense(24) @ w_dec.T + model.pre_bias
    torch.testing.assert_close(model.decode(codes), dense_recon)


def test_config_errors_before_training():
    with pytest.raises(EmbforgeError, match="topk must be between 1 and hidden_size"):
        CSRSettings(embed_dim=8, hidden_size=16, topk=17)


def _crafted(auxk_coef: float, steps: int = 30):
    """Two clusters on e0 and e1; latent 0 (decoder e0) always wins top-1, latent 1 (decoder e1) never."""
    model = CSRModel(CSRSettings(embed_dim=4, hidden_size=8, topk=1, auxk=4, dead_threshold=2))
    with torch.no_grad():
        model.encoder.weight.zero_()
        model.latent_bias.fill_(-1.0)
        model.encoder.weight[0, 0], model.latent_bias[0] = 1.0, 1.0
        model.encoder.weight[1, 1], model.latent_bias[1] = 0.1, 0.0
        model.decoder.weight.zero_()
        for j in range(8):
            model.decoder.weight[j % 4, j] = 1.0
    x = torch.zeros(8, 4)
    x[:4, 0], x[4:, 1] = 3.0, 3.0
    cfg = TrainConfig(topk=1, auxk=4, auxk_coef=auxk_coef, multi_k=1, multi_k_coef=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    aux_values = []
    for _ in range(steps):
        parts = step_losses(model, x, 1, cfg)
        aux_values.append(float(parts.get("auxk", torch.zeros(())).detach()))
        opt.zero_grad()
        parts["total"].backward()
        opt.step()
        model.normalize_decoder()
    with torch.no_grad():
        codes = model.encode(x, 1)
    fired_on_b = int(((codes.indices[4:] == 1) & (codes.values[4:] > 0)).sum())
    return model, fired_on_b, aux_values


def test_auxk_revives_a_dead_latent_that_plain_training_leaves_dead():
    without, fired_without, _ = _crafted(auxk_coef=0.0)
    assert fired_without == 0
    assert int(without.steps_since_active[1]) == 30  # never active in 30 steps: dead all along
    with_aux, fired_with, aux_values = _crafted(auxk_coef=1 / 32)
    assert fired_with == 4  # latent 1 now codes every point of its cluster
    assert int(with_aux.steps_since_active[1]) == 0
    assert aux_values[0] == 0.0 and max(aux_values) > 0  # AuxK is 0 until latents count as dead


def test_auxk_gradient_reaches_only_dead_latents():
    model = CSRModel(CSRSettings(embed_dim=4, hidden_size=8, topk=2, auxk=3, dead_threshold=0))
    with torch.no_grad():
        model.steps_since_active.copy_(torch.tensor([0, 0, 0, 0, 5, 5, 5, 5]))
        model.latent_bias.copy_(torch.tensor([5.0, 5.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0]))
    x = torch.randn(6, 4)
    pre = model.pre_activation(x)
    recon = model.decode(top_k(pre, 2)).detach()
    aux = model.auxk_codes(pre)
    assert aux is not None and set(aux.indices.unique().tolist()) <= {4, 5, 6, 7}
    losses.auxk(x - recon, model.decode_residual(aux)).backward()
    grad = model.latent_bias.grad
    assert torch.all(grad[:4] == 0) and torch.any(grad[4:] != 0)


def test_k_annealing_schedule_values():
    # linear from 64 to 32 over the first half of 100 steps, then 32
    assert [k_at(s, 100, 32, 64, 0.5) for s in (0, 10, 25, 40, 49, 50, 99)] == [64, 58, 48, 38, 33, 32, 32]
    assert k_at(0, 100, 32, None, 0.5) == 32
    assert k_at(0, 100, 32, 64, 0.0) == 32
    assert [k_at(s, 10, 8, 16, 1.0) for s in range(10)] == [16, 15, 14, 14, 13, 12, 11, 10, 10, 9]


def test_label_contrastive_by_hand_and_labels_matter():
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], requires_grad=True)
    t = 0.5
    labels = torch.tensor([0, 0, 1])
    u = torch.nn.functional.normalize(z.detach(), dim=1)
    s = (u @ u.T / t).numpy()
    # anchors 0 and 1 have one positive each (each other); anchor 2 has none and is skipped
    l0 = -(s[0, 1] - math.log(math.exp(s[0, 1]) + math.exp(s[0, 2])))
    l1 = -(s[1, 0] - math.log(math.exp(s[1, 0]) + math.exp(s[1, 2])))
    value = losses.label_contrastive(z, labels, t)
    assert value.item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    value.backward()
    g1 = z.grad.clone()
    z.grad = None
    other = losses.label_contrastive(z, torch.tensor([0, 1, 0]), t)
    other.backward()
    assert other.item() != pytest.approx(value.item())
    assert not torch.allclose(g1, z.grad)
    assert losses.label_contrastive(z, torch.tensor([0, 1, 2]), t).item() == 0.0  # no positives anywhere


def test_label_cl_term_in_a_training_step_follows_the_labels():
    torch.manual_seed(0)
    model = CSRModel(CSRSettings(embed_dim=8, hidden_size=32, topk=4))
    x = torch.randn(12, 8)
    cfg = TrainConfig(topk=4, use_label_CL=True, auxk=0)
    a = step_losses(model, x, 4, cfg, labels=torch.arange(12) % 2, update_dead=False)
    b = step_losses(model, x, 4, cfg, labels=torch.arange(12) % 3, update_dead=False)
    assert a["recon_k"].item() == pytest.approx(b["recon_k"].item())
    assert a["label_cl"].item() != pytest.approx(b["label_cl"].item())
    ga = torch.autograd.grad(a["total"], model.encoder.weight)[0]
    gb = torch.autograd.grad(b["total"], model.encoder.weight)[0]
    assert not torch.allclose(ga, gb)


def test_contrastive_terms():
    a = torch.eye(4)
    # perfectly matched pairs at low temperature: InfoNCE near 0; shuffled pairs: large
    assert losses.pair_contrastive(a, a, 0.05).item() < 1e-6
    assert losses.pair_contrastive(a, a.flip(0), 0.05).item() > 10
    # two identical views of orthogonal codes: positive sim 1, negatives 0
    t = 0.2
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 6 * math.exp(0)))
    assert losses.two_view_contrastive(a, a, t).item() == pytest.approx(expected, rel=1e-5)
