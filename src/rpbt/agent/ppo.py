"""Recurrent PPO for a population, as functions: ``collect(policy, runner) -> Rollout`` and
``update(policy, optimizer, rollout) -> metrics``.

The algorithm follows CleanRL's ``ppo_atari_lstm.py`` and Stable-Baselines3's PPO (Schulman et al. 2017), batched
over P members (every tensor has the member first; P = 1 is a single agent):

- the rollout stores the LSTM states at its start; training replays whole environment sequences from them with
  the current weights, minibatches split by environment, so the first epoch's log-probabilities equal the
  rollout's;
- or, with ``agent.bptt_length`` = L, segment replay (truncated BPTT, as PufferLib's ``bptt_horizon``): minibatches
  of L-step segments, each from a stored state — the state recorded while acting for the first epoch (so its
  log-probabilities still equal the rollout's), refreshed by one no-grad pass of the whole rollout under the
  current weights before every later epoch (so no segment starts from a state older than one epoch; sb3-contrib
  keeps them stale, its issue 265);
- GAE(lambda) that bootstraps at time limits (truncation) and not at termination;
- clipped surrogate, value loss (optionally clipped), entropy bonus, per-minibatch advantage normalization,
  per-member gradient-norm clipping, approx-KL (Schulman's k3 estimator) and clip-fraction statistics;
- optional loss terms (SA-PPO's robust regularizer) through :class:`AuxiliaryLoss`, which receives the epoch and
  the minibatch index: no position state is hidden anywhere.

Per-member hyperparameters are (P,) tensors of the policy (``policy.hparam(name)``), broadcast in the loss and the
optimizer. Shapes: P members, N environments per member, T steps, D observation features, I network inputs (D, then the
previous action and reward when fed), A head outputs.

Devices: the policy's tensors and the rollout live on ``policy.device``; environments run on the CPU. Per step,
collection makes one host-to-device copy (observations, episode starts and sampling noise packed together) and
one device-to-host copy (actions).

Health: a member whose observations, rewards, loss, gradients or weights turn non-finite is flagged per member in
the metric ``health/nonfinite`` (bit flags, :data:`NONFINITE_QUANTITIES` in order; 0 = healthy), checked once
per rollout and per update on the device, so no synchronisation is added. Finite but absurd raw observations
(``agent.obs_outlier_factor``, :func:`rpbt.agent.normalizer.find_obs_outliers`) are counted per member in the metrics
``health/obs_outliers`` (with the worst one's ``health/obs_outlier_index``, ``_value`` and ``_scale``), checked once
per rollout; they do not change training (``agent.raw_obs_clip`` clips them before normalization when asked).
The other members are not affected (the population is a batch, not a shared fate); what to do with the faulty
member is the PBT runner's decision (``run.on_member_fault``).
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple, Optional, Protocol, Sequence

import torch
from torch import Tensor

from rpbt.agent.episodes import recent_values, record_episodes
from rpbt.agent.networks import trunks_sequence
from rpbt.agent.normalizer import find_obs_outliers
from rpbt.agent.optim import PopulationAdam, clip_grad_norm_per_member
from rpbt.agent.policy import PopulationPolicy, resolve_device
from rpbt.agent.rollout import Rollout, compute_gae, stack_segment_states, take_envs, to_segments
from rpbt.config import Config
from rpbt.envs.factory import base_observation_space, make_vector_env, space_info
from rpbt.envs.runner import EnvRunner

NONFINITE_QUANTITIES = ("observation", "reward", "loss", "gradient", "weights")  # bit k of health/nonfinite


def first_nonfinite(code: float) -> str | None:
    """The first non-finite quantity named by a ``health/nonfinite`` code (in the order values flow), or None."""
    code = int(code)
    return next((q for k, q in enumerate(NONFINITE_QUANTITIES) if code & (1 << k)), None)


class AuxiliaryLoss(Protocol):
    """An optional per-member loss term added to PPO's loss, minibatch by minibatch.

    Called as ``aux(policy, rollout, idx, head, epoch, minibatch)`` with ``idx`` (P, b) the minibatch's
    environments, ``head`` (P, T, b, A) the clean replay's policy output, ``epoch`` in ``[0, update_epochs)`` and
    ``minibatch`` in ``[0, num_minibatches)``; returns ``(loss (P,), metrics {key: (P,)})``.
    """

    def __call__(self, policy: PopulationPolicy, rollout: Rollout, idx: Tensor, head: Tensor, epoch: int,
                 minibatch: int) -> tuple[Tensor, dict[str, Tensor]]: ...


# --------------------------------------------------------------------------------------------------- building


def make_policy(cfg: Config, member_ids: Sequence[int], hparams: Optional[Sequence[dict]] = None,
                device: Optional[torch.device] = None) -> PopulationPolicy:
    """A :class:`PopulationPolicy` sized for ``cfg.env`` (one probe environment gives D and the action space), on
    ``device`` (default: ``agent.device`` resolved). Raises :class:`rpbt.envs.factory.EnvError` for a bad env
    and :class:`rpbt.config.ConfigError` for an unavailable device."""
    device = resolve_device(cfg.agent.device) if device is None else device
    probe = make_vector_env(cfg.env, 1)
    try:
        obs_dim = int(torch.Size(probe.single_observation_space.shape).numel())
        spec = space_info(probe.single_action_space)
        obs_space = base_observation_space(probe.envs[0])
    finally:
        probe.close()
    return PopulationPolicy(cfg, member_ids, obs_dim, spec.dim, spec.continuous, hparams, device,
                            nvec=spec.nvec if spec.kind == "multi_discrete" else None, observation_space=obs_space)


def make_runner(cfg: Config, policy: PopulationPolicy) -> EnvRunner:
    """The :class:`EnvRunner` of ``policy``'s members: ``env.num_envs`` environments each, seeded from the members'
    seeds, with a burn-in history of ``pbt.burn_in_max_steps`` observations, carrying the previous action and
    reward when the policy is fed them."""
    return EnvRunner(cfg.env, policy.seeds, policy.initial_state(cfg.env.num_envs), cfg.pbt.burn_in_max_steps,
                     prev_action=policy.prev_action_dim > 0, prev_reward=policy.prev_reward_dim > 0)


def auxiliary_losses(cfg: Config) -> list[AuxiliaryLoss]:
    """The optional loss terms the config asks for: SA-PPO's robust KL regularizer when
    ``agent.adversarial.enabled`` (:class:`rpbt.agent.adversary.SAPPO`)."""
    if not cfg.agent.adversarial.enabled:
        return []
    from rpbt.agent.adversary import SAPPO

    return [SAPPO(cfg)]


def _to_device(device: torch.device, *host: Tensor) -> list[Tensor]:
    """Move (P, N, ...) CPU tensors to ``device`` in one copy (packed as float32, split and cast back there)."""
    if device.type == "cpu":
        return list(host)
    P, N = host[0].shape[:2]
    flat = [t.reshape(P, N, math.prod(t.shape[2:])) for t in host]
    packed = torch.cat([t.to(torch.float32) for t in flat], -1).to(device, non_blocking=True)
    out, at = [], 0
    for t, f in zip(host, flat):
        out.append(packed[..., at:at + f.shape[-1]].reshape(t.shape).to(t.dtype))
        at += f.shape[-1]
    return out


def _prev_inputs(carried, feeds_prev: bool) -> list[Tensor]:
    """The carried previous action features and reward when the policy is fed them, else nothing."""
    return [carried.prev_action, carried.prev_reward] if feeds_prev else []


def _prev_or_none(prev: list[Tensor]) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """:func:`_prev_inputs` (moved to the device) as :meth:`PopulationPolicy.act`'s two previous inputs."""
    return (prev[0], prev[1]) if prev else (None, None)


