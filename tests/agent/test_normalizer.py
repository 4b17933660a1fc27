"""The running observation normalizer against a one-shot computation of the same statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rpbt.agent.normalizer import RunningMeanStd
from tests.conftest import Learner, tiny_config


def test_batch_by_batch_updates_equal_one_merge_of_all_data_with_the_prior():
    # Chan et al.'s merge is exact, so B updates of (P, N, D) batches must equal merging SB3's prior (mean 0, var 1,
    # count epsilon) with all B * N samples at once, per member; computed here independently in NumPy float64.
    rng = np.random.default_rng(0)
    P, N, D, B, eps = 3, 5, 4, 7, 1e-4
    loc, scale = np.array([1.0, -2.0, 0.5]).reshape(P, 1, 1), np.array([0.5, 3.0, 1.0]).reshape(P, 1, 1)
    batches = [rng.normal(loc, scale, size=(P, N, D)) for _ in range(B)]
    rms = RunningMeanStd(P, D, epsilon=eps)
    for x in batches:
        rms.update(torch.as_tensor(x, dtype=torch.float32))
    data = np.concatenate([x.astype(np.float32).astype(np.float64) for x in batches], axis=1)  # (P, B*N, D)
    n = data.shape[1]
    m, v = data.mean(1), data.var(1)
    total = eps + n
    mean = n * m / total  # the prior's mean is 0
    var = (eps * 1.0 + n * v + m ** 2 * eps * n / total) / total
    np.testing.assert_allclose(rms.mean.numpy(), mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rms.var.numpy(), var, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rms.count.numpy(), np.full(P, total), rtol=1e-15)
    # Members do not mix: member 1's statistics are those of its own data.
    assert abs(rms.mean[1, 0].item() - (-2.0)) < 1.5 and abs(rms.mean[0, 0].item() - 1.0) < 0.5


def test_normalize_clips_and_returns_float32():
    rms = RunningMeanStd(1, 2, clip=3.0)
    rms.update(torch.tensor([[[0.0, 0.0], [2.0, 2.0]]]))
    y = rms.normalize(torch.tensor([[[100.0, 1.0]]]))
    assert y.dtype == torch.float32
    assert y[0, 0, 0].item() == 3.0
    expected = (1.0 - rms.mean[0, 1].item()) / np.sqrt(rms.var[0, 1].item() + 1e-8)
    assert abs(y[0, 0, 1].item() - expected) < 1e-6


def test_outliers_are_values_far_beyond_their_components_median_magnitude_and_nothing_ordinary():
    from rpbt.agent.normalizer import find_obs_outliers

    g = torch.Generator().manual_seed(0)
    P, T, N = 2, 50, 4
    raw = torch.randn(P, T, N, 4, generator=g)  # index 0: a zero-centred component of unit spread
    raw[..., 1] = 0.0
    raw[:, 7, 2, 1] = 1.0  # index 1: an indicator that fires once (its median magnitude is 0: the floor of 1 holds)
    raw[0, 9, 1, 1] = 5000.0  # a rare large count, under the factor
    raw[..., 2] = 1e7 + 1e5 * torch.randn(P, T, N, generator=g)  # index 2: a large level (volumes)
    raw[0, 3, 0, 2] = 1e9  # 100 x its level: heavy, not absurd
    raw[0, 4, 0, 3], raw[0, 5, 0, 3] = float("nan"), float("inf")  # non-finite values are faults, not outliers
    raw[1, 11, 3, 0] = 1e30  # member 1: the absurd spike, the worst ...
    raw[1, 12, 3, 2] = 1e12  # ... and one 1e5 x its level
    found = find_obs_outliers(raw, factor=1e4)
    assert found.count.tolist() == [0, 2] and found.index.tolist() == [-1, 0]
    assert found.value[0].item() == 0.0 and found.value[1].item() == pytest.approx(1e30, rel=1e-6)
    assert found.scale[1].item() == 1.0  # the unit floor: member 1's index 0 has a median magnitude under 1
    metrics = found.metrics()
    assert sorted(metrics) == ["health/obs_outlier_index", "health/obs_outlier_scale", "health/obs_outlier_value",
                               "health/obs_outliers"]
    assert all(v.dtype == torch.float64 and v.shape == (P,) for v in metrics.values())
    # A long rollout: the median is taken over evenly spaced values, but every value is checked.
    from rpbt.agent.normalizer import MEDIAN_SAMPLES

    long = torch.randn(1, 4 * MEDIAN_SAMPLES, 1, 2, generator=g)
    long[0, 4 * 7 + 1, 0, 1] = -1e6  # off the median's grid (stride 4); negative: magnitudes are compared
    found = find_obs_outliers(long, factor=1e4)
    assert found.count.tolist() == [1] and found.index.tolist() == [1] and found.value.tolist() == [1e6]


def test_raw_clip_clips_before_the_statistics_and_before_normalizing():
    rms = RunningMeanStd(1, 2, raw_clip=5.0)
    rms.update(torch.tensor([[[1e30, 1.0], [-1e30, 3.0]]]))
    assert rms.mean[0].tolist() == pytest.approx([0.0, 2.0], abs=1e-3)
    assert rms.var[0, 0].item() == pytest.approx(25.0, rel=1e-3)
    plain = RunningMeanStd(1, 2, raw_clip=None)
    plain.mean.copy_(rms.mean), plain.var.copy_(rms.var)
    x = torch.tensor([[[1e30, 2.0]]])
    assert torch.equal(rms.normalize(x), plain.normalize(torch.tensor([[[5.0, 2.0]]])))


SPIKY = "env.id=tests.custom_envs:RpbtSpikyCartPole-v0"


def test_raw_obs_clip_keeps_the_normalizer_sane_and_is_off_by_default():
    means = {}
    for clip in (None, 5.0):
        learner = Learner(tiny_config(SPIKY, *([f"agent.raw_obs_clip={clip}"] if clip else [])), [0, 1])
        try:
            for _ in range(4):  # 64 steps per environment: two spikes each
                learner.train_update()
            means[clip] = learner.policy.obs_rms.mean[:, 1].abs().max().item()
            var = learner.policy.obs_rms.var[:, 1].max().item()
        finally:
            learner.close()
    assert means[None] > 1e27  # off by default: the spikes drag the running mean away (the 2.7e28)
    assert means[5.0] < 1.0 and var < 5.0 ** 2  # clipped before the statistics: the cart velocity's scale
