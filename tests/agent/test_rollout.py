"""Rollout storage: GAE by hand, the segment layout of truncated BPTT."""

from __future__ import annotations

import torch

from rpbt.agent.rollout import compute_gae


def test_gae_hand_computed_with_truncation_termination_and_two_gammas():
    # One env, T = 5: steps 0-1 are an episode cut by a time limit at t=1 (value of the final observation 2.0),
    # steps 2-3 an episode that terminates at t=3, step 4 starts a third episode still running (last value 3.0).
    rewards = torch.ones(2, 5, 1)
    values = torch.tensor([0.5, 0.4, 0.3, 0.2, 0.1]).view(1, 5, 1).repeat(2, 1, 1)
    dones = torch.tensor([0, 1, 0, 1, 0], dtype=torch.bool).view(1, 5, 1).repeat(2, 1, 1)
    terminated = torch.tensor([0, 0, 0, 1, 0], dtype=torch.bool).view(1, 5, 1).repeat(2, 1, 1)
    trunc_values = torch.tensor([0, 2.0, 0, 0, 0]).view(1, 5, 1).repeat(2, 1, 1)
    last_values = torch.full((2, 1), 3.0)
    gamma = torch.tensor([0.9, 0.5])
    lam = torch.tensor([0.8, 1.0])
    adv, ret = compute_gae(rewards, values, dones, terminated, trunc_values, last_values, gamma, lam)
    # Member 0 (gamma 0.9, lambda 0.8), by hand:
    #   A4 = 1 + 0.9*3 - 0.1 = 3.6            (bootstrap on the rollout's last value)
    #   A3 = 1 + 0 - 0.2 = 0.8                (terminated: no bootstrap)
    #   A2 = (1 + 0.9*0.2 - 0.3) + 0.72*0.8 = 0.88 + 0.576 = 1.456
    #   A1 = 1 + 0.9*2.0 - 0.4 = 2.4          (truncated: bootstrap on V(final obs), recursion cut)
    #   A0 = (1 + 0.9*0.4 - 0.5) + 0.72*2.4 = 0.86 + 1.728 = 2.588
    # Member 1 (gamma 0.5, lambda 1.0):
    #   A4 = 1 + 1.5 - 0.1 = 2.4; A3 = 0.8; A2 = (1 + 0.1 - 0.3) + 0.5*0.8 = 1.2
    #   A1 = 1 + 1.0 - 0.4 = 1.6; A0 = (1 + 0.2 - 0.5) + 0.5*1.6 = 1.5
    expected = torch.tensor([[2.588, 2.4, 1.456, 0.8, 3.6], [1.5, 1.6, 1.2, 0.8, 2.4]]).unsqueeze(-1)
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, expected + values, atol=1e-6, rtol=0)


def test_to_segments_layout_by_hand():
    from rpbt.agent.rollout import to_segments

    x = torch.arange(2 * 6 * 3).view(2, 6, 3)  # x[p, t, n] = 18p + 3t + n
    y = to_segments(x, 2)  # K = 3 segments of 2 steps per environment
    assert y.shape == (2, 2, 9)
    for p in range(2):
        for k in range(3):
            for n in range(3):
                for step in range(2):
                    assert int(y[p, step, k * 3 + n]) == 18 * p + 3 * (2 * k + step) + n
    assert torch.equal(to_segments(x, 6), x)
