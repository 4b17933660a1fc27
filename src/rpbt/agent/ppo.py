"""Recurrent PPO for a population batch: collect, update, hyperparameter setters, snapshot and restore.

The learner trains P members at once (P = 1 is a single agent). Every parameter, optimizer moment, normalizer
statistic, hyperparameter, counter and episode-score buffer is a registered tensor whose leading dimension is the
member, so :meth:`RecurrentPPO.snapshot` (slice i of every tensor in ``state_dict()``, plus member i's RNG state)
is complete by construction: a new buffer joins the member state by being registered. The constructor checks
that every registered tensor has the member dimension first.

The algorithm follows CleanRL's ``ppo_atari_lstm.py`` and Stable-Baselines3's PPO (Schulman et al. 2017):

- separate LSTMs for the actor and the critic(s), each with its own (h, c) of shape (P, L, N, H), zeroed at
  episode starts while acting and in replay;
- the rollout stores the states at its start; training replays whole environment sequences from them with the
  current weights, minibatches split by environment (so the first epoch's log-probabilities equal the rollout's);
- GAE(lambda) that bootstraps at time limits (truncation) and not at termination;
- clipped surrogate, value loss (optionally clipped), entropy bonus, per-minibatch advantage normalization,
  per-member gradient-norm clipping, approx-KL (Schulman's k3 estimator) and clip-fraction statistics;
- Discrete (categorical) and Box (diagonal Gaussian with state-independent log-std) actions;
- a running observation normalizer per member; a running return-scale normalizer per member for the critic.

Per-member hyperparameters are (P,) tensors (``hp_<name>``) broadcast in the loss and the optimizer; set them
between updates with :meth:`set_hparams`, they are in force from the next update.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rpbt.agent.critic import ValueHead
from rpbt.agent.distributional import ReturnNormalizer
from rpbt.agent.networks import (
    LSTMState,
    PolicyHead,
    RecurrentTrunk,
    kl_divergence,
    log_prob_entropy,
    stack_trunks,
    trunks_sequence,
    trunks_step,
)
from rpbt.agent.normalizer import RunningMeanStd
from rpbt.agent.optim import PopulationAdam, clip_grad_norm_per_member
from rpbt.agent.rollout import Rollout, compute_gae, take_envs
from rpbt.checkpoint import MEMBER_STATE_FORMAT, CheckpointError, MemberState
from rpbt.checkpoint import hparam_key as _hp_buffer
from rpbt.config import Config, member_hparams
from rpbt.envs.factory import make_vector_env, space_info
from rpbt.seeding import env_seeds, member_seed

HPARAM_NAMES = tuple(member_hparams(Config()).keys())


class Critic(nn.Module):
    """A recurrent critic: encoder + LSTM (own hidden state) + value head."""

    def __init__(self, population: int, obs_dim: int, cfg: Config):
        super().__init__()
        net, c = cfg.agent.network, cfg.agent.critic
        self.trunk = RecurrentTrunk(population, obs_dim, net.encoder_sizes, net.lstm_hidden_size, net.lstm_num_layers)
        self.head = ValueHead(population, net.lstm_hidden_size, c.kind, c.num_quantiles, c.num_atoms,
                              c.v_min, c.v_max, c.huber_kappa)

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.trunk.reset_parameters(generators)
        self.head.reset_parameters(generators)


class RecurrentPPO(nn.Module):
    """A population shard of recurrent PPO learners with their environments.

    Args:
        cfg: the run configuration (``env``, ``agent`` and ``pbt.score_window`` are used).
        member_ids: global indices of the members this learner holds (P = len(member_ids)); each member's seeds
            (weights, environments, sampling) derive from ``run.seed`` and its global index only, so a member
            trains identically alone or batched with others.
        hparams: optional initial hyperparameters per member (names as ``rpbt.config.SEARCHABLE``).
        make_envs: whether to build environments (False for a learner used only to hold or inspect states).

    Raises ``ValueError`` for an empty ``member_ids`` and ``rpbt.envs.factory.EnvError`` for a bad env id.
    """

    def __init__(self, cfg: Config, member_ids: Sequence[int], hparams: Optional[Sequence[dict]] = None,
                 make_envs: bool = True):
        super().__init__()
        if len(member_ids) == 0:
            raise ValueError("a learner needs at least one member")
        self.cfg = cfg
        self.member_ids = list(member_ids)
        P = self.population = len(self.member_ids)
        a = cfg.agent
        self.num_envs, self.num_steps = cfg.env.num_envs, a.num_steps
        self.seeds = [member_seed(cfg.run.seed, m) for m in self.member_ids]
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]

        probe = make_vector_env(cfg.env, 1)
        self.obs_dim = int(np.prod(probe.single_observation_space.shape))
        self.action_info = space_info(probe.single_action_space)
        probe.close()
        self.continuous = self.action_info["continuous"]
        net = a.network
        self.actor = RecurrentTrunk(P, self.obs_dim, net.encoder_sizes, net.lstm_hidden_size, net.lstm_num_layers)
        self.policy_head = PolicyHead(P, net.lstm_hidden_size, self.action_info["dim"], self.continuous,
                                      net.log_std_init)
        self.critics = nn.ModuleList([Critic(P, self.obs_dim, cfg) for _ in range(2 if a.critic.twin else 1)])
        self.actor.reset_parameters(self.generators)
        self.policy_head.reset_parameters(self.generators, net.log_std_init)
        for critic in self.critics:
            critic.reset_parameters(self.generators)

        self.obs_rms = RunningMeanStd(P, self.obs_dim, clip=a.obs_clip)
        self.return_normalizer = ReturnNormalizer(P)
        self.vgs = None
        if a.vgs.enabled:
            from rpbt.agent.vgs import VarianceGradientScaler

            self.vgs = VarianceGradientScaler({n: p.shape for n, p in self.trainable()}, beta=a.vgs.beta,
                                              alpha=a.vgs.alpha, min_scale=a.vgs.min_scale, warmup=a.vgs.warmup)
        self.optimizer = PopulationAdam(self.trainable(), P, eps=a.adam_eps)

        defaults = member_hparams(cfg)
        for name in HPARAM_NAMES:
            self.register_buffer(_hp_buffer(name), torch.full((P,), float(defaults[name]), dtype=torch.float64))
        for i, hp in enumerate(hparams or []):
            self.set_hparams(i, hp)
        self.register_buffer("env_steps", torch.zeros(P, dtype=torch.int64))
        self.register_buffer("updates", torch.zeros(P, dtype=torch.int64))
        self.register_buffer("episodes", torch.zeros(P, dtype=torch.int64))
        self.episode_capacity = max(100, cfg.pbt.score_window)
        self.register_buffer("episode_returns", torch.zeros(P, self.episode_capacity, dtype=torch.float64))
        self.register_buffer("episode_lengths", torch.zeros(P, self.episode_capacity, dtype=torch.float64))
        self._check_member_dim()

        self.envs = None
        if make_envs:
            self.envs = make_vector_env(cfg.env, P * self.num_envs)
            seeds = [s for ms in self.seeds for s in env_seeds(ms, self.num_envs)]
            obs, _ = self.envs.reset(seed=seeds)
            self.next_obs = torch.as_tensor(obs, dtype=torch.float32).view(P, self.num_envs, self.obs_dim)
        else:
            self.next_obs = torch.zeros(P, self.num_envs, self.obs_dim)
        self.next_episode_start = torch.ones(P, self.num_envs, dtype=torch.bool)
        self.hidden_states: dict[str, LSTMState] = self.zero_states()
        self.running_return = torch.zeros(P, self.num_envs, dtype=torch.float64)
        self.running_length = torch.zeros(P, self.num_envs, dtype=torch.int64)
        self.episode_obs_history: Optional[Any] = None  # set by rpbt.pbt.transfer for burn-in
        self.step_hooks: list[Callable[["RecurrentPPO", Tensor, Tensor], None]] = []
        self._stacked = None  # the trunks' stacked weights, cached while collecting (weights fixed then)
        self.adversary = None  # SA-PPO regularizer (rpbt.agent.adversary), only when agent.adversarial.enabled
        if a.adversarial.enabled:
            from rpbt.agent.adversary import SAPPO

            self.adversary = SAPPO(cfg)

    # ------------------------------------------------------------------------------------------ structure

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        """Named trainable parameters (each (P, ...)), in a fixed order."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def _check_member_dim(self) -> None:
        for name, t in self.state_dict().items():
            if t.dim() == 0 or t.shape[0] != self.population:
                raise AssertionError(f"population tensor {name} lacks the member dimension: shape {tuple(t.shape)}")

    def state_names(self) -> list[str]:
        """Names of the recurrent states carried while acting: 'actor', 'critic0'[, 'critic1']."""
        return ["actor"] + [f"critic{k}" for k in range(len(self.critics))]

    def trunk(self, name: str) -> RecurrentTrunk:
        return self.actor if name == "actor" else self.critics[int(name[len("critic"):])].trunk

    def zero_states(self) -> dict[str, LSTMState]:
        return {n: self.trunk(n).lstm.initial_state(self.num_envs) for n in self.state_names()}

    # ------------------------------------------------------------------------------------------ hyperparameters

    def hparam(self, name: str) -> Tensor:
        """The (P,) tensor of hyperparameter ``name``."""
        return getattr(self, _hp_buffer(name))

    def set_hparams(self, member: int, values: dict[str, float]) -> None:
        """Set member ``member``'s hyperparameters; unknown names raise ``KeyError`` naming them."""
        for name, value in values.items():
            if name not in HPARAM_NAMES:
                raise KeyError(f"unknown hyperparameter {name!r}; known: {list(HPARAM_NAMES)}")
            self.hparam(name)[member] = float(value)

    def get_hparams(self, member: int) -> dict[str, float]:
        return {n: float(self.hparam(n)[member]) for n in HPARAM_NAMES}

    # ------------------------------------------------------------------------------------------ member state

    def snapshot(self, member: int) -> MemberState:
        """Member ``member``'s whole training state (cloned slices; the learner is not modified)."""
        tensors = {k: v[member].detach().clone() for k, v in self.state_dict().items()}
        return MemberState(tensors=tensors, rng=self.generators[member].get_state(),
                           meta={"member_id": self.member_ids[member], "format": MEMBER_STATE_FORMAT})

    @torch.no_grad()
    def restore(self, member: int, state: MemberState) -> None:
        """Overwrite member ``member``'s slice of every population tensor and its RNG with ``state``.

        Raises :class:`CheckpointError` naming the first missing, unexpected or mis-shaped key; nothing is written
        unless every key fits. Carried hidden states are left to the caller's hidden-state strategy.
        """
        own = self.state_dict()
        missing = sorted(set(own) - set(state.tensors))
        extra = sorted(set(state.tensors) - set(own))
        if missing or extra:
            raise CheckpointError(f"member state does not fit this learner: missing {missing[:5]}, "
                                  f"unexpected {extra[:5]} (different agent config?)")
        for k, v in own.items():
            src = state.tensors[k]
            if tuple(src.shape) != tuple(v.shape[1:]) or src.dtype != v.dtype:
                raise CheckpointError(f"member state key {k}: shape {tuple(src.shape)} {src.dtype}, expected "
                                      f"{tuple(v.shape[1:])} {v.dtype}")
        for k, v in own.items():
            v[member].copy_(state.tensors[k])
        self.generators[member].set_state(state.rng.clone())

    # ------------------------------------------------------------------------------------------ acting

    def policy_step(self, obs: Tensor, states: dict[str, LSTMState], episode_start: Tensor
                    ) -> tuple[Tensor, list[Tensor], dict[str, LSTMState]]:
        """One step of actor and critics. obs: (P, N, D) normalized; episode_start: (P, N).

        Returns policy head output (P, N, A), critic raw outputs [(P, N, K)] and the new states.
        """
        names = self.state_names()
        weights = self._stacked if self._stacked is not None else stack_trunks([self.trunk(n) for n in names])
        results = trunks_step(weights, obs, [states[n] for n in names], episode_start)
        new_states = {n: r[1] for n, r in zip(names, results)}
        head = self.policy_head(results[0][0])
        raws = [critic.head(r[0]) for critic, r in zip(self.critics, results[1:])]
        return head, raws, new_states

    def values_from_raw(self, raws: Sequence[Tensor]) -> Tensor:
        """Per-critic values in return units (C, P, ...) from raw head outputs."""
        scale = self.return_normalizer.scale.to(torch.float32)
        out = []
        for critic, raw in zip(self.critics, raws):
            v = critic.head.value(raw)
            out.append(v * scale.view((-1,) + (1,) * (v.dim() - 1)))
        return torch.stack(out)

    def sample_actions(self, head: Tensor, deterministic: bool = False) -> Tensor:
        """Sample (or take the mode of) actions from head outputs (P, N, A) with each member's generator."""
        P, N = head.shape[:2]
        if not self.continuous:
            if deterministic:
                return head.argmax(-1)
            u = torch.stack([torch.rand(N, generator=g) for g in self.generators])  # (P, N)
            cdf = torch.softmax(head, -1).cumsum(-1)
            return (cdf < u.unsqueeze(-1)).sum(-1).clamp_max(head.shape[-1] - 1)
        if deterministic:
            return head
        noise = torch.stack([torch.randn(N, head.shape[-1], generator=g) for g in self.generators])
        std = self.policy_head.log_std.exp().unsqueeze(1)
        return head + std * noise

    def env_actions(self, actions: Tensor) -> np.ndarray:
        flat = actions.reshape(self.population * self.num_envs, *actions.shape[2:]).numpy()
        if self.continuous:
            flat = np.clip(flat, self.action_info["low"], self.action_info["high"])
        return flat

    def normalize_obs(self, raw_obs: Tensor) -> Tensor:
        return self.obs_rms.normalize(raw_obs) if self.cfg.agent.normalize_observations else raw_obs

    def _record_episode(self, member: int, ep_return: float, ep_length: int) -> None:
        slot = int(self.episodes[member]) % self.episode_capacity
        self.episode_returns[member, slot] = ep_return
        self.episode_lengths[member, slot] = ep_length
        self.episodes[member] += 1

    def recent_returns(self, member: int, k: Optional[int] = None) -> np.ndarray:
        """Returns of member's last ``k`` finished episodes (all kept, up to capacity, when k is None)."""
        n = int(self.episodes[member])
        k = min(n, self.episode_capacity if k is None else k)
        slots = [(n - 1 - j) % self.episode_capacity for j in range(k)][::-1]
        return self.episode_returns[member, slots].numpy().copy()

    def recent_lengths(self, member: int, k: Optional[int] = None) -> np.ndarray:
        n = int(self.episodes[member])
        k = min(n, self.episode_capacity if k is None else k)
        slots = [(n - 1 - j) % self.episode_capacity for j in range(k)][::-1]
        return self.episode_lengths[member, slots].numpy().copy()

    @torch.no_grad()
    def collect(self) -> Rollout:
        """Run every member's environments for ``num_steps`` steps and return the rollout."""
        assert self.envs is not None, "this learner was built without environments"
        P, N, T, D = self.population, self.num_envs, self.num_steps, self.obs_dim
        C = len(self.critics)
        obs_buf = torch.zeros(P, T, N, D)
        starts = torch.zeros(P, T, N, dtype=torch.bool)
        act_shape = (P, T, N, self.action_info["dim"]) if self.continuous else (P, T, N)
        actions = torch.zeros(act_shape, dtype=torch.float32 if self.continuous else torch.int64)
        log_probs = torch.zeros(P, T, N)
        rewards = torch.zeros(P, T, N)
        dones = torch.zeros(P, T, N, dtype=torch.bool)
        terminated = torch.zeros(P, T, N, dtype=torch.bool)
        trunc_values = torch.zeros(P, T, N)
        values = torch.zeros(C, P, T, N)
        initial_states = {k: (h.clone(), c.clone()) for k, (h, c) in self.hidden_states.items()}
        rollout = Rollout(obs_buf, starts, actions, log_probs, rewards, dones, terminated, trunc_values, values,
                          initial_states)
        self._stacked = stack_trunks([self.trunk(n) for n in self.state_names()])
        try:
            self._fill(rollout)
        finally:
            self._stacked = None
        return rollout

    def _fill(self, rollout: Rollout) -> None:
        """Step the environments ``num_steps`` times, writing into ``rollout`` (called by :meth:`collect`)."""
        P, N, T, D = self.population, self.num_envs, self.num_steps, self.obs_dim
        obs_buf, starts, actions, log_probs = rollout.obs, rollout.episode_starts, rollout.actions, rollout.log_probs
        rewards, dones, terminated = rollout.rewards, rollout.dones, rollout.terminated
        trunc_values, values = rollout.truncation_values, rollout.values
        log_std = self.policy_head.log_std if self.continuous else None
        for t in range(T):
            raw_obs = self.next_obs
            if self.cfg.agent.normalize_observations:
                self.obs_rms.update(raw_obs)
            obs = self.normalize_obs(raw_obs)
            start = self.next_episode_start
            for hook in self.step_hooks:
                hook(self, raw_obs, start)
            head, raws, self.hidden_states = self.policy_step(obs, self.hidden_states, start)
            action = self.sample_actions(head)
            logp, _ = log_prob_entropy(head, action, self.continuous, log_std)
            obs_buf[:, t], starts[:, t], actions[:, t], log_probs[:, t] = obs, start, action, logp
            values[:, :, t] = self.values_from_raw(raws)

            next_obs, reward, term, trunc, infos = self.envs.step(self.env_actions(action))
            reward_t = torch.as_tensor(reward, dtype=torch.float32).view(P, N)
            term_t = torch.as_tensor(term).view(P, N)
            trunc_t = torch.as_tensor(trunc).view(P, N) & ~term_t
            done_t = term_t | trunc_t
            rewards[:, t], dones[:, t], terminated[:, t] = reward_t, done_t, term_t
            if trunc_t.any():
                final = np.stack([np.asarray(o, dtype=np.float32) if m else np.zeros(D, np.float32)
                                  for o, m in zip(infos["final_obs"], trunc_t.view(-1).numpy())])
                final_obs = self.normalize_obs(torch.as_tensor(final).view(P, N, D))
                no_start = torch.zeros(P, N, dtype=torch.bool)
                _, final_raws, _ = self.policy_step(final_obs, self.hidden_states, no_start)
                trunc_values[:, t] = torch.where(trunc_t, self.values_from_raw(final_raws).min(0).values, 0.0)

            self.running_return += reward_t.double()
            self.running_length += 1
            for p, n in done_t.nonzero().tolist():
                self._record_episode(p, float(self.running_return[p, n]), int(self.running_length[p, n]))
            self.running_return[done_t] = 0.0
            self.running_length[done_t] = 0
            self.next_obs = torch.as_tensor(next_obs, dtype=torch.float32).view(P, N, D)
            self.next_episode_start = done_t
        self.env_steps += T * N

        # Value of the observation after the last step, for the GAE bootstrap at the rollout's end.
        last_obs = self.normalize_obs(self.next_obs)
        _, last_raws, _ = self.policy_step(last_obs, self.hidden_states, self.next_episode_start)
        rollout.last_values = self.values_from_raw(last_raws).min(0).values

    # ------------------------------------------------------------------------------------------ learning

    def replay(self, rollout: Rollout, idx: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Replay the sequences of environments ``idx`` (P, b) from the rollout's initial states.

        Returns the policy head output (P, T, b, A) and critic raw outputs [(P, T, b, K)].
        """
        obs = take_envs(rollout.obs, idx)
        starts = take_envs(rollout.episode_starts, idx)
        names = self.state_names()
        initial = [tuple(take_envs(s, idx) for s in rollout.initial_states[n]) for n in names]
        results = trunks_sequence(stack_trunks([self.trunk(n) for n in names]), obs, initial, starts)
        head = self.policy_head(results[0][0])
        raws = [critic.head(r[0]) for critic, r in zip(self.critics, results[1:])]
        return head, raws

    def learn(self, rollout: Rollout) -> dict[str, Tensor]:
        """PPO update epochs on one rollout; returns metrics, each a (P,) tensor."""
        a = self.cfg.agent
        P, N = self.population, self.num_envs
        gamma, lam = self.hparam("gamma").float(), self.hparam("gae_lambda").float()
        value_returns = rollout.values.min(0).values  # (P, T, N), return units
        advantages, returns = compute_gae(rollout.rewards, value_returns, rollout.dones, rollout.terminated,
                                          rollout.truncation_values, rollout.last_values, gamma, lam)
        # The rollout's values were made with the scale in force before this update: dividing by it gives back the
        # heads' own outputs, the reference for value clipping (a trust region on the head's output, so a change of
        # the return scale does not by itself count as a move of the prediction).
        collect_scale = self.return_normalizer.scale.float().view(1, P, 1, 1)
        if a.critic.normalize_returns:
            self.return_normalizer.update(returns)
        scale = self.return_normalizer.scale.float().view(P, 1, 1)
        targets_norm = returns / scale
        old_values_norm = rollout.values / collect_scale  # (C, P, T, N), the heads' outputs at collection

        clip = self.hparam("clip_range").float().view(P, 1, 1)
        ent_coef, vf_coef = self.hparam("ent_coef").float(), self.hparam("vf_coef").float()
        lr, max_norm = self.hparam("learning_rate").float(), self.hparam("max_grad_norm").float()
        mb_envs = N // a.num_minibatches
        log_std = self.policy_head.log_std if self.continuous else None
        params = [p for _, p in self.trainable()]
        sums: dict[str, Tensor] = {}
        count = 0
        for _epoch in range(a.update_epochs):
            perms = torch.stack([torch.randperm(N, generator=g) for g in self.generators])  # (P, N)
            for mb in range(a.num_minibatches):
                idx = perms[:, mb * mb_envs:(mb + 1) * mb_envs].contiguous()
                head, raws = self.replay(rollout, idx)
                actions = take_envs(rollout.actions, idx)
                new_logp, entropy = log_prob_entropy(head, actions, self.continuous, log_std)
                old_logp = take_envs(rollout.log_probs, idx)
                adv = take_envs(advantages, idx)
                if a.normalize_advantage:
                    flat = adv.reshape(P, -1)
                    adv = (adv - flat.mean(1).view(P, 1, 1)) / (flat.std(1).view(P, 1, 1) + 1e-8)
                log_ratio = new_logp - old_logp
                ratio = log_ratio.exp()
                pg_loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean((1, 2))
                target = take_envs(targets_norm, idx)
                v_losses, v_mse, v_cvar = [], [], []
                for k, (critic, raw) in enumerate(zip(self.critics, raws)):
                    old_v = take_envs(old_values_norm[k], idx)
                    v_losses.append(critic.head.loss(raw, target, old_v, a.clip_range_vf).mean((1, 2)))
                    v_mse.append(((critic.head.value(raw) - target) ** 2).mean((1, 2)))
                    with torch.no_grad():
                        v_cvar.append(critic.head.cvar(raw, a.critic.cvar_alpha).mean((1, 2)))
                value_loss = torch.stack(v_losses).sum(0)
                entropy_loss = -entropy.mean((1, 2))
                loss = pg_loss + ent_coef * entropy_loss + vf_coef * value_loss  # (P,)
                extra = self.extra_losses(rollout, idx, head)
                for key, term in extra.items():
                    if key == "loss":
                        loss = loss + term

                for p in params:
                    p.grad = None
                loss.sum().backward()
                stats: dict[str, Tensor] = {}
                if self.vgs is not None:
                    stats.update(self.vgs.scale_({n: p.grad for n, p in self.trainable() if p.grad is not None}))
                grad_norm = clip_grad_norm_per_member(params, max_norm)
                self.optimizer.step(lr)

                with torch.no_grad():
                    stats.update({
                        "train/policy_gradient_loss": pg_loss,
                        "train/value_loss": value_loss,
                        "train/value_mse": torch.stack(v_mse).mean(0) * scale.view(P) ** 2,
                        "train/value_cvar": torch.stack(v_cvar).min(0).values * scale.view(P),
                        "train/entropy_loss": entropy_loss,
                        "train/approx_kl": ((ratio - 1) - log_ratio).mean((1, 2)),
                        "train/clip_fraction": ((ratio - 1).abs() > clip).float().mean((1, 2)),
                        "train/loss": loss,
                        "train/grad_norm": grad_norm,
                    })
                    stats.update({k: v for k, v in extra.items() if k != "loss"})
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0) + v.detach().double()
                count += 1
        metrics = {k: v / count for k, v in sums.items()}
        with torch.no_grad():
            y, yhat = returns.reshape(P, -1).double(), value_returns.reshape(P, -1).double()
            var_y = y.var(1)
            metrics["train/explained_variance"] = torch.where(var_y > 0, 1 - (y - yhat).var(1) / var_y,
                                                              torch.full_like(var_y, float("nan")))
            metrics["train/learning_rate"] = self.hparam("learning_rate").clone()
            metrics["train/clip_range"] = self.hparam("clip_range").clone()
        self.updates += 1
        return metrics

    def extra_losses(self, rollout: Rollout, idx: Tensor, head: Tensor) -> dict[str, Tensor]:
        """Hook for additional per-member loss terms ('loss': (P,)) and metrics; none in plain PPO.

        With ``agent.adversarial.enabled`` it is the SA-PPO robust KL regularizer and its ``sa_ppo/*`` metrics
        (:class:`rpbt.agent.adversary.SAPPO`).
        """
        if self.adversary is not None:
            return self.adversary.losses(self, rollout, idx, head)
        return {}

    def train_update(self) -> dict[str, Tensor]:
        """One PPO iteration: collect a rollout, learn from it. Returns (P,) metrics including rollout stats."""
        t0 = time.perf_counter()
        rollout = self.collect()
        metrics = self.learn(rollout)
        elapsed = time.perf_counter() - t0
        P = self.population
        ep_rew = torch.full((P,), float("nan"), dtype=torch.float64)
        ep_len = torch.full((P,), float("nan"), dtype=torch.float64)
        for i in range(P):
            r = self.recent_returns(i, 100)
            if len(r):
                ep_rew[i], ep_len[i] = float(r.mean()), float(self.recent_lengths(i, 100).mean())
        metrics["rollout/ep_rew_mean"] = ep_rew
        metrics["rollout/ep_len_mean"] = ep_len
        metrics["time/fps"] = torch.full((P,), self.num_envs * self.num_steps / elapsed, dtype=torch.float64)
        return metrics

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()

    # ------------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def kl_between(self, head_a: Tensor, head_b: Tensor) -> Tensor:
        log_std = self.policy_head.log_std if self.continuous else None
        return kl_divergence(head_a, head_b, self.continuous, log_std)


__all__ = ["RecurrentPPO", "HPARAM_NAMES"]
