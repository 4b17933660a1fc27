"""State-adversarial PPO (SA-PPO) for recurrent policies: observation attacks and the robust KL regularizer.

Follows Zhang et al. 2020, "Robust Deep Reinforcement Learning against Adversarial Perturbations on State
Observations" (NeurIPS 2020; reference code github.com/huanzhang12/SA_PPO): the policy is regularized by

    R(theta) = mean_t KL( pi(.|s_t) || pi(.|s_t + delta_t) ),   delta = argmax_{delta in B(eps)} of the same KL,

with the clean distribution detached and the gradient flowing through the perturbed branch; the inner maximization
is solved approximately by projected gradient ascent (PGD, Madry et al. 2018) or one signed step from a random start
(FGSM with random start, Wong et al. 2020 "Fast is better than free": the KL's gradient vanishes at delta = 0, so a
step from the clean point would not move).

**Recurrent policies.** An observation perturbation at step t changes the LSTM state, hence every later action.
Attacks therefore act on *whole replayed sequences*: the perturbed sequence is replayed through the actor from the
replay's stored initial (h, c) and with the replay's episode starts, exactly as training replays the clean sequence
(:class:`SequencePolicy` binds both; there is no way to call it without them), and the attack maximizes the mean KL
over the whole sequence, so delta_t is chosen knowing its effect on steps t..T. Online (evaluation), an attacker
sees one step at a time: :func:`make_obs_perturbation` attacks each step through the policy's *running* state (a
sequence of length 1 from the carried state), which the earlier perturbations already shaped.

**The ball.** Perturbations live in the space of *normalized* observations (what the networks see), one ball per
observation vector (the previous action and reward that a policy may also be fed are not perturbed): for every
member p, time step t and sequence n, ``delta[p, t, n]`` (a D-vector) satisfies ``||delta[p, t, n]||_inf <= eps_p``
(``linf``) or ``||delta[p, t, n]||_2 <= eps_p`` (``l2``), eps_p the member's current radius. Optional bounds
``low``/``high`` (normalized units) clip the perturbed observation; each bound is first widened to contain the clean
observation, so clipping only shrinks |delta| coordinate-wise and never leaves the ball. The learner clips to the
observation space's finite bounds and to the normalizer's clip range.

**Per member, schedulable, tunable.** ``adversarial.epsilon``, ``adversarial.robust_kl_coef`` and
``adversarial.ratio`` are per-member hyperparameters ((P,) buffers, searchable by PBT). The radius in force is
``schedule(progress) * epsilon`` with progress = member's ``env_steps`` / ``run.total_env_steps`` (clamped to
[0, 1]): ``constant`` -> 1, ``linear`` -> progress, ``cosine`` -> (1 - cos(pi * progress)) / 2 (SA-PPO ramps eps
from 0 linearly). The position is derived from the member's ``env_steps`` buffer, which is part of the member state,
so it moves with the member at an exploit and survives a resume; no mutable config is shared. ``warmup`` counts the
member's own ``updates``.

**Randomness.** Random starts and the random-noise baseline draw from a generator seeded by (member seed, member's
update count, call index within the update): stateless, so same config + seed gives the same run, a resumed run
continues identically, and the member's own sampling generator (minibatch permutations, actions) is never consumed
— with every member's radius 0 (or SA-PPO disabled) training is bit-identical to plain PPO.

Metrics per member (averaged over an update's minibatches): ``sa_ppo/robust_kl`` (the regularizer, mean KL at the
attack), ``sa_ppo/epsilon`` (radius in force), ``sa_ppo/attack_kl_gain`` (attack KL / KL of random noise with the
same per-vector norm as the attack's delta; NaN while inactive), ``sa_ppo/random_kl``, ``sa_ppo/value_diff`` (only
with ``value_coef > 0``), ``sa_ppo/active`` (1 when the regularizer was applied).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from rpbt.agent.networks import (
    LSTMState,
    TrunkWeights,
    kl_divergence,
    trunks_sequence,
)
from rpbt.agent.policy import PopulationPolicy
from rpbt.agent.rollout import take_envs
from rpbt.seeding import TAG_ADVERSARY_EVAL, TAG_ADVERSARY_TRAIN, noise_generators

ATTACKS = ("pgd", "fgsm")
NORMS = ("linf", "l2")
SCHEDULES = ("constant", "linear", "cosine")


# --------------------------------------------------------------------------------------------------- schedule


def schedule_factor(progress: Tensor, schedule: str) -> Tensor:
    """Fraction of the final radius in force at ``progress`` in [0, 1] (clamped): constant 1, linear p,
    cosine (1 - cos(pi p)) / 2. Raises ``ValueError`` for an unknown schedule."""
    p = progress.clamp(0.0, 1.0)
    if schedule == "constant":
        return torch.ones_like(p)
    if schedule == "linear":
        return p
    if schedule == "cosine":
        return 0.5 * (1.0 - torch.cos(math.pi * p))
    raise ValueError(f"agent.adversarial.epsilon_schedule must be one of {SCHEDULES}, got {schedule!r}")


def scheduled_epsilon(epsilon: Tensor, env_steps: Tensor, total_env_steps: int, schedule: str) -> Tensor:
    """Per-member radius in force, (P,) float64.

    epsilon: (P,) each member's final radius (``adversarial.epsilon``); env_steps: (P,) the member's env steps so
    far (its ``env_steps`` buffer, which includes the rollout being learned from); total_env_steps: the run's
    budget per member (> 0). Raises ``ValueError`` for a non-positive budget or unknown schedule.
    """
    if total_env_steps <= 0:
        raise ValueError(f"run.total_env_steps must be > 0 for an epsilon schedule, got {total_env_steps}")
    progress = env_steps.to(torch.float64) / float(total_env_steps)
    return epsilon.to(torch.float64) * schedule_factor(progress, schedule)


# --------------------------------------------------------------------------------------------------- policy


class SequencePolicy:
    """The actor of a population as a function of a whole observation sequence, bound to its replay context.

    Args:
        weights: the actor trunk's stacked weights (:func:`rpbt.agent.networks.stack_trunks` of ``[actor]``),
            differentiable in the parameters.
        head: the policy head (a :class:`rpbt.agent.networks.PolicyHead` or any callable), features (P, ..., H) ->
            (P, ..., A).
        state: initial actor state ((h, c), or (h,) for a GRU), each (P, L, b, H): the replay's stored state.
        starts: (P, T, b) episode starts of these sequences (the LSTM state is zeroed before a start).
        continuous: Box actions (Gaussian with state-independent ``log_std`` (P, A)) or categorical (logits).
        log_std: (P, A), Box only.
        nvec: MultiDiscrete: the K categoricals' sizes (the logits are their concatenation); None otherwise.
        extra: (P, T, b, E) inputs fed after the observation and never perturbed (the previous action features and
            reward, :meth:`rpbt.agent.policy.PopulationPolicy.network_input`); None when E = 0.

    ``policy(obs)`` with obs (P, T, b, D) normalized returns head outputs (P, T, b, A), replayed from ``state``.
    """

    def __init__(self, weights: TrunkWeights, head: Any, state: LSTMState, starts: Tensor, continuous: bool,
                 log_std: Optional[Tensor] = None, nvec: Optional[Sequence[int]] = None,
                 extra: Optional[Tensor] = None):
        if continuous and log_std is None:
            raise ValueError("a continuous policy needs its log_std (P, A)")
        self.weights, self.head, self.state, self.starts = weights, head, state, starts
        self.continuous, self.log_std, self.nvec = continuous, log_std, nvec
        self.extra = extra if extra is not None and extra.shape[-1] > 0 else None

    @classmethod
    def from_learner(cls, learner: PopulationPolicy, state: LSTMState, starts: Tensor, member: Optional[int] = None,
                     extra: Optional[Tensor] = None) -> "SequencePolicy":
        """The actor of a :class:`rpbt.agent.policy.PopulationPolicy` bound to ``state``, ``starts`` and the
        unperturbed ``extra`` inputs.

        With ``member`` (local index) only that member's weights are used (a population of one: state (1, L, b, H),
        starts (1, T, b)); otherwise the whole population's (state (P, L, b, H), starts (P, T, b)).
        """
        view = learner.actor_view(member)
        return cls(view.trunk, view.head, state, starts, view.continuous, view.log_std, view.nvec, extra)

    def __call__(self, obs: Tensor) -> Tensor:
        if obs.shape[:3] != self.starts.shape:
            raise ValueError(f"observations {tuple(obs.shape)} do not match the bound episode starts "
                             f"{tuple(self.starts.shape)} (P, T, b)")
        x = obs if self.extra is None else torch.cat([obs, self.extra], -1)
        features = trunks_sequence(self.weights, x, [self.state], self.starts)[0][0]
        return self.head(features)

    def kl(self, p_head: Tensor, q_head: Tensor) -> Tensor:
        """KL(p || q) per (P, T, b) (summed over a MultiDiscrete's components); for Box the (shared) log-std is
        detached, as SA-PPO does."""
        log_std = self.log_std.detach() if self.log_std is not None else None
        return kl_divergence(p_head, q_head, self.continuous, log_std, self.nvec)


# --------------------------------------------------------------------------------------------------- ball geometry


def _per_member(x: Union[Tensor, float], like: Tensor) -> Tensor:
    """A (P,) tensor or scalar as (P, 1, 1, 1) in like's dtype."""
    t = torch.as_tensor(x, dtype=like.dtype)
    if t.dim() == 0:
        t = t.expand(like.shape[0])
    if t.shape != (like.shape[0],):
        raise ValueError(f"expected one value per member (P={like.shape[0]}), got shape {tuple(t.shape)}")
    return t.reshape(-1, 1, 1, 1)


def _member_noise(shape: Sequence[int], generators: Sequence[torch.Generator], kind: str,
                  device: Optional[torch.device] = None) -> Tensor:
    """Noise of ``shape`` (P first) with member p's slice drawn from ``generators[p]`` (CPU), then moved to
    ``device``."""
    draw = torch.rand if kind == "uniform" else torch.randn
    return torch.stack([draw(tuple(shape[1:]), generator=g) for g in generators]).to(device)


def project(delta: Tensor, eps: Tensor, norm: str) -> Tensor:
    """Project each observation vector delta[..., :] into its ball of radius eps (P, 1, 1, 1)."""
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, eps), -eps)
    if norm == "l2":
        n = delta.norm(dim=-1, keepdim=True)
        return delta * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)
    raise ValueError(f"agent.adversarial.norm must be one of {NORMS}, got {norm!r}")


