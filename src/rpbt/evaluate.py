"""Deterministic evaluation of a member's policy: validation scores for PBT, and ``rpbt evaluate``.

Evaluation never changes the learner. A member's policy is run

- with the mode of its action distribution (argmax of the logits for ``Discrete``, the mean for ``Box``, clipped to
  the action bounds) unless ``deterministic=False``;
- through the *actor* LSTM with hidden states of its own, zeroed at the start of every evaluation episode (the
  training hidden states, carried across rollouts, are left alone);
- on observations normalized with the member's running statistics, which are *not* updated (as
  Stable-Baselines3's ``VecNormalize`` with ``training=False``);
- on fresh environments of the requested split, made from the run's ``env`` config by
  :func:`rpbt.envs.factory.make_env` (so observation noise and wrappers are those of training), seeded from
  ``seed`` only, so every member sees the same episodes (common random numbers) and the same member state always
  gives the same result. Nothing reads or advances the members' training ``torch.Generator`` (sampling with
  ``deterministic=False`` uses a generator of its own, seeded from ``seed``).

Episodes: for the trading environment an episode is a window of ``env.trading.episode_length`` bars starting at a
given bar (``starts``, default :func:`rpbt.envs.trading.episode_starts`: ``n`` evenly spaced starts over the
split's valid range); for any other environment ``episodes`` episodes, episode j reset with seed
``SeedSequence([seed, j])``. All episodes of all requested members run side by side, one batched policy step per
time step.

Adversarial hook (for SA-PPO, Zhang et al. 2020, in :mod:`rpbt.agent.adversary`): ``obs_perturbation`` is a
callable ``(learner, member, obs, states) -> obs'`` called at every step for every evaluated member, *after*
normalization and *before* the policy sees the observation:

- ``learner``: the :class:`~rpbt.agent.ppo.RecurrentPPO` being evaluated; ``member``: the member's local index in it
  (0..P-1, the index of every population tensor, *not* the global member id);
- ``obs``: ``(N, D)`` float32 normalized observations of that member's N evaluation episodes (rows of episodes
  that already ended carry their last observation; their output is ignored);
- ``states``: ``{"actor": (h, c)}``, each ``(L, N, H)``, the actor LSTM state the policy will consume together with
  ``obs`` at this step (already zeroed at episode starts), detached;
- returns the perturbed normalized observations, ``(N, D)``. The hook is called under ``torch.enable_grad()``, so
  a PGD / FGSM attack can differentiate through :func:`member_policy_head` (the member's policy on an observation
  and a state) with respect to the observation; the returned tensor is detached before use. The perturbation is
  in normalized units (what the network sees), the space SA-PPO's epsilon ball is defined in.

Trading metrics (:func:`trading_metrics`) are computed from per-bar log returns and position changes; see its
docstring for the exact definitions (Sharpe ratio annualized with ``MarketData.bars_per_year``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from rpbt.config import EnvConfig
from rpbt.seeding import eval_episode_seeds

__all__ = [
    "EpisodeTrace",
    "EvaluationResult",
    "ObsPerturbation",
    "evaluate_members",
    "evaluate_policy",
    "evaluate_run",
    "evaluate_trading_split",
    "load_member",
    "member_policy_head",
    "trading_metrics",
    "whole_split_env_config",
]

ObsPerturbation = Callable[[Any, int, Tensor, dict], Tensor]
DEFAULT_MAX_EPISODE_STEPS = 100_000


# --------------------------------------------------------------------------------------------------- results


@dataclass
class EpisodeTrace:
    """One evaluation episode of one member.

    ``rewards`` (T,) float64; ``actions`` (T,) int64 for Discrete or (T, A) float32 for Box (what the env received);
    ``terminated`` / ``truncated`` as the env reported at the last step (``truncated`` is also set when
    ``max_steps`` cut the episode). Trading only (None otherwise): ``start`` the first decision bar (absolute index);
    ``bars`` (T+1,) int64 absolute index of the bar at each equity point (``bars[0] = start``);
    ``equity`` (T+1,) float64 account equity, ``equity[0] = 1``; ``positions`` (T+1,) float64 position held after
    each step (``positions[0] = 0``); ``turnover`` (T,) ``|p' - p|`` of each step; ``asset_returns`` (T,) simple
    return of the asset over each step.
    """

    rewards: np.ndarray
    actions: np.ndarray
    terminated: bool = False
    truncated: bool = False
    start: Optional[int] = None
    bars: Optional[np.ndarray] = None
    equity: Optional[np.ndarray] = None
    positions: Optional[np.ndarray] = None
    turnover: Optional[np.ndarray] = None
    asset_returns: Optional[np.ndarray] = None

    @property
    def total_return(self) -> float:
        """Sum of rewards (trading: total log return, the log of final equity)."""
        return float(np.sum(self.rewards))

    @property
    def length(self) -> int:
        return int(len(self.rewards))


@dataclass
class EvaluationResult:
    """A member's evaluation: ``member`` (local index), ``split``, and one :class:`EpisodeTrace` per episode."""

    member: int
    split: str
    episodes: list[EpisodeTrace] = field(default_factory=list)

    @property
    def returns(self) -> list[float]:
        """Per-episode returns (sum of rewards), in episode order."""
        return [ep.total_return for ep in self.episodes]

    @property
    def lengths(self) -> list[int]:
        return [ep.length for ep in self.episodes]