# --------------------------------------------------------------------------------------------------- collect


@torch.no_grad()
def collect(policy: PopulationPolicy, runner: EnvRunner, num_steps: Optional[int] = None) -> Rollout:
    """Run every member's environments for T = ``num_steps`` (default ``agent.num_steps``) steps.

    Updates the observation normalizer, the runner's carried state (LSTM states, burn-in history, episodes) and
    the policy's ``env_steps`` and finished-episode returns. Returns the :class:`~rpbt.agent.rollout.Rollout`
    (on the policy's device) with the value of the observation after the last step for GAE's bootstrap. The
    rollout's ``obs`` are the network inputs as fed (:meth:`PopulationPolicy.network_input`: the normalized
    observations, then the previous action and reward when the policy is fed them), so replay sees what acting saw.
    """
    P, N, D = policy.population, runner.num_envs, policy.obs_dim
    T = policy.cfg.agent.num_steps if num_steps is None else num_steps
    dev = policy.device
    carried = runner.carried
    initial_states = {k: tuple(t.clone() for t in st) for k, st in carried.hidden.items()}
    weights = policy.stacked_weights()  # fixed while acting
    feeds_prev = policy.input_dim > D  # the previous action and reward are inputs (agent.network.prev_*)
    seg_len = policy.cfg.agent.bptt_length or T
    boundaries = [initial_states]  # the carried LSTM states before every segment's first step
    truncation_values = torch.zeros(P, T, N, device=dev)
    finished = []
    # Per step only what acting needs; the per-step results are stacked after the loop, where the log-probabilities
    # and the critics' values of all T steps are computed at once. (The critics' heads stay in the step: a batched
    # product over all T steps rounds differently from T small ones at some sizes.) The lists hold the step's
    # tensors themselves, some of them the carried state's: EnvRunner.step replaces those with new tensors every
    # step, and nothing writes into them while collecting.
    steps: dict[str, list[Tensor]] = {k: [] for k in ("raw_obs", "obs", "start", "head", "action", "reward", "done",
                                                      "terminated", "critic")}
    for t in range(T):
        if t > 0 and t % seg_len == 0:
            boundaries.append({k: tuple(t.clone() for t in st) for k, st in carried.hidden.items()})
        host = [carried.next_obs, carried.episode_start, policy.draw_noise(N)]
        raw_obs, start, noise, *prev = _to_device(dev, *host, *_prev_inputs(carried, feeds_prev))
        if policy.cfg.agent.normalize_observations:
            policy.obs_rms.update(raw_obs)
        head, critic_raws, carried.hidden, obs = policy.act(raw_obs, carried.hidden, *_prev_or_none(prev), start,
                                                            values=True, weights=weights)
        action = policy.actions(head, noise)

        result = runner.step(action.cpu())
        for key, x in (("raw_obs", raw_obs), ("obs", obs), ("start", start), ("head", head), ("action", action),
                       ("reward", result.reward), ("done", result.done), ("terminated", result.terminated),
                       ("critic", critic_raws)):
            steps[key].append(x)
        if result.final_obs is not None:  # a time limit: bootstrap from the value of the final observation
            # (fed with this step's action and reward, which the carried state holds until the next step)
            prev = [x.to(dev) for x in _prev_inputs(carried, feeds_prev)]
            final = policy.act(result.final_obs.to(dev), carried.hidden, *_prev_or_none(prev), values=True,
                               weights=weights)
            truncation_values[:, t] = torch.where(result.truncated.to(dev),
                                                  policy.values_from_raw(final.values_raw).min(0).values, 0.0)
        finished += [(p, ret, length) for p, _, ret, length in result.finished]
    record_episodes(policy.episodes, policy.episode_returns, policy.episode_lengths, finished)
    policy.env_steps += T * N

    def stacked(key: str) -> Tensor:  # (P, T, N, ...) on the policy's device
        return torch.stack(steps[key], 1).to(dev)

    heads, actions = stacked("head"), stacked("action")
    critic_raws = [torch.stack([f[k] for f in steps["critic"]], 1) for k in range(len(policy.critics))]
    rollout = Rollout(
        obs=stacked("obs"), episode_starts=stacked("start"), actions=actions,
        log_probs=policy.log_prob(heads, actions),
        rewards=stacked("reward"), dones=stacked("done"), terminated=stacked("terminated"),
        truncation_values=truncation_values,
        values=policy.values_from_raw(critic_raws),  # (C, P, T, N)
        initial_states=initial_states,
    )
    factor = policy.cfg.agent.obs_outlier_factor
    raw = stacked("raw_obs") if carried.history_length > 0 or factor is not None else None  # (P, T, N, D)
    if carried.history_length > 0:  # the burn-in history: T steps at once (only read between updates)
        carried.record_steps(raw, rollout.episode_starts, rollout.obs[..., D:] if feeds_prev else None)
    if factor is not None:  # finite but absurd raw values, which would drag the normalizer's statistics away
        rollout.obs_outliers = find_obs_outliers(raw, factor)

    _bootstrap_and_check(policy, runner, rollout, weights)
    rollout.segment_states = stack_segment_states(boundaries) if len(boundaries) > 1 else rollout.initial_states
    return rollout


