"""The running observation normalizer against a one-shot computation of the same statistics."""

from __future__ import annotations

import numpy as np
import torch

from rpbt.agent.normalizer import RunningMeanStd


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