# --------------------------------------------------------------------------------------------------- policy


def _padded(learner, rows: dict[int, Tensor], shape: tuple[int, ...]) -> Tensor:
    out = torch.zeros((learner.population,) + shape)
    for m, x in rows.items():
        out[m] = x
    return out


def member_policy_head(learner, member: int, obs: Tensor, state: tuple[Tensor, Tensor]) -> Tensor:
    """Member ``member``'s policy head output on normalized observations ``obs`` (N, D) from actor state ``state``
    ((h, c), each (L, N, H)): logits (N, A) for Discrete, means (N, A) for Box.

    Differentiable with respect to ``obs`` (and the weights) when called with gradients enabled: for attacks that
    maximize the policy change over an epsilon ball (SA-PPO). Runs the learner's own modules on a population batch
    in which the other members' rows are zero (the population is a batch, so this costs one small forward).
    """
    P = learner.population
    n, d = obs.shape
    full_obs = torch.cat([torch.zeros(member, n, d), obs.unsqueeze(0), torch.zeros(P - member - 1, n, d)])
    h, c = state
    hz = torch.zeros((P,) + tuple(h.shape))
    h_full, c_full = hz.clone(), hz.clone()
    h_full[member], c_full[member] = h, c
    feats, _ = learner.actor.step(full_obs, (h_full, c_full), torch.zeros(P, n, dtype=torch.bool))
    return learner.policy_head(feats)[member]


def _make_env(env_cfg: EnvConfig, split: str):
    from rpbt.envs.factory import make_env

    return make_env(env_cfg, split)


def _eval_seeds(seed: int, n: int) -> list[int]:
    return eval_episode_seeds(seed, n)


def _trading_starts(env_cfg: EnvConfig, split: str, n: int) -> list[int]:
    from rpbt.envs.trading import episode_starts, make_trading_env

    probe = make_trading_env(env_cfg, split=split)
    return episode_starts(probe.splits[split], probe.window, probe.episode_length, n)