def _bootstrap_and_check(policy: PopulationPolicy, runner: EnvRunner, rollout: Rollout, weights) -> None:
    """Set the rollout's ``last_values`` (the value of the observation after the last step, GAE's bootstrap at the
    rollout's end) and its ``nonfinite`` flags: non-finite raw observations reach the stored (normalized) ones,
    through the values or the statistics, and the bootstrap's observation is one too."""
    P, D, carried = policy.population, policy.obs_dim, runner.carried
    last_obs, last_start, *prev = _to_device(policy.device, carried.next_obs, carried.episode_start,
                                             *_prev_inputs(carried, policy.input_dim > D))
    last = policy.act(last_obs, carried.hidden, *_prev_or_none(prev), last_start, values=True, weights=weights)
    rollout.last_values = policy.values_from_raw(last.values_raw).min(0).values
    bad_obs = ~(torch.isfinite(rollout.obs[..., :D].reshape(P, -1)).all(1)
                & torch.isfinite(last_obs.reshape(P, -1)).all(1))
    bad_reward = ~torch.isfinite(rollout.rewards.reshape(P, -1)).all(1)
    rollout.nonfinite = bad_obs.long() | (bad_reward.long() << 1)


@torch.no_grad()
def refresh_segment_states(policy: PopulationPolicy, rollout: Rollout, length: int) -> dict:
    """The recurrent states before every segment of ``length`` steps under the current weights: one no-grad pass of
    the whole rollout from its initial states, segment by segment. Returns {name: (h, c) or (h,)} each
    (P, L, K*N, H) in the layout of :func:`rpbt.agent.rollout.to_segments`."""
    names = policy.state_names()
    weights = policy.stacked_weights()
    states = [rollout.initial_states[n] for n in names]
    T = rollout.obs.shape[1]
    boundaries = []
    for start in range(0, T, length):
        boundaries.append(dict(zip(names, states)))
        if start + length < T:
            span = slice(start, start + length)
            results = trunks_sequence(weights, rollout.obs[:, span], states, rollout.episode_starts[:, span])
            states = [r[1] for r in results]
    return stack_segment_states(boundaries)


