"""Exploit as one transfer: member state, explored hyperparameters, then a named hidden-state strategy.

PBT's exploit copies a donor into a recipient (Jaderberg et al. 2017). rpbt moves the donor's whole
:class:`~rpbt.agent.ppo.MemberState` (weights, optimizer, normalizers, gradient scaler, hyperparameters, counters,
RNG), then applies the explored hyperparameters on top (they win over anything the donor's state carried: the
learning rate in force is the explored one — Ray issue 62173), then handles the LSTM states of the recipient's
running episodes, which were computed by the old weights, with a strategy:

- ``keep``: leave them (stale; the baseline the spike study compares against; a warning is logged);
- ``zero``: zero every carried (h, c), shape (P, L, N, H) preserved;
- ``reset_episodes``: zero the states and end every running episode (the previous rollout bootstrapped its last
  step with the value of the next observation, as GAE does at a time limit), then reset the environments;
- ``burn_in``: recompute each environment's (h, c), for the actor and every critic, by replaying the raw
  observations of its current episode, normalized with the donor's statistics, through the new weights from a
  zero state (Kapturowski et al. 2019, R2D2). At most ``burn_in_max_steps`` observations are kept per
  environment; a longer episode replays its last window from zero and is counted as truncated.

Measurements at every exploit, whatever the strategy, compare the state the strategy left with the burned-in one:
``pbt/hidden_state_drift`` (||left - burned|| / ||burned|| over every LSTM's h and c), ``pbt/policy_kl_at_exploit``
(mean KL(pi(.|burned) || pi(.|left)) at the next observation), ``pbt/value_gap_at_exploit`` (mean |V_left - V_burned|
in return units) and ``pbt/burn_in_truncated`` (environments whose episode was longer than the window).
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from rpbt.agent.networks import LSTMState
from rpbt.agent.ppo import MemberState, RecurrentPPO

log = logging.getLogger(__name__)

HIDDEN_STATE_STRATEGIES = ("keep", "zero", "reset_episodes", "burn_in")


class EpisodeHistory:
    """Per-environment raw observations of the current episode, bounded to the last ``max_steps``.

    Buffers: ``obs`` (P, N, max_steps, D) as a ring per environment, ``length`` (P, N) steps seen in the current
    episode (may exceed max_steps). Installed as a step hook of a :class:`RecurrentPPO`: it records each raw
    observation the policy is about to see, resetting at episode starts.
    """

    def __init__(self, population: int, num_envs: int, obs_dim: int, max_steps: int):
        self.max_steps = max_steps
        self.obs = torch.zeros(population, num_envs, max_steps, obs_dim)
        self.length = torch.zeros(population, num_envs, dtype=torch.int64)

    def __call__(self, learner: RecurrentPPO, raw_obs: Tensor, episode_start: Tensor) -> None:
        self.length[episode_start] = 0
        pos = self.length % self.max_steps  # (P, N)
        p_idx = torch.arange(raw_obs.shape[0]).unsqueeze(1).expand_as(pos)
        n_idx = torch.arange(raw_obs.shape[1]).unsqueeze(0).expand_as(pos)
        self.obs[p_idx, n_idx, pos] = raw_obs
        self.length += 1

    def clear(self, member: int) -> None:
        self.length[member] = 0

    def window(self, member: int) -> tuple[Tensor, Tensor, int]:
        """Member's histories as an aligned batch.

        Returns obs (W, N, D) with each environment's last min(length, max_steps) observations right-aligned
        (earlier slots are padding), the index of each environment's first real step (N,), and the number of
        environments whose episode was longer than the window.
        """
        lengths = self.length[member]
        kept = lengths.clamp(max=self.max_steps)
        width = max(int(kept.max()), 1)
        n_envs, dim = self.obs.shape[1], self.obs.shape[3]
        out = torch.zeros(width, n_envs, dim)
        for n in range(n_envs):
            k = int(kept[n])
            if k == 0:
                continue
            end = int(lengths[n])
            slots = [(end - k + j) % self.max_steps for j in range(k)]
            out[width - k:, n] = self.obs[member, n, slots]
        first = width - kept
        return out, first, int((lengths > self.max_steps).sum())


def attach_history(learner: RecurrentPPO, max_steps: int) -> EpisodeHistory:
    """Install an :class:`EpisodeHistory` on ``learner`` (idempotent) and return it."""
    if isinstance(learner.episode_obs_history, EpisodeHistory):
        return learner.episode_obs_history
    hist = EpisodeHistory(learner.population, learner.num_envs, learner.obs_dim, max_steps)
    learner.episode_obs_history = hist
    learner.step_hooks.append(hist)
    return hist


@torch.no_grad()
def burn_in_states(learner: RecurrentPPO, member: int) -> tuple[dict[str, LSTMState], int]:
    """Member's carried states recomputed from zero over its current episodes with its current weights.

    Returns ({name: (h, c)} each (L, N, H)) and the number of truncated burn-ins. An environment whose next step
    starts a new episode gets a zero state (it will be reset anyway).
    """
    hist = learner.episode_obs_history
    if not isinstance(hist, EpisodeHistory):
        raise RuntimeError("burn-in needs an episode history: call rpbt.pbt.transfer.attach_history first")
    raw, first, truncated = hist.window(member)
    width, n_envs, _ = raw.shape
    P = learner.population
    # Run the whole population's weights on a batch where only `member` holds data (one batched call).
    x = torch.zeros(P, width, n_envs, learner.obs_dim)
    x[member] = raw
    obs = learner.normalize_obs(x)
    starts = torch.zeros(P, width, n_envs, dtype=torch.bool)
    t_idx = first.clamp(max=width - 1)
    starts[member, t_idx, torch.arange(n_envs)] = True
    empty = hist.length[member] == 0
    out: dict[str, LSTMState] = {}
    for name in learner.state_names():
        trunk = learner.trunk(name)
        h0, c0 = trunk.lstm.initial_state(n_envs, P)
        _, (h, c) = trunk.sequence(obs, (h0, c0), starts)
        h, c = h[member].clone(), c[member].clone()
        h[:, empty], c[:, empty] = 0.0, 0.0
        out[name] = (h, c)
    return out, truncated


@torch.no_grad()
def exploit_measurements(learner: RecurrentPPO, member: int, burned: dict[str, LSTMState]) -> dict[str, float]:
    """Compare member's carried states (as the strategy left them) with ``burned`` at the next observation."""
    num, den = 0.0, 0.0
    for name, (h_b, c_b) in burned.items():
        h_l, c_l = learner.hidden_states[name]
        num += float((h_l[member] - h_b).pow(2).sum() + (c_l[member] - c_b).pow(2).sum())
        den += float(h_b.pow(2).sum() + c_b.pow(2).sum())
    drift = (num ** 0.5) / (den ** 0.5) if den > 0 else (0.0 if num == 0 else float("inf"))

    obs = learner.normalize_obs(learner.next_obs)
    start = learner.next_episode_start
    full_burned = {k: (h.clone(), c.clone()) for k, (h, c) in learner.hidden_states.items()}
    for name, (h_b, c_b) in burned.items():
        full_burned[name][0][member] = h_b
        full_burned[name][1][member] = c_b
    head_l, raws_l, _ = learner.policy_step(obs, learner.hidden_states, start)
    head_b, raws_b, _ = learner.policy_step(obs, full_burned, start)
    kl = learner.kl_between(head_b[member:member + 1], head_l[member:member + 1]) if not learner.continuous else \
        learner.kl_between(head_b, head_l)[member:member + 1]
    v_l = learner.values_from_raw(raws_l).min(0).values[member]
    v_b = learner.values_from_raw(raws_b).min(0).values[member]
    return {
        "pbt/hidden_state_drift": drift,
        "pbt/policy_kl_at_exploit": float(kl.mean()),
        "pbt/value_gap_at_exploit": float((v_l - v_b).abs().mean()),
    }


