"""rpbt.agent.distribution: the action distribution's shapes, its argument check, and Gaussian sampling by
reparameterization with each member's own generator."""

from __future__ import annotations

import pytest
import torch

from rpbt.agent.distribution import ActionDistribution
from rpbt.agent.ppo import make_policy
from tests.conftest import tiny_config


def test_of_refuses_an_nvec_that_does_not_fit_the_head():
    with pytest.raises(ValueError, match="nvec"):
        ActionDistribution.of(5, False, (2, 2))
    with pytest.raises(ValueError, match="nvec"):
        ActionDistribution.of(4, True, (2, 2))
    assert ActionDistribution.of(4, False, [2, 2]).nvec == (2, 2)


def test_action_shapes_and_noise_shapes_per_kind():
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    for dist, shape, noise in [(ActionDistribution.of(3, False), (), (2, 5)),
                               (ActionDistribution.of(5, False, (2, 3)), (2,), (2, 5, 2)),
                               (ActionDistribution.of(4, True), (4,), (2, 5, 4))]:
        assert dist.action_shape == shape
        assert dist.draw_noise(gens, 5).shape == noise


def test_box_actions_are_mean_plus_std_times_noise_and_the_mode_is_the_mean():
    dist = ActionDistribution.of(2, True)
    head = torch.randn(3, 4, 2)
    log_std = torch.randn(3, 2)
    noise = dist.draw_noise([torch.Generator().manual_seed(s) for s in range(3)], 4)
    assert torch.equal(dist.actions(head, noise, log_std), head + log_std.exp().unsqueeze(1) * noise)
    assert torch.equal(dist.actions(head), head)
    # member p's draws come from its own generator alone
    again = dist.draw_noise([torch.Generator().manual_seed(s) for s in (5, 1, 6)], 4)
    assert torch.equal(again[1], noise[1])


NVEC = (8, 3, 5)


def _split(logits: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(logits, list(NVEC), dim=-1))


def test_multi_discrete_actions_are_per_component_inverse_cdf_samples_and_modes():
    cfg = tiny_config()
    policy = make_policy(cfg, [0, 1])
    policy.distribution = ActionDistribution.of(sum(NVEC), False, NVEC)  # the sampling code only reads this
    g = torch.Generator().manual_seed(1)
    head = torch.randn(2, 6, sum(NVEC), generator=g)
    noise = torch.rand(2, 6, len(NVEC), generator=g)
    sampled = policy.actions(head, noise)
    mode = policy.actions(head)
    assert sampled.shape == mode.shape == (2, 6, 3)
    for k, part in enumerate(_split(head)):
        probs = torch.softmax(part, -1).double()
        # the smallest index whose cumulative probability reaches the uniform draw
        ref = torch.searchsorted(probs.cumsum(-1), noise[..., k].double().unsqueeze(-1)).squeeze(-1)
        assert torch.equal(sampled[..., k], ref.clamp_max(NVEC[k] - 1))
        assert torch.equal(mode[..., k], part.argmax(-1))
    assert policy.draw_noise(6).shape == (2, 6, 3)