@torch.no_grad()
def evaluate_members(
    learner,
    members: Sequence[int],
    env_cfg: EnvConfig,
    split: str = "validation",
    episodes: Optional[int] = None,
    starts: Optional[Sequence[int]] = None,
    deterministic: bool = True,
    obs_perturbation: Optional[ObsPerturbation] = None,
    seed: int = 0,
    max_steps: int = DEFAULT_MAX_EPISODE_STEPS,
) -> dict[int, EvaluationResult]:
    """Evaluate several members of ``learner`` at once (one batched policy step per time step).

    Args:
        learner: a :class:`rpbt.agent.ppo.RecurrentPPO` (not modified).
        members: local member indices (0..P-1) to evaluate; duplicates are not allowed.
        env_cfg: the ``env`` section to build evaluation environments from (usually ``learner.cfg.env``).
        split: ``train`` / ``validation`` / ``test`` (trading; ignored by other environments).
        episodes: number of episodes per member. Trading: evenly spaced starts over the split (default
            ``env.trading.eval_episodes``); other envs: default 10.
        starts: trading only: explicit start bars (absolute indices), one episode each; overrides ``episodes``.
        deterministic: mode of the action distribution (True) or a sample from it (own generator from ``seed``).
        obs_perturbation: the adversarial hook described in the module docstring, or None.
        seed: seeds the evaluation environments (and sampling); the same for every member.
        max_steps: an episode still running after this many steps is cut (``truncated`` set).

    Returns ``{member: EvaluationResult}``. Raises ``ValueError`` for unknown/duplicate members, ``starts`` with a
    non-trading env, ``episodes < 1``, or a start outside the split (from the trading env).
    """
    members = [int(m) for m in members]
    P = learner.population
    if len(set(members)) != len(members) or any(not 0 <= m < P for m in members):
        raise ValueError(f"members must be distinct local indices in 0..{P - 1}, got {members}")
    trading = env_cfg.id == "trading"
    if starts is not None:
        if not trading:
            raise ValueError("starts= applies to the trading environment only (env.id: trading)")
        starts = [int(s) for s in starts]
        n_eps = len(starts)
    else:
        n_eps = int(episodes if episodes is not None else (env_cfg.trading.eval_episodes if trading else 10))
        if n_eps < 1:
            raise ValueError(f"need at least one evaluation episode, got episodes={episodes}")
        if trading:
            starts = _trading_starts(env_cfg, split, n_eps)
    if n_eps < 1:
        raise ValueError("need at least one evaluation episode (starts is empty)")
    seeds = _eval_seeds(seed, n_eps)
    M, N, D = len(members), n_eps, learner.obs_dim
    continuous = learner.continuous
    sample_gen = None if deterministic else torch.Generator().manual_seed(int(seeds[0]))

    # One environment per (member, episode).
    envs = [[_make_env(env_cfg, split) for _ in range(N)] for _ in members]
    raw = torch.zeros(M, N, D)
    traces: list[list[dict[str, list]]] = [[{"rewards": [], "actions": []} for _ in range(N)] for _ in members]
    done = np.zeros((M, N), dtype=bool)
    flags = np.zeros((M, N, 2), dtype=bool)  # terminated, truncated
    for i in range(M):
        for j in range(N):
            options = {"start": starts[j]} if trading else None
            obs, info = envs[i][j].reset(seed=seeds[j], options=options)
            raw[i, j] = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(-1))
            if trading:
                tr = traces[i][j]
                tr.update(start=int(info["bar"]), bars=[int(info["bar"])], equity=[float(info["equity"])],
                          positions=[float(info["position"])], turnover=[], asset_returns=[])

    h, c = learner.actor.lstm.initial_state(N)  # (P, L, N, H), zero: every episode starts now
    low, high = learner.action_info["low"], learner.action_info["high"]
    normalize = learner.cfg.agent.normalize_observations
    while not done.all():
        full_raw = _padded(learner, {m: raw[i] for i, m in enumerate(members)}, (N, D))
        obs = learner.obs_rms.normalize(full_raw) if normalize else full_raw  # statistics are not updated
        if obs_perturbation is not None:
            obs = obs.clone()
            for m in members:
                with torch.enable_grad():
                    out = obs_perturbation(learner, m, obs[m].clone(), {"actor": (h[m].clone(), c[m].clone())})
                out = torch.as_tensor(out).detach().to(torch.float32)
                if out.shape != (N, D):
                    raise ValueError(f"obs_perturbation returned shape {tuple(out.shape)}, expected {(N, D)}")
                obs[m] = out
        feats, (h, c) = learner.actor.step(obs, (h, c), torch.zeros(P, N, dtype=torch.bool))
        head = learner.policy_head(feats)  # (P, N, A)
        for i, m in enumerate(members):
            hm = head[m]
            if continuous:
                act = hm
                if sample_gen is not None:
                    std = learner.policy_head.log_std[m].exp()
                    act = hm + std * torch.randn(hm.shape, generator=sample_gen)
                act_np = np.clip(act.numpy().astype(np.float32), low, high)
            elif sample_gen is not None:
                act_np = torch.multinomial(torch.softmax(hm, -1), 1, generator=sample_gen).squeeze(-1).numpy()
            else:
                act_np = hm.argmax(-1).numpy()
            for j in range(N):
                if done[i, j]:
                    continue
                a = act_np[j]
                obs_j, reward, term, trunc, info = envs[i][j].step(a if continuous else int(a))
                tr = traces[i][j]
                tr["rewards"].append(float(reward))
                tr["actions"].append(np.array(a, copy=True))
                if trading:
                    tr["bars"].append(int(info["bar"]))
                    tr["equity"].append(float(info["equity"]))
                    tr["positions"].append(float(info["position"]))
                    tr["turnover"].append(float(info["turnover"]))
                    tr["asset_returns"].append(float(info["asset_return"]))
                raw[i, j] = torch.as_tensor(np.asarray(obs_j, dtype=np.float32).reshape(-1))
                cut = len(tr["rewards"]) >= max_steps
                if term or trunc or cut:
                    done[i, j] = True
                    flags[i, j] = (bool(term), bool(trunc) or (cut and not term))
    for row in envs:
        for env in row:
            env.close()

    out: dict[int, EvaluationResult] = {}
    for i, m in enumerate(members):
        result = EvaluationResult(member=m, split=split)
        for j in range(N):
            tr = traces[i][j]
            acts = np.stack(tr["actions"]) if tr["actions"] else np.zeros((0,))
            ep = EpisodeTrace(rewards=np.asarray(tr["rewards"], dtype=np.float64),
                              actions=acts.astype(np.float32 if continuous else np.int64),
                              terminated=bool(flags[i, j, 0]), truncated=bool(flags[i, j, 1]))
            if trading:
                ep.start = tr["start"]
                ep.bars = np.asarray(tr["bars"], dtype=np.int64)
                ep.equity = np.asarray(tr["equity"], dtype=np.float64)
                ep.positions = np.asarray(tr["positions"], dtype=np.float64)
                ep.turnover = np.asarray(tr["turnover"], dtype=np.float64)
                ep.asset_returns = np.asarray(tr["asset_returns"], dtype=np.float64)
            result.episodes.append(ep)
        out[m] = result
    return out