# --------------------------------------------------------------------------------------------------- update


class Sequences(NamedTuple):
    """The rollout as training data: S sequences of L steps, (P, L, S, ...), and what the loss compares with.

    seg: the rollout's tensors as sequences (its ``initial_states`` the stored states before each, replaced when
    refreshed); advantages: GAE(lambda) in return units; targets: the value targets divided by each member's return
    scale; old_values: (C, P, L, S) the critics' outputs at collection in head units (value clipping's reference).
    Unsegmented, for the metrics: returns and value_returns (P, T, N), scale (P, 1, 1) the return scale in force.
    """

    seg: Rollout
    advantages: Tensor
    targets: Tensor
    old_values: Tensor
    returns: Tensor
    value_returns: Tensor
    scale: Tensor


def training_sequences(policy: PopulationPolicy, rollout: Rollout) -> Sequences:
    """Advantages and value targets of ``rollout`` (updating the return normalizer with ``normalize_returns``), cut
    into sequences of L = ``agent.bptt_length`` steps (the whole rollout: S = N)."""
    a, P, hp = policy.cfg.agent, policy.population, policy.hparam
    value_returns = rollout.values.min(0).values  # (P, T, N): the smaller critic with twin critics
    advantages, returns = compute_gae(rollout.rewards, value_returns, rollout.dones, rollout.terminated,
                                      rollout.truncation_values, rollout.last_values,
                                      hp("gamma").float(), hp("gae_lambda").float())
    # The rollout's values were made with the scale in force before this update: dividing by it gives back the
    # heads' own outputs, the reference for value clipping (a trust region on the head's output, so a change of
    # the return scale does not by itself count as a move of the prediction).
    collect_scale = policy.return_normalizer.scale.float().view(1, P, 1, 1)
    if a.critic.normalize_returns:
        policy.return_normalizer.update(returns)
    scale = policy.return_normalizer.scale.float().view(P, 1, 1)
    targets_norm = returns / scale
    old_values_norm = rollout.values / collect_scale  # (C, P, T, N)
    L = a.bptt_length or rollout.obs.shape[1]
    seg = Rollout(*(to_segments(x, L) for x in (rollout.obs, rollout.episode_starts, rollout.actions,
                                                 rollout.log_probs, rollout.rewards, rollout.dones,
                                                 rollout.terminated, rollout.truncation_values)),
                  values=torch.stack([to_segments(v, L) for v in rollout.values]),
                  initial_states=rollout.segment_states or rollout.initial_states)
    return Sequences(seg, to_segments(advantages, L), to_segments(targets_norm, L),
                     torch.stack([to_segments(v, L) for v in old_values_norm]), returns, value_returns, scale)