def _clip_bounds(delta: Tensor, obs: Tensor, low: Optional[Tensor], high: Optional[Tensor]) -> Tensor:
    """Clip so that obs + delta lies in [min(low, obs), max(high, obs)] (only shrinks |delta| per coordinate)."""
    if low is not None:
        delta = torch.maximum(delta, torch.minimum(low - obs, torch.zeros_like(obs)))
    if high is not None:
        delta = torch.minimum(delta, torch.maximum(high - obs, torch.zeros_like(obs)))
    return delta


def random_in_ball(shape: Sequence[int], eps: Tensor, norm: str, generators: Sequence[torch.Generator]) -> Tensor:
    """Uniform draws from each ball: linf U[-eps, eps]^D; l2 a Gaussian direction with radius eps * U^(1/D)."""
    if norm == "linf":
        return (2.0 * _member_noise(shape, generators, "uniform", eps.device) - 1.0) * eps
    if norm == "l2":
        g = _member_noise(shape, generators, "normal", eps.device)
        u = _member_noise(list(shape[:-1]) + [1], generators, "uniform", eps.device)
        return g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12) * eps * u.pow(1.0 / shape[-1])
    raise ValueError(f"agent.adversarial.norm must be one of {NORMS}, got {norm!r}")


def random_like_norm(delta: Tensor, norm: str, generators: Optional[Sequence[torch.Generator]] = None,
                     noise: Optional[Tensor] = None) -> Tensor:
    """Random perturbations with the same per-vector norm as ``delta``: linf random signs times ||delta||_inf;
    l2 a Gaussian direction scaled to ||delta||_2. The baseline of ``sa_ppo/attack_kl_gain``.

    ``noise`` (delta's shape): pre-drawn U[0, 1) (linf) or N(0, 1) (l2) values instead of draws from ``generators``.
    """
    if norm not in NORMS:
        raise ValueError(f"agent.adversarial.norm must be one of {NORMS}, got {norm!r}")
    if noise is None:
        if generators is None:
            raise ValueError("random_like_norm needs generators or pre-drawn noise")
        noise = _member_noise(delta.shape, generators, "uniform" if norm == "linf" else "normal", delta.device)
    noise = noise.to(delta.dtype)
    if norm == "linf":
        return torch.where(noise < 0.5, -1.0, 1.0).to(delta.dtype) * delta.abs().amax(-1, keepdim=True)
    return noise / noise.norm(dim=-1, keepdim=True).clamp_min(1e-12) * delta.norm(dim=-1, keepdim=True)