def evaluate_policy(
    learner,
    member: int,
    env_cfg: EnvConfig,
    split: str = "validation",
    episodes: Optional[int] = None,
    starts: Optional[Sequence[int]] = None,
    deterministic: bool = True,
    obs_perturbation: Optional[ObsPerturbation] = None,
    seed: int = 0,
    max_steps: int = DEFAULT_MAX_EPISODE_STEPS,
) -> EvaluationResult:
    """Evaluate one member (local index ``member``) of ``learner``; see :func:`evaluate_members` for the arguments.

    ``result.returns`` are the per-episode returns (trading: total log returns); for trading every episode also
    carries its equity curve and positions (:class:`EpisodeTrace`).
    """
    return evaluate_members(learner, [member], env_cfg, split, episodes=episodes, starts=starts,
                            deterministic=deterministic, obs_perturbation=obs_perturbation, seed=seed,
                            max_steps=max_steps)[int(member)]


# --------------------------------------------------------------------------------------------------- loading


def load_member(run_dir: Union[str, Path], member: int):
    """Rebuild member ``member`` of a run from its latest committed checkpoint.

    Reads ``RUN_DIR/config.yaml`` and ``RUN_DIR/checkpoints/runner.json`` (whose ``checkpoint_dir`` names the round
    folder of the last commit; a run directory without it falls back to ``checkpoints/member_<i>.pt``) and restores
    ``member_<member>.pt`` (``torch.load(weights_only=True)`` via :meth:`MemberState.load`) into a fresh learner
    holding that one member (local index 0, global id ``member``, no training environments).

    Returns ``(cfg, learner)``. Raises :class:`rpbt.run.rundir.RunDirError` for a missing config / runner state or a
    member outside ``0..population_size-1``, :class:`rpbt.checkpoint.CheckpointError` for a missing or unfitting
    checkpoint (both name the file).
    """
    from rpbt.agent.ppo import RecurrentPPO
    from rpbt.checkpoint import MemberState, naming_checkpoint
    from rpbt.run.rundir import RunDirectory, RunDirError, load_run_config

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    P = cfg.pbt.population_size
    member = int(member)
    if not 0 <= member < P:
        raise RunDirError(f"{run_dir / 'config.yaml'}: member {member} does not exist; the population has members "
                          f"0..{P - 1}")
    rundir = RunDirectory(run_dir, P, tensorboard=False)
    state = rundir.read_runner_state()
    folder = state.get("checkpoint_dir")
    ckpt_dir = rundir.checkpoint_dir / folder if folder else rundir.checkpoint_dir
    ms = MemberState.load(ckpt_dir / f"member_{member}.pt")
    learner = RecurrentPPO(cfg, [member], make_envs=False)
    with naming_checkpoint(ckpt_dir / f"member_{member}.pt", run_dir / "config.yaml"):  # a "does not fit" error
        learner.restore(0, ms)
    learner.eval()
    return cfg, learner


