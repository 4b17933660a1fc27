"""Rollout storage of whole environment sequences, and GAE(lambda).

A rollout holds, per member and environment, T consecutive steps plus the LSTM states at the rollout's start, so
training can replay every environment's sequence from that stored state with the current weights (CleanRL's
PPO-LSTM scheme). Tensors are laid out (P, T, N, ...): member, time, environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from rpbt.agent.normalizer import ObsOutliers


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    terminated: Tensor,
    truncation_values: Tensor,
    last_values: Tensor,
    gamma: Tensor,
    gae_lambda: Tensor,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) per member, with time limits handled correctly.

    Shapes: rewards, values, dones, terminated, truncation_values: (P, T, N); last_values: (P, N) (the value of
    the observation after the last step); gamma, gae_lambda: (P,).

    ``dones[:, t]`` marks that the episode ended at step t (terminated or truncated). The value after step t is
    ``values[:, t+1]`` (``last_values`` for t = T-1) if the episode goes on, 0 if it terminated, and
    ``truncation_values[:, t]`` (the value of the final observation) if it was truncated by a time limit — the
    bootstrap that Pardo et al. 2018 ("Time Limits in Reinforcement Learning") ask for. The advantage recursion is
    cut at every episode end: ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}``.

    Returns (advantages, returns) with returns = advantages + values, each (P, T, N).
    """
    p, t_len, n = rewards.shape
    g = gamma.view(p, 1, 1).to(rewards.dtype)
    gl = (gamma * gae_lambda).view(p, 1, 1).to(rewards.dtype)
    # Everything but the recursion, for all T steps at once (the same element-wise operations as step by step).
    following = torch.cat([values[:, 1:], last_values.unsqueeze(1)], 1)  # the value after step t if it goes on
    ended_value = torch.where(terminated.bool(), torch.zeros_like(following), truncation_values)
    next_value = torch.where(dones.bool(), ended_value, following)
    delta = rewards + g * next_value - values
    carry = gl * (1.0 - dones.to(rewards.dtype))  # 0 where the episode ended: the recursion is cut there
    advantages = torch.empty_like(rewards)
    next_adv = torch.zeros(p, n, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(t_len)):
        next_adv = delta[:, t] + carry[:, t] * next_adv
        advantages[:, t] = next_adv
    return advantages, advantages + values


@dataclass
class Rollout:
    """One rollout of P members x N environments x T steps.

    obs: (P, T, N, I) the network inputs as the policy saw them (normalized observations, then the previous action
    features and reward when the policy is fed them, zero at episode starts); episode_starts: (P, T, N) (True where
    the state was reset before step t); actions: (P, T, N) indices for Discrete, (P, T, N, K) for MultiDiscrete or
    (P, T, N, A) for Box; log_probs, rewards, dones, terminated,
    truncation_values: (P, T, N); values: (C, P, T, N) in return units, one per critic (C = 1 or 2);
    initial_states: {name: (h, c)} each (P, L, N, H), the LSTM states before step 0.
    """

    obs: Tensor
    episode_starts: Tensor
    actions: Tensor
    log_probs: Tensor
    rewards: Tensor
    dones: Tensor
    terminated: Tensor
    truncation_values: Tensor
    values: Tensor
    initial_states: dict[str, tuple[Tensor, ...]] = field(default_factory=dict)
    last_values: Tensor | None = None
    nonfinite: Tensor | None = None  # (P,) int64 bit flags of non-finite inputs seen while collecting (see ppo)
    # Raw observation outliers seen while collecting (rpbt.agent.normalizer.find_obs_outliers); None: not checked.
    obs_outliers: ObsOutliers | None = None
    # Segment replay: the LSTM states before every segment's first step, {name: (h, c)} each (P, L, K*N, H) with
    # segment k of environment n at index k*N + n (K = T / bptt_length); equal to initial_states when K = 1.
    segment_states: dict[str, tuple[Tensor, ...]] = field(default_factory=dict)


def to_segments(x: Tensor, length: int) -> Tensor:
    """Cut (P, T, N, ...) into segments of ``length`` steps: (P, length, K*N, ...), segment k of environment n (its
    steps k*length .. (k+1)*length - 1) at index k*N + n, K = T / length. The identity layout when length = T."""
    p, t_len, n = x.shape[:3]
    k = t_len // length
    return x.reshape(p, k, length, n, *x.shape[3:]).transpose(1, 2).reshape(p, length, k * n, *x.shape[3:])


def stack_segment_states(states: list[dict[str, tuple[Tensor, ...]]]) -> dict[str, tuple[Tensor, ...]]:
    """K per-boundary states {name: (h, c) or (h,)} each (P, L, N, H) -> the same each (P, L, K*N, H), k major."""
    return {name: tuple(torch.cat([s[name][j] for s in states], 2) for j in range(len(states[0][name])))
            for name in states[0]}


def take_envs(x: Tensor, idx: Tensor, env_dim: int = 2) -> Tensor:
    """Select per-member environments: x (P, ..., N at env_dim, ...), idx (P, b) -> (P, ..., b, ...)."""
    shape = [1] * x.dim()
    shape[0], shape[env_dim] = idx.shape[0], idx.shape[1]
    index = idx.view(shape).expand(*x.shape[:env_dim], idx.shape[1], *x.shape[env_dim + 1:])
    return torch.gather(x, env_dim, index)