def apply_hidden_state_strategy(learner: RecurrentPPO, member: int, strategy: str,
                                burned: Optional[dict[str, LSTMState]] = None) -> None:
    """Apply ``strategy`` to member's carried states (see module docstring). Raises ``ValueError`` if unknown."""
    if strategy not in HIDDEN_STATE_STRATEGIES:
        raise ValueError(f"pbt.hidden_state must be one of {HIDDEN_STATE_STRATEGIES}, got {strategy!r}")
    if strategy == "keep":
        return
    if strategy == "burn_in":
        if burned is None:
            burned, _ = burn_in_states(learner, member)
        for name, (h, c) in burned.items():
            learner.hidden_states[name][0][member] = h
            learner.hidden_states[name][1][member] = c
        return
    for h, c in learner.hidden_states.values():
        h[member] = 0.0
        c[member] = 0.0
    if strategy == "reset_episodes":
        reset_member_episodes(learner, member)


def reset_member_episodes(learner: RecurrentPPO, member: int) -> None:
    """End member's running episodes (not recorded as finished) and reset its environments."""
    n = learner.num_envs
    if learner.envs is not None:
        mask = np.zeros(learner.population * n, dtype=np.bool_)
        mask[member * n:(member + 1) * n] = True
        obs, _ = learner.envs.reset(options={"reset_mask": mask})
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32).view(learner.population, n, learner.obs_dim)
        learner.next_obs[member] = obs_t[member]
    learner.next_episode_start[member] = True
    learner.running_return[member] = 0.0
    learner.running_length[member] = 0
    if isinstance(learner.episode_obs_history, EpisodeHistory):
        learner.episode_obs_history.clear(member)