# --------------------------------------------------------------------------------------------------- trading metrics


def trading_metrics(log_returns: Sequence[float], turnover: Sequence[float], bars_per_year: float) -> dict[str, Any]:
    """Performance of one equity curve from its per-bar log returns.

    Args:
        log_returns: ``r_t = log(equity_{t+1} / equity_t)``, shape (T,), costs included (the trading env's rewards).
        turnover: ``|p'_t - p_t|`` traded at each step, shape (T,), in units of equity.
        bars_per_year: bars per year of the data (``MarketData.bars_per_year``), > 0.

    Returns a dict (floats; ``None`` where undefined):

    - ``total_log_return`` = sum r_t = log(final equity); ``final_equity`` = exp of it;
    - ``annualized_log_return`` = mean(r) * bars_per_year;
    - ``annualized_volatility`` = std(r, ddof=1) * sqrt(bars_per_year);
    - ``sharpe`` = sqrt(bars_per_year) * mean(r) / std(r, ddof=1) (zero risk-free rate, per-bar log returns;
      Sharpe 1994 / Lo 2002 annualization); 0 when every r_t is 0 (flat), None when T < 2 or the std is 0 with a
      non-zero mean;
    - ``max_drawdown`` = max_t (1 - equity_t / max_{s<=t} equity_s) over the curve including equity_0 = 1, a
      fraction in [0, 1];
    - ``turnover`` = sum_t |p'_t - p_t| (total traded, in units of equity); ``turnover_per_year`` = turnover *
      bars_per_year / T;
    - ``bars`` = T, ``years`` = T / bars_per_year.

    Raises ``ValueError`` for mismatched lengths, T = 0, non-finite values or bars_per_year <= 0.
    """
    r = np.asarray(log_returns, dtype=np.float64).reshape(-1)
    tv = np.asarray(turnover, dtype=np.float64).reshape(-1)
    if r.shape != tv.shape:
        raise ValueError(f"log_returns {r.shape} and turnover {tv.shape} must have the same length")
    if r.size == 0:
        raise ValueError("need at least one bar of returns")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(tv))):
        raise ValueError("log_returns and turnover must be finite")
    if not (math.isfinite(bars_per_year) and bars_per_year > 0):
        raise ValueError(f"bars_per_year must be > 0, got {bars_per_year}")
    T = r.size
    log_equity = np.concatenate([[0.0], np.cumsum(r)])
    equity = np.exp(log_equity)
    peak = np.maximum.accumulate(equity)
    drawdown = 1.0 - equity / peak
    mean = float(r.mean())
    std = float(r.std(ddof=1)) if T >= 2 else float("nan")
    if T < 2:
        sharpe: Optional[float] = None
    elif std > 0:
        sharpe = math.sqrt(bars_per_year) * mean / std
    else:
        sharpe = 0.0 if mean == 0.0 else None
    total = float(log_equity[-1])
    return {
        "total_log_return": total,
        "final_equity": float(math.exp(total)),
        "annualized_log_return": mean * bars_per_year,
        "annualized_volatility": std * math.sqrt(bars_per_year) if T >= 2 else None,
        "sharpe": sharpe,
        "max_drawdown": float(drawdown.max()),
        "turnover": float(tv.sum()),
        "turnover_per_year": float(tv.sum()) * bars_per_year / T,
        "bars": int(T),
        "years": T / bars_per_year,
    }


def whole_split_env_config(env_cfg: EnvConfig, split: str) -> tuple[EnvConfig, int]:
    """An ``env`` config whose single episode spans ``split`` from its first decidable bar to its last bar.

    The episode starts at ``split.start + window`` (the first bar with a full observation window) and runs
    ``episode_length = split.stop - 1 - start`` steps, so its last step is rewarded with the split's last bar.
    ``equity_floor`` is set to 0 so a drawdown does not cut the report short (only a wipe-out ends it early).
    Returns ``(config, start)``. Raises ``ValueError`` when the split has fewer than ``window + 2`` bars.
    """
    from rpbt.envs.market_data import SPLIT_NAMES, walk_forward_split
    from rpbt.envs.trading import load_market_data

    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
    data = load_market_data(env_cfg.data)
    sl = walk_forward_split(len(data), tuple(env_cfg.data.split))[split]
    window = int((env_cfg.kwargs or {}).get("window", env_cfg.trading.window))
    start = sl.start + window
    length = sl.stop - 1 - start
    if length < 1:
        raise ValueError(f"the {split} split has {sl.stop - sl.start} bars; evaluating over it needs at least "
                         f"window + 2 = {window + 2}")
    trading = env_cfg.trading.model_copy(update={"episode_length": length, "equity_floor": 0.0})
    kwargs = {k: v for k, v in (env_cfg.kwargs or {}).items()
              if k not in ("episode_length", "equity_floor", "deterministic_start")}
    return env_cfg.model_copy(update={"trading": trading, "kwargs": kwargs}), start