# --------------------------------------------------------------------------------------------------- attacks


@dataclass
class AttackResult:
    """delta: (P, T, b, D) the perturbation (no grad); kl: (P, T, b) KL(pi(.|s) || pi(.|s + delta)) at the end;
    clean_head: (P, T, b, A) the clean policy output the KL is measured against (detached)."""

    delta: Tensor
    kl: Tensor
    clean_head: Tensor


def default_step_size(epsilon: Tensor, attack: str, steps: int) -> Tensor:
    """PGD: 2.5 * eps / steps (Madry et al. 2018); FGSM: 1.25 * eps (Wong et al. 2020). Shape of ``epsilon``."""
    if attack == "pgd":
        return 2.5 * epsilon / steps
    if attack == "fgsm":
        return 1.25 * epsilon
    raise ValueError(f"agent.adversarial.attack must be one of {ATTACKS}, got {attack!r}")


def attack_sequences(policy: SequencePolicy, obs: Tensor, epsilon: Union[Tensor, float], *, attack: str = "pgd",
                     norm: str = "linf", steps: int = 10, step_size: Union[Tensor, float, None] = None,
                     random_start: bool = True, generators: Optional[Sequence[torch.Generator]] = None,
                     low: Optional[Tensor] = None, high: Optional[Tensor] = None,
                     clean_head: Optional[Tensor] = None, init_delta: Optional[Tensor] = None) -> AttackResult:
    """Find delta in each observation's ball maximizing the sequence's total KL(pi(.|s) || pi(.|s + delta)).

    Args:
        policy: the actor bound to the sequences' initial states and episode starts (:class:`SequencePolicy`).
        obs: (P, T, b, D) normalized clean observations.
        epsilon: (P,) per-member radius (or a scalar for all); 0 gives delta = 0 for that member.
        attack: ``pgd`` (``steps`` projected steps) or ``fgsm`` (one step from a random start; ``steps`` ignored).
        norm: ``linf`` (signed steps, box projection) or ``l2`` (normalized-gradient steps, radial projection).
        step_size: (P,) or scalar, absolute step in normalized units; default :func:`default_step_size`.
        random_start: start from a uniform draw in the ball (always on for FGSM: the KL gradient is 0 at delta 0).
        generators: one ``torch.Generator`` per member for the random start; required when ``random_start`` (or
            FGSM) and no ``init_delta`` is given (the global generator is never used, for reproducibility).
        low, high: optional bounds of the perturbed observation in normalized units, broadcastable to obs.
        clean_head: the clean policy output (P, T, b, A) if already computed (detached inside).
        init_delta: a given start (P, T, b, D) instead of a draw (projected into the ball and bounds first).

    Gradients flow only to delta (``torch.autograd.grad``), never into the parameters' ``.grad``. Works under
    ``torch.no_grad`` (gradient is enabled locally). Returns an :class:`AttackResult`.
    Raises ``ValueError`` for an unknown attack or norm, steps < 1, or a missing generator list.
    """
    if attack not in ATTACKS:
        raise ValueError(f"agent.adversarial.attack must be one of {ATTACKS}, got {attack!r}")
    if norm not in NORMS:
        raise ValueError(f"agent.adversarial.norm must be one of {NORMS}, got {norm!r}")
    if steps < 1:
        raise ValueError(f"agent.adversarial.steps must be >= 1, got {steps}")
    if attack == "fgsm":
        steps, random_start = 1, True
    if random_start and init_delta is None and (generators is None or len(generators) != obs.shape[0]):
        raise ValueError("a random start needs one torch.Generator per member")
    obs = obs.detach()
    eps = _per_member(epsilon, obs)
    alpha = _per_member(default_step_size(eps.view(-1), attack, steps) if step_size is None else step_size, obs)
    with torch.enable_grad():
        if clean_head is None:
            with torch.no_grad():
                clean_head = policy(obs)
        clean_head = clean_head.detach()
        if init_delta is not None:
            delta = init_delta.detach().to(obs.dtype)
        elif random_start:
            delta = random_in_ball(obs.shape, eps, norm, generators).to(obs.dtype)  # type: ignore[arg-type]
        else:
            delta = torch.zeros_like(obs)
        delta = _clip_bounds(project(delta, eps, norm), obs, low, high)
        for _ in range(steps):
            d = delta.detach().requires_grad_(True)
            objective = policy.kl(clean_head, policy(obs + d)).sum()
            (grad,) = torch.autograd.grad(objective, d)
            if norm == "linf":
                step = alpha * grad.sign()
            else:
                step = alpha * grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            delta = _clip_bounds(project(delta + step, eps, norm), obs, low, high).detach()
    with torch.no_grad():
        kl = policy.kl(clean_head, policy(obs + delta))
    return AttackResult(delta=delta, kl=kl, clean_head=clean_head)