def exploit(learner: RecurrentPPO, recipient: int, donor_state: MemberState, new_hparams: dict[str, float],
            strategy: str = "burn_in", optimizer_state: str = "copy") -> dict[str, float]:
    """Copy ``donor_state`` into member ``recipient`` of ``learner`` as one transfer.

    Order: restore the whole member state; reset the optimizer moments if ``optimizer_state == 'reset'``; apply
    ``new_hparams`` on top; recompute the burned-in states (for the strategy or for the measurements); apply the
    hidden-state strategy; measure. Returns the measurements (see module docstring). Only call between updates.

    Raises ``ValueError`` for an unknown strategy or optimizer_state, :class:`~rpbt.agent.ppo.CheckpointError`
    when the state does not fit the learner.
    """
    if strategy not in HIDDEN_STATE_STRATEGIES:
        raise ValueError(f"pbt.hidden_state must be one of {HIDDEN_STATE_STRATEGIES}, got {strategy!r}")
    if optimizer_state not in ("copy", "reset"):
        raise ValueError(f"pbt.optimizer_state must be 'copy' or 'reset', got {optimizer_state!r}")
    if strategy == "keep":
        log.warning("pbt.hidden_state=keep reuses LSTM states computed by the old weights (baseline only)")
    learner.restore(recipient, donor_state)
    if optimizer_state == "reset":
        learner.optimizer.reset_member(recipient)
    learner.set_hparams(recipient, new_hparams)
    attach = learner.episode_obs_history
    truncated = 0
    burned = None
    if isinstance(attach, EpisodeHistory):
        burned, truncated = burn_in_states(learner, recipient)
    apply_hidden_state_strategy(learner, recipient, strategy, burned)
    measurements: dict[str, float] = {"pbt/burn_in_truncated": float(truncated)}
    if burned is not None:
        if strategy == "reset_episodes":
            burned = {k: (torch.zeros_like(h), torch.zeros_like(c)) for k, (h, c) in burned.items()}
        measurements.update(exploit_measurements(learner, recipient, burned))
    return measurements