class MinibatchLoss(NamedTuple):
    """One minibatch's PPO loss, each term (P,): ``loss`` = pg_loss + ent_coef * entropy_loss + vf_coef * v_loss
    (with gradients); the statistics approx_kl (k3), clipfrac, v_mse (the critics' mean squared error in head units)
    and v_cvar (the smaller critic's CVaR in head units); ``head`` (P, L, b, A) the replayed policy output."""

    loss: Tensor
    pg_loss: Tensor
    v_loss: Tensor
    entropy_loss: Tensor
    approx_kl: Tensor
    clipfrac: Tensor
    v_mse: Tensor
    v_cvar: Tensor
    head: Tensor

    def metrics(self, scale: Tensor) -> dict[str, Tensor]:
        """The terms as ``train/*`` metrics (values in return units with ``scale`` (P,))."""
        return {"train/policy_gradient_loss": self.pg_loss, "train/value_loss": self.v_loss,
                "train/value_mse": self.v_mse * scale ** 2, "train/value_cvar": self.v_cvar * scale,
                "train/entropy_loss": self.entropy_loss, "train/approx_kl": self.approx_kl,
                "train/clip_fraction": self.clipfrac}


def minibatch_loss(policy: PopulationPolicy, data: Sequences, idx: Tensor, clip: Tensor, ent_coef: Tensor,
                   vf_coef: Tensor) -> MinibatchLoss:
    """Replay the sequences ``idx`` (P, b) from their stored states and compute PPO's loss on them: the clipped
    surrogate on advantages normalized per member and minibatch (``agent.normalize_advantage``), every critic's
    value loss (scalar, quantile Huber or categorical; clipped with ``agent.clip_range_vf``) and the entropy bonus.
    clip: (P, 1, 1); ent_coef, vf_coef: (P,)."""
    a, P, seg = policy.cfg.agent, policy.population, data.seg
    states = {n: tuple(take_envs(s, idx) for s in seg.initial_states[n]) for n in policy.state_names()}
    head, raws = policy.sequence(take_envs(seg.obs, idx), states, take_envs(seg.episode_starts, idx))
    new_logp, entropy = policy.log_prob_entropy(head, take_envs(seg.actions, idx))
    log_ratio = new_logp - take_envs(seg.log_probs, idx)
    ratio = log_ratio.exp()
    adv = take_envs(data.advantages, idx)
    if a.normalize_advantage:
        flat = adv.reshape(P, -1)
        adv = (adv - flat.mean(1).view(P, 1, 1)) / (flat.std(1).view(P, 1, 1) + 1e-8)
    pg_loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean((1, 2))
    target = take_envs(data.targets, idx)
    v_losses, v_mse, v_cvar = [], [], []
    for k, (critic, raw) in enumerate(zip(policy.critics, raws)):
        v_losses.append(critic.head.loss(raw, target, take_envs(data.old_values[k], idx), a.clip_range_vf).mean((1, 2)))
        with torch.no_grad():
            v_mse.append(((critic.head.value(raw) - target) ** 2).mean((1, 2)))
            v_cvar.append(critic.head.cvar(raw, a.critic.cvar_alpha).mean((1, 2)))
    v_loss = torch.stack(v_losses).sum(0)
    entropy_loss = -entropy.mean((1, 2))
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean((1, 2))
        clipfrac = ((ratio - 1).abs() > clip).float().mean((1, 2))
    return MinibatchLoss(pg_loss + ent_coef * entropy_loss + vf_coef * v_loss, pg_loss, v_loss, entropy_loss,
                         approx_kl, clipfrac, torch.stack(v_mse).mean(0), torch.stack(v_cvar).min(0).values, head)