def observation_bounds(env_cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """The raw observation space's (low, high), each (D,) float64 (may be infinite), from a probe environment."""
    from rpbt.envs.factory import make_vector_env

    probe = make_vector_env(env_cfg, 1)
    try:
        space = probe.single_observation_space
        return (np.asarray(space.low, dtype=np.float64).reshape(-1),
                np.asarray(space.high, dtype=np.float64).reshape(-1))
    finally:
        probe.close()


def normalized_bounds(learner: PopulationPolicy, low_raw: np.ndarray, high_raw: np.ndarray
                      ) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Bounds of valid normalized observations per member, each (P, 1, 1, D) or None.

    low_raw, high_raw: the raw observation space's bounds (D,) (see :func:`observation_bounds`).

    The observation space's finite bounds mapped through each member's normalizer, intersected with the
    normalizer's clip range ``agent.obs_clip`` (when observations are normalized). Infinite bounds stay open.
    """
    P, D = learner.population, learner.obs_dim
    normalize = learner.cfg.agent.normalize_observations
    clip = float(learner.cfg.agent.obs_clip)

    def one(raw: np.ndarray, sign: float) -> Optional[Tensor]:
        device = learner.obs_rms.mean.device
        finite = torch.as_tensor(np.isfinite(raw), device=device)
        val = torch.as_tensor(np.where(np.isfinite(raw), raw, 0.0), dtype=torch.float32, device=device)
        val = val.expand(P, 1, 1, D)
        if normalize:
            val = learner.obs_rms.normalize(val)  # clamps to +-obs_clip too
            out = torch.where(finite, val, torch.full_like(val, sign * clip))
            return out
        if not bool(finite.any()):
            return None
        return torch.where(finite, val, torch.full_like(val, sign * math.inf))

    return one(low_raw, -1.0), one(high_raw, 1.0)


# --------------------------------------------------------------------------------------------------- regularizer


class SAPPO:
    """The SA-PPO regularizer, an :class:`rpbt.agent.ppo.AuxiliaryLoss`: called per minibatch by
    :func:`rpbt.agent.ppo.update` with the epoch and minibatch index. Holds only the configuration.

    Per minibatch (idx (P, b) environments), for member p:
    radius eps_p = scheduled epsilon; k_p = ceil(ratio_p * b) sequences (the first k_p of the minibatch, which is a
    random permutation of the member's environments); active_p = eps_p > 0 and updates_p >= warmup and k_p > 0.
    The attack's random start (:func:`random_in_ball`) and the random-noise baseline are drawn for all b sequences
    and cut to the first kmax = max k_p, so a member's noise does not depend on the other members' ratios.
    The attack runs on those sequences from the replay's stored actor state, then

        robust_kl_p = sum over the k_p sequences and T steps of KL(pi(.|s) [detached] || pi(.|s + delta)) / (T k_p)
        loss_p      = robust_kl_coef_p * robust_kl_p + value_coef * mean (V(s + delta) - V(s) [detached])^2

    (values in normalized return units, averaged over critics; same delta). Inactive members get an exact 0 loss.
    When no member is active nothing is computed beyond the metrics.
    """

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.adv = cfg.agent.adversarial
        self.low_raw, self.high_raw = observation_bounds(cfg.env)

    def epsilon(self, learner: PopulationPolicy) -> Tensor:
        """(P,) float64 radius in force for each member (see :func:`scheduled_epsilon`)."""
        return scheduled_epsilon(learner.hparam("adversarial.epsilon"), learner.env_steps,
                                 self.cfg.run.total_env_steps, self.adv.epsilon_schedule)

    def _generators(self, learner: PopulationPolicy, call: int) -> list[torch.Generator]:
        """Generators of one call: keyed by (member seed, member's updates, index of the call within the update,
        from 1)."""
        return [noise_generators([s], TAG_ADVERSARY_TRAIN, int(u), call)[0]
                for s, u in zip(learner.seeds, learner.updates.tolist())]

    def __call__(self, learner: PopulationPolicy, rollout: Any, idx: Tensor, head: Tensor, epoch: int, minibatch: int
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss (P,) and metrics {key: (P,)} for minibatch ``minibatch`` of epoch ``epoch``.

        head: the clean replay's policy output (P, T, b, A) for the environments ``idx`` (P, b).
        """
        out = self.losses(learner, rollout, idx, head, epoch * self.cfg.agent.num_minibatches + minibatch + 1)
        return out.pop("loss"), out

    def losses(self, learner: PopulationPolicy, rollout: Any, idx: Tensor, head: Tensor, call: int = 1
               ) -> dict[str, Tensor]:
        """Loss ('loss') and metrics for one minibatch, every value (P,); ``call`` numbers the minibatches of the
        update from 1 (it keys the random starts). head: the clean replay's policy output."""
        P, T, b = head.shape[:3]
        device = head.device
        eps64 = self.epsilon(learner)
        eps = eps64.to(torch.float32)
        ratio = learner.hparam("adversarial.ratio")
        coef = learner.hparam("adversarial.robust_kl_coef").to(torch.float32)
        k = torch.ceil(ratio * b - 1e-9).clamp(0, b).to(torch.int64)
        active = (eps > 0) & (learner.updates >= self.adv.warmup) & (k > 0)
        zeros = torch.zeros(P, device=device)
        gens = self._generators(learner, call)
        out = {"loss": zeros, "sa_ppo/robust_kl": zeros, "sa_ppo/epsilon": eps64.clone(),
               "sa_ppo/attack_kl_gain": torch.full((P,), float("nan"), device=device), "sa_ppo/random_kl": zeros,
               "sa_ppo/active": active.float()}
        if self.adv.value_coef > 0:
            out["sa_ppo/value_diff"] = zeros
        if not bool(active.any()):
            return out

        kmax = int(k[active].max())
        sub = idx[:, :kmax]
        inputs = take_envs(rollout.obs, sub)  # (P, T, kmax, I): observations, then the unperturbed previous inputs
        obs, extra = inputs[..., :learner.obs_dim], inputs[..., learner.obs_dim:]
        starts = take_envs(rollout.episode_starts, sub)
        states = {n: tuple(take_envs(s, sub) for s in rollout.initial_states[n]) for n in learner.state_names()}
        clean = head[:, :, :kmax].detach()
        eps_eff = torch.where(active, eps, torch.zeros_like(eps))
        step_size = None if self.adv.step_size is None else float(self.adv.step_size)
        low, high = normalized_bounds(learner, self.low_raw, self.high_raw)
        policy = SequencePolicy.from_learner(learner, states["actor"], starts, extra=extra)
        # Noise is drawn for all b sequences of the minibatch and then cut to the first kmax, so a member's draws
        # do not depend on the other members' ratios (a member trains the same alone or batched).
        full = (P, T, b, obs.shape[-1])
        start = random_in_ball(full, eps_eff.view(P, 1, 1, 1), self.adv.norm, gens)[:, :, :kmax]
        res = attack_sequences(policy, obs, eps_eff, attack=self.adv.attack, norm=self.adv.norm,
                               steps=self.adv.steps, step_size=step_size, low=low, high=high,
                               clean_head=clean, init_delta=start)
        perturbed = obs + res.delta
        first_k = torch.arange(kmax, device=device).view(1, kmax) < k.view(P, 1)
        weight = (first_k & active.view(P, 1)).float()  # (P, kmax)
        denom = (T * k).clamp_min(1).float()

        def masked_mean(x: Tensor) -> Tensor:  # x (P, T, kmax) -> (P,)
            return (x * weight.view(P, 1, kmax)).sum((1, 2)) / denom

        value_diff = None
        if self.adv.value_coef > 0:
            pert_head, diffs = self._value_diffs(learner, inputs, perturbed, extra, states, starts)
            value_diff = masked_mean(diffs)
        else:
            pert_head = policy(perturbed)
        robust_kl = masked_mean(policy.kl(clean, pert_head))
        loss = coef * robust_kl
        if value_diff is not None:
            loss = loss + float(self.adv.value_coef) * value_diff
        loss = torch.where(active, loss, torch.zeros_like(loss))

        with torch.no_grad():
            draws = _member_noise(full, gens, "uniform" if self.adv.norm == "linf" else "normal", device)[:, :, :kmax]
            noise = _clip_bounds(random_like_norm(res.delta, self.adv.norm, noise=draws), obs, low, high)
            random_kl = masked_mean(policy.kl(clean, policy(obs + noise)))
            attack_kl = masked_mean(res.kl)
            gain = torch.where(active & (random_kl > 0), attack_kl / random_kl.clamp_min(1e-30),
                               torch.full_like(attack_kl, float("nan")))
        out.update({"loss": loss, "sa_ppo/robust_kl": robust_kl.detach(), "sa_ppo/attack_kl_gain": gain,
                    "sa_ppo/random_kl": random_kl})
        if value_diff is not None:
            out["sa_ppo/value_diff"] = value_diff.detach()
        return out


    @staticmethod
    def _value_diffs(learner: PopulationPolicy, inputs: Tensor, perturbed: Tensor, extra: Tensor,
                     states: dict[str, LSTMState], starts: Tensor) -> tuple[Tensor, Tensor]:
        """The policy head on the perturbed sequences (P, T, k, A) and the squared change of the critics' values
        (P, T, k), averaged over critics, between the perturbed and the clean (detached) inputs."""
        pert_inputs = torch.cat([perturbed, extra], -1) if extra.shape[-1] > 0 else perturbed
        pert_head, pert_raws = learner.sequence(pert_inputs, states, starts, fused=False)
        with torch.no_grad():
            _, clean_raws = learner.sequence(inputs, states, starts, actor=False, fused=False)
        diffs = []
        for critic, r_pert, r_clean in zip(learner.critics, pert_raws, clean_raws):
            diffs.append((critic.head.value(r_pert) - critic.head.value(r_clean).detach()) ** 2)
        assert pert_head is not None
        return pert_head, torch.stack(diffs).mean(0)


# --------------------------------------------------------------------------------------------------- evaluation


def make_obs_perturbation(attack: str, epsilon: float, norm: str = "linf", steps: int = 10,
                          step_size: Optional[float] = None, seed: int = 0, clip_to_bounds: bool = True) -> Any:
    """An ``obs_perturbation`` hook for :func:`rpbt.evaluation.policy.evaluate_members`: an online attack on every step.

    At each step the attacker sees the member's normalized observations (N, D) and the actor state the policy is
    about to consume ((h, c) or (h,), each (L, N, H)), and returns s + delta with delta from
    :func:`attack_sequences` on a length-1 sequence replayed from that state (the member's own weights only): it
    maximizes KL(pi(.|s, h) || pi(.|s + delta, h)), the "maximal action difference" attack of Zhang et al. 2020, with
    the same ball (per observation vector, radius ``epsilon`` in normalized units, ``norm``). Random starts are drawn
    from generators seeded by (``seed``, member, call index): the same evaluation gives the same attack.
    With ``clip_to_bounds`` the perturbed observation is kept inside the observation space's (normalized) bounds.

    Raises ``ValueError`` for an unknown attack or norm, a negative epsilon or steps < 1.
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack (--attack) must be one of {ATTACKS}, got {attack!r}")
    if norm not in NORMS:
        raise ValueError(f"norm (--norm) must be one of {NORMS}, got {norm!r}")
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon (--epsilon) must be a finite number >= 0, got {epsilon}")
    if steps < 1:
        raise ValueError(f"attack steps must be >= 1, got {steps}")
    calls: dict[int, int] = {}
    bounds: dict[int, Any] = {}

    def perturb(learner: PopulationPolicy, member: int, obs: Tensor, states: dict) -> Tensor:
        if epsilon == 0:
            return obs
        calls[member] = calls.get(member, 0) + 1
        n = obs.shape[0]
        prev = states.get("prev")
        policy = SequencePolicy.from_learner(learner, tuple(t.unsqueeze(0) for t in states["actor"]),
                                             torch.zeros(1, 1, n, dtype=torch.bool), member=member,
                                             extra=None if prev is None else prev.reshape(1, 1, n, prev.shape[-1]))
        low = high = None
        if clip_to_bounds:
            key = id(learner)
            if key not in bounds:
                bounds[key] = observation_bounds(learner.cfg.env)
            lo, hi = normalized_bounds(learner, *bounds[key])
            low = lo[member:member + 1] if lo is not None else None
            high = hi[member:member + 1] if hi is not None else None
        gens = noise_generators([seed], TAG_ADVERSARY_EVAL, member, calls[member])
        res = attack_sequences(policy, obs.detach().view(1, 1, n, -1), torch.tensor([float(epsilon)]),
                               attack=attack, norm=norm, steps=steps, step_size=step_size, generators=gens,
                               low=low, high=high)
        return (obs.detach() + res.delta.view(n, -1)).detach()

    return perturb