def _constant_position_trace(env_cfg: EnvConfig, split: str, start: int, position: float) -> EpisodeTrace:
    """Hold ``position`` (-1, 0 or +1 / any in [-1, 1] for continuous) over the episode at ``start``."""
    from rpbt.envs.trading import DISCRETE_POSITIONS, make_trading_env

    env = make_trading_env(env_cfg, split=split)
    if env.action_kind == "discrete":
        action: Any = int(np.flatnonzero(DISCRETE_POSITIONS == position)[0])
    else:
        action = np.array([position], dtype=np.float32)
    _, info = env.reset(options={"start": start})
    rewards, turnover, bars, equity, positions = [], [], [info["bar"]], [info["equity"]], [info["position"]]
    done = False
    while not done:
        _, reward, term, trunc, info = env.step(action)
        rewards.append(reward)
        turnover.append(info["turnover"])
        bars.append(info["bar"])
        equity.append(info["equity"])
        positions.append(info["position"])
        done = term or trunc
    return EpisodeTrace(rewards=np.asarray(rewards), actions=np.zeros(0), terminated=bool(term),
                        truncated=bool(trunc), start=start, bars=np.asarray(bars), equity=np.asarray(equity),
                        positions=np.asarray(positions), turnover=np.asarray(turnover))


def evaluate_trading_split(learner, member: int, env_cfg: EnvConfig, split: str = "test",
                           obs_perturbation: Optional[ObsPerturbation] = None) -> dict[str, Any]:
    """Run member ``member`` deterministically over the whole ``split`` as one episode and compare with baselines.

    The episode is :func:`whole_split_env_config`'s: from the split's first decidable bar to its last, hidden state
    zeroed once at the start and carried through (as a live trader would), no equity floor. Buy-and-hold (long +1
    from the first bar, paying the entry cost) and flat (position 0) are run through the same environment and
    accounting. Returns a JSON-able dict: ``policy``, ``buy_and_hold``, ``flat`` (each :func:`trading_metrics`),
    ``split``, ``start_bar``, ``end_bar``, ``start_date``, ``end_date``, ``bars_per_year``, ``cost_bps``,
    ``terminated`` (the policy's account was wiped out) and ``curves`` (``dates``, ``policy``, ``buy_and_hold``,
    ``flat`` equity and the policy's ``position``, each of length T+1).
    """
    from rpbt.envs.trading import load_market_data

    cfg_w, start = whole_split_env_config(env_cfg, split)
    data = load_market_data(env_cfg.data)
    bpy = float(data.bars_per_year)
    ep = evaluate_policy(learner, member, cfg_w, split, starts=[start], obs_perturbation=obs_perturbation).episodes[0]
    bh = _constant_position_trace(cfg_w, split, start, 1.0)
    flat = _constant_position_trace(cfg_w, split, start, 0.0)
    # Baselines span the whole split; the policy's curve is shorter only if its account was wiped out.
    dates = [str(np.datetime_as_string(data.dates[b], unit="s")) for b in bh.bars]
    return {
        "split": split,
        "start_bar": int(bh.bars[0]),
        "end_bar": int(bh.bars[-1]),
        "start_date": dates[0],
        "end_date": dates[-1],
        "bars_per_year": bpy,
        "cost_bps": float(cfg_w.trading.cost_bps),
        "terminated": bool(ep.terminated),
        "policy": trading_metrics(ep.rewards, ep.turnover, bpy),
        "buy_and_hold": trading_metrics(bh.rewards, bh.turnover, bpy),
        "flat": trading_metrics(flat.rewards, flat.turnover, bpy),
        "curves": {
            "dates": dates,
            "policy": ep.equity.tolist(),
            "buy_and_hold": bh.equity.tolist(),
            "flat": flat.equity.tolist(),
            "position": ep.positions.tolist(),
        },
    }