def update(policy: PopulationPolicy, optimizer: PopulationAdam, rollout: Rollout,
           aux_losses: Sequence[AuxiliaryLoss] = ()) -> dict[str, Tensor]:
    """PPO's update epochs on one rollout, every member at once; returns metrics, each a (P,) tensor.

    The rollout is cut into S sequences of L steps (L = ``agent.bptt_length``, or the whole rollout: S = N). Per
    epoch, each member's sequences are permuted with its own generator and split into ``agent.num_minibatches``
    minibatches, replayed from their stored states (refreshed before every epoch but the first when L < T).
    """
    a, P, dev, hp = policy.cfg.agent, policy.population, policy.device, policy.hparam
    data = training_sequences(policy, rollout)
    T, L, S = rollout.obs.shape[1], data.seg.obs.shape[1], data.seg.obs.shape[2]
    clip = hp("clip_range").float().view(P, 1, 1)
    ent_coef, vf_coef = hp("ent_coef").float(), hp("vf_coef").float()
    lr, max_norm = hp("learning_rate").float(), hp("max_grad_norm").float()
    mb_size = S // a.num_minibatches
    params = [p for _, p in policy.trainable()]
    sums: dict[str, Tensor] = {}
    count = 0
    bad_loss = torch.zeros(P, dtype=torch.bool, device=dev)
    bad_grad = torch.zeros(P, dtype=torch.bool, device=dev)
    for epoch in range(a.update_epochs):
        if epoch > 0 and L < T:  # segments start from states at most one epoch old
            data.seg.initial_states = refresh_segment_states(policy, rollout, L)
        perms = torch.stack([torch.randperm(S, generator=g) for g in policy.generators]).to(dev)  # (P, S)
        for mb in range(a.num_minibatches):
            idx = perms[:, mb * mb_size:(mb + 1) * mb_size].contiguous()
            terms = minibatch_loss(policy, data, idx, clip, ent_coef, vf_coef)
            loss, aux_metrics = terms.loss, {}
            for aux in aux_losses:  # optional loss terms (SA-PPO's robust regularizer)
                term, extra = aux(policy, data.seg, idx, terms.head, epoch, mb)
                loss = loss + term
                aux_metrics.update(extra)

            # One gradient step per member: the members' losses are summed, so each gets its own gradient.
            for p in params:
                p.grad = None
            loss.sum().backward()
            stats: dict[str, Tensor] = {}
            if policy.vgs is not None:
                stats.update(policy.vgs.scale_({n: p.grad for n, p in policy.trainable() if p.grad is not None}))
            grad_norm = clip_grad_norm_per_member(params, max_norm)
            optimizer.step(lr)
            bad_loss |= ~torch.isfinite(loss.detach())
            bad_grad |= ~torch.isfinite(grad_norm)

            stats.update(terms.metrics(data.scale.view(P)))
            stats.update({"train/loss": loss.detach(), "train/grad_norm": grad_norm}, **aux_metrics)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0) + v.detach().double()
            count += 1
    policy.updates += 1
    return update_metrics(policy, rollout, data, {k: v / count for k, v in sums.items()}, bad_loss, bad_grad)


