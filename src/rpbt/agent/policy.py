"""The population policy: exactly the member state of P recurrent PPO agents, as one ``nn.Module``.

Every tensor that defines a member's training — actor and critic weights, Adam moments and step, observation and
return normalizer statistics, gradient-scaler statistics, per-member hyperparameters, counters, recent episode
returns — is a registered parameter or buffer whose leading dimension is the member. Member i's state is slice i
of every tensor in ``state_dict()`` plus its ``torch.Generator``, so :meth:`PopulationPolicy.snapshot` /
:meth:`PopulationPolicy.restore` are complete by construction: a new buffer joins the member state by being
registered (the constructor checks that every registered tensor has the member dimension first).

The policy acts on a batch (:meth:`PopulationPolicy.step`: one time step of P x N environments) and replays
sequences (:meth:`PopulationPolicy.sequence`: P x b sequences of T steps). It knows nothing of environments: it is
built from the observation size (and, for an image encoder, the observation space) and the action space's kind and
size. The networks follow CleanRL's ``ppo_atari_lstm.py``: separate recurrent trunks (encoder + ``agent.network.cell``)
for the actor and each critic, each with its own carried state, ``(h, c)`` for the LSTM or ``(h,)`` for the GRU, of
shape (P, L, N, H), zeroed before an episode's first step.

Devices: every tensor lives on ``device``; the per-member generators stay on the CPU (their state is part of the
checkpoint, which is device-independent), so random draws are made on the CPU and moved.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rpbt.agent.critic import ValueHead
from rpbt.agent.distribution import ActionDistribution
from rpbt.agent.distributional import ReturnNormalizer
from rpbt.agent.encoders import make_encoder
from rpbt.agent.episodes import recent_values, register_episode_ring
from rpbt.agent.member_slice import check_member_dim, restore_member, snapshot_member
from rpbt.agent.networks import (
    LSTMState,
    PolicyHead,
    RecurrentTrunk,
    TrunkWeights,
    pop_linear,
    slice_trunk_weights,
    stack_trunks,
    trunks_sequence,
    trunks_step,
)
from rpbt.agent.normalizer import RunningMeanStd
from rpbt.agent.optim import PopulationAdam
from rpbt.agent.vgs import VarianceGradientScaler
from rpbt.checkpoint import MemberState, hparam_key
from rpbt.config import HPARAM_NAMES, Config, ConfigError, member_hparams
from rpbt.envs.features import fed_input, network_input
from rpbt.seeding import member_seed


def resolve_device(name: str) -> torch.device:
    """The torch device for ``agent.device``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``.

    Raises :class:`rpbt.config.ConfigError` naming ``agent.device`` for an unknown name, or for CUDA when this
    machine has none (or fewer devices than N).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"agent.device: {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"agent.device: {name!r} is not supported; expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"agent.device: {name!r} was asked for, but torch sees no CUDA device on this machine "
                          f"(use agent.device=cpu or auto)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"agent.device: {name!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


class ActOutput(NamedTuple):
    """One acting step's result (:meth:`PopulationPolicy.act`).

    head: (P, N, A) the action distribution's parameters (logits; MultiDiscrete: the K categoricals' logits
    concatenated; Box: the Gaussian's mean, its log-std being ``policy_head.log_std``); values_raw: the critics' raw
    outputs [(P, N, K)] (:meth:`PopulationPolicy.values_from_raw` turns them into values), None unless asked;
    state: the new ``{name: (h, c) or (h,)}`` each (P, L, N, H); inputs: (P, N, I) the network input the step saw.
    """

    head: Tensor
    values_raw: Optional[list[Tensor]]
    state: dict[str, LSTMState]
    inputs: Tensor


class ActorView(NamedTuple):
    """The actor of P members (P = 1 for one member's view) as tensors (:meth:`PopulationPolicy.actor_view`).

    trunk: the actor trunk's weights (:data:`rpbt.agent.networks.TrunkWeights`); head_weight (P, H, A),
    head_bias (P, A): the policy head; log_std: (P, A) for Box, else None; continuous, nvec: the action
    distribution (as :class:`PopulationPolicy`).
    """

    trunk: TrunkWeights
    head_weight: Tensor
    head_bias: Tensor
    log_std: Optional[Tensor]
    continuous: bool
    nvec: Optional[tuple[int, ...]]

    def head(self, features: Tensor) -> Tensor:
        """The policy head: features (P, ..., H) -> (P, ..., A)."""
        return pop_linear(features, self.head_weight, self.head_bias)


class Critic(nn.Module):
    """A recurrent critic: encoder + cell (own hidden state) + value head (scalar, quantile or categorical);
    ``encoder``: a population encoder module in place of the MLP (:func:`rpbt.agent.encoders.make_encoder`)."""

    def __init__(self, population: int, obs_dim: int, cfg: Config, encoder: Optional[nn.Module] = None):
        super().__init__()
        net, c = cfg.agent.network, cfg.agent.critic
        self.trunk = RecurrentTrunk(population, obs_dim, net.encoder_sizes, net.lstm_hidden_size, net.lstm_num_layers,
                                    net.cell, encoder)
        self.head = ValueHead(population, net.lstm_hidden_size, c.kind, c.num_quantiles, c.num_atoms,
                              c.v_min, c.v_max, c.huber_kappa)

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.trunk.reset_parameters(generators)
        self.head.reset_parameters(generators)


def _networks(cfg: Config, population: int, input_dim: int, obs_dim: int, action_dim: int, continuous: bool,
              observation_space: Any) -> tuple[RecurrentTrunk, PolicyHead, nn.ModuleList]:
    """The actor trunk, the policy head and the critics (one, or two with twin critics), not yet initialized; each
    trunk with its own encoder (:func:`rpbt.agent.encoders.make_encoder`; None: the MLP)."""
    net = cfg.agent.network
    encoders = [make_encoder(net, population, input_dim, obs_dim, observation_space)
                for _ in range(3 if cfg.agent.critic.twin else 2)]  # the actor's, then each critic's
    actor = RecurrentTrunk(population, input_dim, net.encoder_sizes, net.lstm_hidden_size, net.lstm_num_layers,
                           net.cell, encoders[0])
    head = PolicyHead(population, net.lstm_hidden_size, action_dim, continuous, net.log_std_init)
    return actor, head, nn.ModuleList([Critic(population, input_dim, cfg, enc) for enc in encoders[1:]])


class PopulationPolicy(nn.Module):
    """P recurrent actor-critics and everything else of their member state, member dimension first.

    Args:
        cfg: the run configuration (``agent``, ``run.seed`` and ``pbt.score_window`` are used).
        member_ids: global indices of the members held (P = len(member_ids)); each member's weights and sampling
            derive from ``run.seed`` and its global index only (:func:`rpbt.seeding.member_seed`), so a member
            trains identically alone or batched with others.
        obs_dim: D, the flat observation size.
        action_dim: A, the policy head's width: the number of discrete actions, sum(nvec) for MultiDiscrete, or
            the Box's flat size.
        continuous: Box (diagonal Gaussian, state-independent log-std) or categorical (Discrete, MultiDiscrete)
            actions.
        hparams: optional initial hyperparameters per member (names as :data:`rpbt.config.HPARAM_NAMES`).
        device: where every tensor lives (default CPU); weights are initialized on the CPU and then moved, so a
            seed gives the same initial weights on every device.
        nvec: MultiDiscrete's K category counts (sum(nvec) = action_dim; K independent categoricals), else None.
        observation_space: the environment's space before flattening, for a module encoder (None: a flat Box).

    Inputs: the normalized observation (D), then the previous action's features (A' = A with
    ``agent.network.prev_action``) and reward (R' = 1 with ``prev_reward``), both zero at an episode's first step
    (:meth:`network_input`); I = D + A' + R' is ``input_dim``.

    Attributes: ``actor`` and ``policy_head``; ``critics`` (one, or two with twin critics); ``obs_rms`` and
    ``return_normalizer``; ``vgs`` (or None); ``optimizer`` (:class:`~rpbt.agent.optim.PopulationAdam`, a
    registered submodule, so its moments are in the member state); buffers ``hp_<name>`` (P,) float64,
    ``env_steps``/``updates`` (P,) int64 and the episode ring (:mod:`rpbt.agent.episodes`); ``distribution``
    (:class:`~rpbt.agent.distribution.ActionDistribution`); ``generators``, one CPU ``torch.Generator`` per member.

    Raises ``ValueError`` (empty ``member_ids``, bad ``nvec``), ``KeyError`` (unknown hyperparameter), ``ConfigError``
    (an ``agent.network.encoder`` that cannot be built).
    """

    def __init__(self, cfg: Config, member_ids: Sequence[int], obs_dim: int, action_dim: int, continuous: bool,
                 hparams: Optional[Sequence[dict]] = None, device: Optional[torch.device] = None,
                 nvec: Optional[Sequence[int]] = None, observation_space: Any = None):
        super().__init__()
        if len(member_ids) == 0:
            raise ValueError("a policy needs at least one member")
        a = cfg.agent
        self.cfg = cfg
        self.member_ids = [int(m) for m in member_ids]
        P = self.population = len(self.member_ids)
        self.distribution = ActionDistribution.of(action_dim, continuous, nvec)  # ValueError for a bad nvec
        self.obs_dim, self.action_dim, self.continuous = int(obs_dim), int(action_dim), bool(continuous)
        self.nvec = self.distribution.nvec
        net = a.network
        self.prev_action_dim = self.action_dim if net.prev_action else 0  # A'
        self.prev_reward_dim = 1 if net.prev_reward else 0  # R'
        self.input_dim = self.obs_dim + self.prev_action_dim + self.prev_reward_dim  # I
        self.seeds = [member_seed(cfg.run.seed, m) for m in self.member_ids]
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.observation_space = observation_space  # before flattening: what a module encoder is built for
        self.actor, self.policy_head, self.critics = _networks(cfg, P, self.input_dim, self.obs_dim, self.action_dim,
                                                               self.continuous, observation_space)
        self.actor.reset_parameters(self.generators)
        self.policy_head.reset_parameters(self.generators, net.log_std_init)
        for critic in self.critics:
            critic.reset_parameters(self.generators)

        self.obs_rms = RunningMeanStd(P, self.obs_dim, clip=a.obs_clip, raw_clip=a.raw_obs_clip)
        self.return_normalizer = ReturnNormalizer(P)
        shapes = {n: p.shape for n, p in self.trainable()}
        self.vgs = VarianceGradientScaler(shapes, a.vgs.beta, a.vgs.alpha, a.vgs.min_scale, a.vgs.warmup) \
            if a.vgs.enabled else None
        self.optimizer = PopulationAdam(self.trainable(), P, eps=a.adam_eps)

        defaults = member_hparams(cfg)
        for name in HPARAM_NAMES:
            self.register_buffer(hparam_key(name), torch.full((P,), float(defaults[name]), dtype=torch.float64))
        for i, hp in enumerate(hparams or []):
            self.set_hparams(i, hp)
        self.register_buffer("env_steps", torch.zeros(P, dtype=torch.int64))
        self.register_buffer("updates", torch.zeros(P, dtype=torch.int64))
        self.episode_capacity = max(100, cfg.pbt.score_window)
        register_episode_ring(self, P, self.episode_capacity)  # episodes, episode_returns, episode_lengths
        check_member_dim(self, P)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.to(self.device)

    # ------------------------------------------------------------------------------------------ structure

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        """Named trainable parameters (each (P, ...)), in a fixed order."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def state_names(self) -> list[str]:
        """Names of the recurrent states carried while acting: 'actor', 'critic0'[, 'critic1']."""
        return ["actor"] + [f"critic{k}" for k in range(len(self.critics))]

    def trunk(self, name: str) -> RecurrentTrunk:
        """The trunk behind state ``name`` (see :meth:`state_names`)."""
        return self.actor if name == "actor" else self.critics[int(name[len("critic"):])].trunk

    def stacked_weights(self, values: bool = True) -> TrunkWeights:
        """The actor's weights, and with ``values`` every critic's after them, stacked along the member dimension
        for :meth:`act`; build once per rollout while the weights are fixed."""
        return stack_trunks([self.trunk(n) for n in (self.state_names() if values else ["actor"])])

    def initial_state(self, num_envs: int, names: Optional[Sequence[str]] = None) -> dict[str, LSTMState]:
        """Zero states ``{name: (h, c) or (h,)}`` (P, L, num_envs, H) on the device, for ``names`` (or all)."""
        return {n: tuple(t.to(self.device) for t in self.trunk(n).cell.initial_state(num_envs))
                for n in (self.state_names() if names is None else names)}

    # ------------------------------------------------------------------------------------------ hyperparameters, scores

    def hparam(self, name: str) -> Tensor:
        """The (P,) float64 tensor of hyperparameter ``name``."""
        return getattr(self, hparam_key(name))

    def set_hparams(self, member: int, values: dict[str, float]) -> None:
        """Set member ``member``'s hyperparameters (from the next update); ``KeyError`` naming an unknown one."""
        for name, value in values.items():
            if name not in HPARAM_NAMES:
                raise KeyError(f"unknown hyperparameter {name!r}; known: {list(HPARAM_NAMES)}")
            self.hparam(name)[member] = float(value)

    def get_hparams(self, member: int) -> dict[str, float]:
        return {n: float(self.hparam(n)[member]) for n in HPARAM_NAMES}

    def recent_returns(self, member: int, k: Optional[int] = None) -> np.ndarray:
        """Returns of member's last ``k`` finished episodes, oldest first (all kept, up to capacity, if None)."""
        return recent_values(self.episode_returns, self.episodes, member, k)

    # ------------------------------------------------------------------------------------------ member state

    def snapshot(self, member: int) -> MemberState:
        """Member ``member``'s whole training state, on the CPU (cloned slices; the policy is not modified)."""
        return snapshot_member(self, self.generators[member], member, self.member_ids[member])

    def restore(self, member: int, state: MemberState) -> None:
        """Overwrite member ``member``'s slice of every tensor and its generator with ``state`` (any device), or raise
        :class:`~rpbt.checkpoint.CheckpointError` (nothing written); running episodes' carried state is the caller's."""
        restore_member(self, self.generators[member], member, state)

    # ------------------------------------------------------------------------------------------ acting

    def normalize_obs(self, raw_obs: Tensor) -> Tensor:
        """Raw observations (P, ..., D) normalized with each member's running statistics (when enabled)."""
        return self.obs_rms.normalize(raw_obs) if self.cfg.agent.normalize_observations else raw_obs

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Trailing shape of one action: () for Discrete (an index), (K,) for MultiDiscrete, (A,) for Box."""
        return self.distribution.action_shape

    def network_input(self, obs: Tensor, prev_action: Optional[Tensor] = None, prev_reward: Optional[Tensor] = None,
                      episode_start: Optional[Tensor] = None) -> Tensor:
        """What the actor and critics see: (P, ..., I) (:func:`rpbt.envs.features.network_input`) from normalized
        observations (P, ..., D) and, when the config feeds them (else ignored), the previous action's features
        (P, ..., A') and reward (P, ..., R'), zeroed where ``episode_start``; ``ValueError`` for a wrong width."""
        return network_input(obs, fed_input(prev_action, self.prev_action_dim),
                             fed_input(prev_reward, self.prev_reward_dim), episode_start)

    def act(self, obs: Tensor, state: dict[str, LSTMState], prev_action: Optional[Tensor] = None,
            prev_reward: Optional[Tensor] = None, episode_start: Optional[Tensor] = None, *, values: bool = False,
            normalize: bool = True, weights: Optional[TrunkWeights] = None) -> ActOutput:
        """One acting step of P x N environments: what collection, ``Policy.predict``, evaluation and export compute.

        Args:
            obs: (P, N, D) raw observations (normalized here with each member's running statistics, not updated),
                or normalized ones with ``normalize=False``.
            state: ``{name: (h, c)}`` each (P, L, N, H): at least ``"actor"``, and every critic's with ``values``.
            prev_action, prev_reward: (P, N, A') / (P, N, R'), when the policy is fed them (:meth:`network_input`).
            episode_start: (P, N) bool: the states and the previous inputs are zeroed where True (None: no start).
            values: also run the critics (stacked with the actor in one batch).
            weights: :meth:`stacked_weights` ``(values)``, built here when None; build once while weights are fixed.

        Returns an :class:`ActOutput` (the new states: ``actor`` only without ``values``).
        """
        inputs = self.network_input(self.normalize_obs(obs) if normalize else obs, prev_action, prev_reward,
                                    episode_start)
        return ActOutput(*self._forward(inputs, state, episode_start, values, weights), inputs)

    def step(self, obs: Tensor, states: dict[str, LSTMState], episode_start: Tensor,
             weights: Optional[TrunkWeights] = None) -> tuple[Tensor, list[Tensor], dict[str, LSTMState]]:
        """:meth:`act` with values on a network input (P, N, I) already built: (head, critic raws, new states)."""
        return self._forward(obs, states, episode_start, True, weights)  # type: ignore[return-value]

    def _forward(self, inputs: Tensor, state: dict[str, LSTMState], episode_start: Optional[Tensor], values: bool,
                 weights: Optional[TrunkWeights]) -> tuple[Tensor, Optional[list[Tensor]], dict[str, LSTMState]]:
        if episode_start is None:
            episode_start = torch.zeros(inputs.shape[:2], dtype=torch.bool, device=inputs.device)
        names = self.state_names() if values else ["actor"]
        weights = self.stacked_weights(values) if weights is None else weights
        results = trunks_step(weights, inputs, [state[n] for n in names], episode_start)
        head, raws = self._heads(results, True)
        return head, raws if values else None, {n: r[1] for n, r in zip(names, results)}

    def _heads(self, results: list, actor: bool) -> tuple[Optional[Tensor], list[Tensor]]:
        """The policy head on the first trunk's features (with ``actor``) and each critic's head on the rest."""
        head = self.policy_head(results[0][0]) if actor else None
        return head, [critic.head(r[0]) for critic, r in zip(self.critics, results[1:] if actor else results)]

    def sequence(self, obs: Tensor, states: dict[str, LSTMState], episode_starts: Tensor, *, actor: bool = True,
                 fused: Optional[bool] = None) -> tuple[Optional[Tensor], list[Tensor]]:
        """Replay sequences through the actor (unless ``actor`` is False) and the critics (with gradients).

        obs: (P, T, b, I) the network input as stored in the rollout; states: the initial ``{name: (h, c)}`` each
        (P, L, b, H); episode_starts: (P, T, b); fused: the fused recurrence (default ``agent.fused_lstm``).
        Returns the policy head's output (P, T, b, A) (None without ``actor``) and the critics' raw outputs
        [(P, T, b, K)].
        """
        names = self.state_names()[0 if actor else 1:]
        results = trunks_sequence(stack_trunks([self.trunk(n) for n in names]), obs, [states[n] for n in names],
                                  episode_starts, fused=self.cfg.agent.fused_lstm if fused is None else fused)
        return self._heads(results, actor)

    def actor_view(self, member: Optional[int] = None) -> ActorView:
        """The actor as weights (differentiable in the parameters): the whole population's, or member ``member``'s
        alone (P = 1), for code that replays the actor on its own (SA-PPO's attacks)."""
        weights = self.stacked_weights(values=False)
        w, b, log_std = self.policy_head.linear.weight, self.policy_head.linear.bias, self.log_std
        if member is not None:
            m = slice(member, member + 1)
            weights, w, b = slice_trunk_weights(weights, m), w[m], b[m]
            log_std = None if log_std is None else log_std[m]
        return ActorView(weights, w, b, log_std, self.continuous, self.nvec)

    def values_from_raw(self, raws: Sequence[Tensor]) -> Tensor:
        """Per-critic values in return units, (C, P, ...), from raw head outputs."""
        scale = self.return_normalizer.scale.to(torch.float32)
        values = [critic.head.value(raw) for critic, raw in zip(self.critics, raws)]
        return torch.stack([v * scale.view((-1,) + (1,) * (v.dim() - 1)) for v in values])

    @property
    def log_std(self) -> Optional[Tensor]:
        """The Gaussian's log-std (P, A) for Box actions, else None."""
        return self.policy_head.log_std if self.continuous else None

    def draw_noise(self, num_envs: int) -> Tensor:
        """One step's sampling noise (:class:`~rpbt.agent.distribution.ActionDistribution`), members' generators."""
        return self.distribution.draw_noise(self.generators, num_envs)

    def actions(self, head: Tensor, noise: Optional[Tensor] = None) -> Tensor:
        """Actions from head outputs (P, N, A), sampled with ``noise`` (:meth:`draw_noise`) or the mode (None)."""
        return self.distribution.actions(head, noise, self.log_std)

    def log_prob(self, head: Tensor, actions: Tensor) -> Tensor:
        """Log-probability of ``actions`` (P, ..., *action_shape) under head outputs (P, ..., A): (P, ...)."""
        return self.distribution.log_prob(head, actions, self.log_std)

    def log_prob_entropy(self, head: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`log_prob` and the distribution's entropy, each (P, ...)."""
        return self.distribution.log_prob_entropy(head, actions, self.log_std)

    @torch.no_grad()
    def kl_between(self, head_a: Tensor, head_b: Tensor) -> Tensor:
        """KL(pi_a || pi_b) per batch element, shaped like the batch (P, ...)."""
        return self.distribution.kl(head_a, head_b, self.log_std)


__all__ = ["PopulationPolicy", "Critic", "resolve_device"]