def plot_equity_curves(report: dict[str, Any], path: Path, title: str) -> None:
    """Write a PNG: equity of the policy, buy-and-hold and flat (top) and the policy's position (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = report["curves"]
    x = np.asarray(curves["dates"], dtype="datetime64[s]")
    fig, (ax, axp) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    labels = {"policy": "policy", "buy_and_hold": "buy and hold", "flat": "flat"}
    for key, label in labels.items():
        m = report[key]
        ax.plot(x[: len(curves[key])], curves[key], label=f"{label} (log return {m['total_log_return']:+.3f})")
    ax.set_ylabel("equity (start = 1)")
    ax.set_title(title)
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    axp.step(x[: len(curves["position"])], curves["position"], where="post", color="C0")
    axp.set_ylabel("position")
    axp.set_ylim(-1.1, 1.1)
    axp.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------- rpbt evaluate


def _best_member(run_dir: Path) -> int:
    from rpbt.run.rundir import RunDirError

    path = run_dir / "summary.json"
    if not path.is_file():
        raise RunDirError(f"{path}: not found (no completed round); pass --member ID")
    try:
        best = json.loads(path.read_text()).get("best_member")
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path}: not valid JSON ({err})") from None
    if best is None:
        raise RunDirError(f"{path}: no best_member (no member has a score yet); pass --member ID")
    return int(best)


def evaluate_run(run_dir: Union[str, Path], member: Optional[int] = None, split: str = "test",
                 episodes: Optional[int] = None, seed: Optional[int] = None) -> tuple[dict[str, Any], Path, Optional[Path]]:
    """``rpbt evaluate``: evaluate a member of a finished (or interrupted) run and write the results.

    ``member`` defaults to ``summary.json``'s ``best_member``. Trading runs: :func:`evaluate_trading_split` over
    the whole ``split`` (``episodes`` must be None), writing ``RUN_DIR/evaluation/<split>_member<ID>.json`` and
    ``.png`` (equity curves). Other environments: ``episodes`` (default 10) deterministic episodes seeded from
    ``seed`` (default ``run.seed``), reporting ``mean_return``, ``std_return`` (population std, ddof=0),
    ``returns`` and ``lengths``; JSON only.

    Returns ``(report, json_path, png_path or None)``. Raises ``RunDirError`` / ``CheckpointError`` (see
    :func:`load_member`) and ``ValueError`` for ``episodes`` with a trading run, ``episodes < 1`` or a bad split.
    """
    from rpbt.checkpoint import atomic_write_text
    from rpbt.envs.market_data import SPLIT_NAMES

    run_dir = Path(run_dir)
    if split not in SPLIT_NAMES:
        raise ValueError(f"--split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
    if member is None:
        member = _best_member(run_dir)
    cfg, learner = load_member(run_dir, member)
    out_dir = run_dir / "evaluation"
    json_path = out_dir / f"{split}_member{member}.json"
    png_path: Optional[Path] = None
    head = {"run_dir": str(run_dir), "member": int(member), "env_id": cfg.env.id,
            "env_steps": int(learner.env_steps[0]), "updates": int(learner.updates[0])}
    if cfg.env.id == "trading":
        if episodes is not None:
            raise ValueError("--episodes does not apply to a trading run: it is evaluated as one episode over the "
                             "whole split")
        report = {**head, "data": cfg.env.data.source if cfg.env.data.source != "csv" else cfg.env.data.path,
                  **evaluate_trading_split(learner, 0, cfg.env, split)}
        png_path = out_dir / f"{split}_member{member}.png"
        plot_equity_curves(report, png_path, f"member {member}, {split} split ({report['start_date'][:10]} to "
                                             f"{report['end_date'][:10]}), cost {report['cost_bps']:g} bp")
    else:
        n = 10 if episodes is None else int(episodes)
        if n < 1:
            raise ValueError(f"--episodes must be >= 1, got {n}")
        s = cfg.run.seed if seed is None else int(seed)
        result = evaluate_policy(learner, 0, cfg.env, split, episodes=n, seed=s)
        rets = np.asarray(result.returns)
        report = {**head, "split": split, "episodes": n, "seed": s, "deterministic": True,
                  "mean_return": float(rets.mean()), "std_return": float(rets.std()),
                  "returns": rets.tolist(), "lengths": result.lengths}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(report, indent=1, allow_nan=False))
    return report, json_path, png_path