@torch.no_grad()
def update_metrics(policy: PopulationPolicy, rollout: Rollout, data: Sequences, means: dict[str, Tensor],
                   bad_loss: Tensor, bad_grad: Tensor) -> dict[str, Tensor]:
    """The update's metrics: the minibatch means ``means``, then explained variance, the learning rate and clip
    range in force, ``health/nonfinite`` (collection's flags, then loss, gradient and weights) and the rollout's
    observation outliers."""
    P, hp, params = policy.population, policy.hparam, [p for _, p in policy.trainable()]
    metrics = dict(means)
    y, yhat = data.returns.reshape(P, -1).double(), data.value_returns.reshape(P, -1).double()
    var_y = y.var(1)
    metrics["train/explained_variance"] = torch.where(var_y > 0, 1 - (y - yhat).var(1) / var_y,
                                                      torch.full_like(var_y, float("nan")))
    metrics["train/learning_rate"] = hp("learning_rate").clone()
    metrics["train/clip_range"] = hp("clip_range").clone()
    bad_weights = ~torch.stack([torch.isfinite(p.reshape(P, -1)).all(1) for p in params]).all(0)
    collected = rollout.nonfinite if rollout.nonfinite is not None else torch.zeros(P, dtype=torch.long,
                                                                                       device=policy.device)
    metrics["health/nonfinite"] = (collected | (bad_loss.long() << 2) | (bad_grad.long() << 3)
                                   | (bad_weights.long() << 4)).double()
    if rollout.obs_outliers is not None:
        metrics.update(rollout.obs_outliers.metrics())
    return metrics


def train_iteration(policy: PopulationPolicy, runner: EnvRunner, aux_losses: Sequence[AuxiliaryLoss] = ()
                    ) -> dict[str, Tensor]:
    """One PPO iteration: :func:`collect`, then :func:`update`. Returns (P,) metrics on the CPU, with the rollout
    statistics ``rollout/ep_rew_mean``, ``rollout/ep_len_mean`` (last 100 finished episodes) and ``time/fps``."""
    t0 = time.perf_counter()
    rollout = collect(policy, runner)
    metrics = update(policy, policy.optimizer, rollout, aux_losses)
    elapsed = time.perf_counter() - t0
    P = policy.population
    ep_rew = torch.full((P,), float("nan"), dtype=torch.float64)
    ep_len = torch.full((P,), float("nan"), dtype=torch.float64)
    for i in range(P):
        r = recent_values(policy.episode_returns, policy.episodes, i, 100)
        if len(r):
            ep_rew[i] = float(r.mean())
            ep_len[i] = float(recent_values(policy.episode_lengths, policy.episodes, i, 100).mean())
    metrics = {k: v.cpu() for k, v in metrics.items()}
    metrics["rollout/ep_rew_mean"] = ep_rew
    metrics["rollout/ep_len_mean"] = ep_len
    metrics["time/fps"] = torch.full((P,), runner.num_envs * rollout.obs.shape[1] / elapsed, dtype=torch.float64)
    return metrics


__all__ = ["AuxiliaryLoss", "MinibatchLoss", "Sequences", "collect", "minibatch_loss", "training_sequences", "update",
           "update_metrics", "train_iteration", "make_policy", "make_runner",
           "auxiliary_losses", "NONFINITE_QUANTITIES", "first_nonfinite"]
