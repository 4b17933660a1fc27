"""Hand-checkable truths for rpbt.agent.distributional."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rpbt.agent.distributional import (
    ReturnNormalizer,
    categorical_cross_entropy,
    categorical_cvar,
    categorical_mean,
    empirical_cvar,
    quantile_cvar,
    quantile_fractions,
    quantile_huber_loss,
    two_hot,
)

# --------------------------------------------------------------------------------------------------- quantiles


def test_quantile_fractions_midpoints():
    torch.testing.assert_close(quantile_fractions(4), torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert quantile_fractions(1).tolist() == [0.5]
    with pytest.raises(ValueError):
        quantile_fractions(0)


def test_quantile_huber_loss_hand_values():
    # N = 2 quantiles (tau = 0.25, 0.75) at 0, one target at 3, kappa = 1: u = 3 > kappa for both,
    # L = 1 * (3 - 0.5) = 2.5, weights 0.25 and 0.75 -> 0.25 * 2.5 + 0.75 * 2.5 = 2.5
    q = torch.zeros(2)
    assert quantile_huber_loss(q, torch.tensor(3.0)).item() == pytest.approx(2.5)
    # target at -0.5 (inside the quadratic zone): L = 0.125, weights |0.25 - 1| = 0.75 and |0.75 - 1| = 0.25 -> 0.125
    assert quantile_huber_loss(q, torch.tensor(-0.5)).item() == pytest.approx(0.125)
    # M = 2 target samples are averaged: (2.5 + 0.125) / 2
    assert quantile_huber_loss(q, torch.tensor([3.0, -0.5])).item() == pytest.approx((2.5 + 0.125) / 2)
    # kappa divides: kappa = 2, u = 3: L = 2 * (3 - 1) = 4, / 2 = 2 per quantile, weights sum to 1
    assert quantile_huber_loss(q, torch.tensor(3.0), kappa=2.0).item() == pytest.approx(2.0)


def test_quantile_huber_loss_shapes_and_gradient_to_targets():
    q = torch.randn(3, 5, 8, requires_grad=True)
    t = torch.randn(3, 5, requires_grad=True)
    loss = quantile_huber_loss(q, t)
    assert loss.shape == (3, 5)
    loss.sum().backward()
    assert t.grad is not None  # not detached inside: the caller detaches
    assert quantile_huber_loss(q, torch.randn(3, 5, 4)).shape == (3, 5)
    with pytest.raises(ValueError):
        quantile_huber_loss(q, torch.randn(2, 5))
    with pytest.raises(ValueError):
        quantile_huber_loss(q, t, kappa=0.0)


def _fit_quantiles(n: int, kappa: float) -> torch.Tensor:
    torch.manual_seed(0)
    theta = torch.zeros(n, requires_grad=True)  # a free quantile head
    opt = torch.optim.Adam([theta], lr=0.05)
    for step in range(600):
        if step == 400:
            for g in opt.param_groups:
                g["lr"] = 0.01
        loss = quantile_huber_loss(theta, torch.randn(1024), kappa=kappa)  # targets: samples of N(0, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return theta.detach()


def test_quantile_regression_recovers_normal_quantiles():
    # kappa small relative to the spread of the targets: the loss is the pinball loss, whose minimizer is the quantile
    n = 8
    theta = _fit_quantiles(n, kappa=0.01)
    truth = torch.distributions.Normal(0.0, 1.0).icdf(quantile_fractions(n))
    assert (theta - truth).abs().max().item() < 0.05, (theta, truth)


def _huber_quantile(tau: float, kappa: float) -> float:
    """Root of the expected gradient of rho_tau^kappa under N(0, 1), by bisection on a numeric integral."""
    x = np.linspace(-9.0, 9.0, 200_001)
    pdf = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    dx = x[1] - x[0]

    def grad(theta: float) -> float:
        u = x - theta
        return float((np.where(u > 0, tau, 1.0 - tau) * np.clip(u, -kappa, kappa) * pdf).sum() * dx)

    lo, hi = -5.0, 5.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if grad(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def test_quantile_huber_minimizer_is_shrunk_towards_the_centre_for_large_kappa():
    # documented property: with kappa = 1 on N(0, 1) targets the fixed point is not the quantile but the
    # "Huber quantile", between the quantile and the expectile
    n = 8
    theta = _fit_quantiles(n, kappa=1.0)
    taus = quantile_fractions(n).tolist()
    expected = torch.tensor([_huber_quantile(t, 1.0) for t in taus])
    assert (theta - expected).abs().max().item() < 0.05, (theta, expected)
    truth = torch.distributions.Normal(0.0, 1.0).icdf(quantile_fractions(n))
    assert expected[0] > truth[0] + 0.2 and expected[-1] < truth[-1] - 0.2


# --------------------------------------------------------------------------------------------------- two-hot


def test_two_hot_preserves_mean_and_sums_to_one():
    support = torch.linspace(-10.0, 10.0, 51)
    targets = torch.tensor([-10.0, -9.93, -3.3, 0.0, 0.2, 1.23456, 9.99, 10.0, -10.0 + 1e-6])
    probs = two_hot(targets, support)
    assert probs.shape == (targets.shape[0], 51)
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(targets.shape[0]))
    torch.testing.assert_close((probs * support).sum(-1), targets, atol=1e-5, rtol=0)
    assert (probs > 0).sum(-1).max().item() <= 2
    # hand case: 0.2 between atoms 0.0 (index 25) and 0.4 (index 26): half / half
    torch.testing.assert_close(probs[4, 25:27], torch.tensor([0.5, 0.5]))


def test_two_hot_clips_outside_support_to_edge_atom():
    support = torch.linspace(-1.0, 1.0, 5)
    probs = two_hot(torch.tensor([[-7.0, 3.0], [1.0, -1.0]]), support)
    assert probs.shape == (2, 2, 5)
    expected = torch.tensor(
        [[[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0]], [[0, 0, 0, 0, 1.0], [1.0, 0, 0, 0, 0]]]
    )
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2))


def test_two_hot_random_targets_float64_exact_mean():
    g = torch.Generator().manual_seed(1)
    support = torch.linspace(-5.0, 5.0, 21, dtype=torch.float64)
    targets = torch.rand(4, 7, 3, generator=g, dtype=torch.float64) * 10 - 5
    probs = two_hot(targets, support)
    torch.testing.assert_close((probs * support).sum(-1), targets, atol=1e-12, rtol=0)
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(targets), atol=1e-12, rtol=0)


def test_categorical_cross_entropy_and_mean():
    support = torch.tensor([-1.0, 0.0, 1.0])
    logits = torch.log(torch.tensor([0.2, 0.3, 0.5]))
    target = torch.tensor([0.0, 0.5, 0.5])
    ce = categorical_cross_entropy(logits, target)
    assert ce.item() == pytest.approx(-(0.5 * math.log(0.3) + 0.5 * math.log(0.5)), rel=1e-6)
    assert categorical_mean(logits, support).item() == pytest.approx(0.3, abs=1e-6)
    with pytest.raises(ValueError):
        categorical_cross_entropy(logits, target[:2])


# --------------------------------------------------------------------------------------------------- CVaR


def test_categorical_cvar_hand_computed():
    support = torch.tensor([-10.0, 0.0, 10.0])
    probs = torch.tensor([0.1, 0.3, 0.6])
    assert categorical_cvar(probs, support, 0.05).item() == pytest.approx(-10.0)
    assert categorical_cvar(probs, support, 0.1).item() == pytest.approx(-10.0)
    assert categorical_cvar(probs, support, 0.2).item() == pytest.approx(-5.0)
    assert categorical_cvar(probs, support, 0.4).item() == pytest.approx(-2.5)
    # alpha = 1 is the mean: -1 + 0 + 6 = 5
    assert categorical_cvar(probs, support, 1.0).item() == pytest.approx(5.0, abs=1e-5)
    batch = torch.stack([probs, torch.tensor([0.0, 0.0, 1.0])])
    torch.testing.assert_close(categorical_cvar(batch, support, 0.2), torch.tensor([-5.0, 10.0]))
    with pytest.raises(ValueError):
        categorical_cvar(probs, support, 0.0)
    with pytest.raises(ValueError):
        categorical_cvar(probs, support, 1.5)


def test_quantile_cvar_hand_computed():
    q = torch.tensor([2.0, -4.0, 0.0, -2.0])  # unsorted on purpose; each atom has mass 1/4
    assert quantile_cvar(q, 0.25).item() == pytest.approx(-4.0)
    assert quantile_cvar(q, 0.5).item() == pytest.approx(-3.0)
    assert quantile_cvar(q, 0.375).item() == pytest.approx((0.25 * -4 + 0.125 * -2) / 0.375)
    assert quantile_cvar(q, 0.1).item() == pytest.approx(-4.0)
    assert quantile_cvar(q, 1.0).item() == pytest.approx(-1.0)
    assert quantile_cvar(torch.zeros(3, 2, 4), 0.3).shape == (3, 2)


def test_empirical_cvar_hand_computed():
    returns = [5.0, 1.0, 3.0, 2.0]
    assert empirical_cvar(returns, 0.5) == pytest.approx(1.5)
    assert empirical_cvar(returns, 0.25) == pytest.approx(1.0)
    assert empirical_cvar(returns, 0.375) == pytest.approx((1.0 + 0.5 * 2.0) / 1.5)
    assert empirical_cvar(returns, 1.0) == pytest.approx(2.75)
    assert empirical_cvar(torch.tensor(returns), 0.5) == pytest.approx(1.5)
    # 20 episodes, alpha 0.1: the mean of the 2 worst
    twenty = list(range(20, 0, -1))
    assert empirical_cvar(twenty, 0.1) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        empirical_cvar([], 0.1)
    with pytest.raises(ValueError):
        empirical_cvar(returns, 0.0)


# --------------------------------------------------------------------------------------------------- normalizer


def test_return_normalizer_merged_statistics_match_numpy():
    rng = np.random.default_rng(0)
    norm = ReturnNormalizer(num_members=3)
    loc, scale = [[1.0], [-5.0], [20.0]], [[1.0], [3.0], [0.5]]
    batches = [rng.normal(loc=loc, scale=scale, size=(3, n)) for n in (7, 50, 1, 13)]
    for b in batches:
        norm.update(torch.tensor(b, dtype=torch.float32).reshape(3, -1, 1))
    all_ = np.concatenate(batches, axis=1)
    np.testing.assert_allclose(norm.mean.numpy(), all_.mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.var.numpy(), all_.var(axis=1), rtol=1e-5)
    np.testing.assert_allclose(norm.count.numpy(), [all_.shape[1]] * 3)
    np.testing.assert_allclose(norm.scale.numpy(), np.sqrt((all_**2).mean(axis=1)), rtol=1e-5)  # RMS


def test_return_normalizer_mask_and_identity_before_update():
    norm = ReturnNormalizer(2)
    torch.testing.assert_close(norm.scale, torch.ones(2))
    x = torch.tensor([[1.0, 3.0, 100.0], [2.0, 2.0, 2.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    norm.update(x, mask)
    torch.testing.assert_close(norm.mean, torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(norm.var, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(norm.count, torch.tensor([2.0, 0.0]))


def test_return_normalizer_scale_floor_and_round_trip():
    norm = ReturnNormalizer(2, epsilon=1e-2)
    norm.update(torch.tensor([[0.0, 0.0, 0.0], [0.0, 4.0, 8.0]]))
    # member 0: all zero -> floor; member 1: RMS = sqrt((0 + 16 + 64) / 3) = sqrt(80 / 3)
    torch.testing.assert_close(norm.scale, torch.tensor([1e-2, math.sqrt(80 / 3)]))
    y = torch.randn(2, 5, 4)
    torch.testing.assert_close(norm.normalize(norm.denormalize(y)), y)
    torch.testing.assert_close(norm.denormalize(norm.normalize(y)), y)
    expected = torch.tensor([[600.0], [6 / math.sqrt(80 / 3)]])
    torch.testing.assert_close(norm.normalize(torch.full((2, 1), 6.0)), expected)
    with pytest.raises(ValueError):
        norm.normalize(torch.zeros(3, 1))


def test_return_normalizer_state_is_member_sliced_buffers():
    norm = ReturnNormalizer(4)
    state = norm.state_dict()
    assert set(state) == {"mean", "var", "count"}
    assert all(v.shape == (4,) for v in state.values())
    norm.update(torch.randn(4, 10))
    fresh = ReturnNormalizer(4)
    fresh.load_state_dict(norm.state_dict())
    torch.testing.assert_close(fresh.scale, norm.scale)
