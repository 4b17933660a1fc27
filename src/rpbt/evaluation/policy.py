"""Deterministic evaluation of a member's policy: validation scores for PBT, and ``rpbt evaluate``'s episodes.

Evaluation never changes the learner. A member's policy is run

- with the mode of its action distribution (argmax of the logits for ``Discrete``, of each component's logits for
  ``MultiDiscrete``, the mean for ``Box``, clipped to the action bounds) unless ``deterministic=False``;
- through the *actor* LSTM with hidden states of its own, zeroed at the start of every evaluation episode (the
  training hidden states, carried across rollouts, are left alone);
- on observations normalized with the member's running statistics, which are *not* updated (as
  Stable-Baselines3's ``VecNormalize`` with ``training=False``), followed by the previous action and reward when
  the member was trained with them (zero at each episode's first step);
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

- ``learner``: the :class:`~rpbt.agent.policy.PopulationPolicy` being evaluated; ``member``: the member's local
  index in it
  (0..P-1, the index of every population tensor, *not* the global member id);
- ``obs``: ``(N, D)`` float32 normalized observations of that member's N evaluation episodes (rows of episodes
  that already ended carry their last observation; their output is ignored);
- ``states``: ``{"actor": (h, c)}`` (``(h,)`` for a GRU), each ``(L, N, H)``, the actor's recurrent state the policy
  will consume together with
  ``obs`` at this step (already zeroed at episode starts), detached; for a member fed previous actions or rewards
  also ``"prev"``: ``(N, E)``, the previous action features and reward fed after ``obs`` (not to be perturbed);
- returns the perturbed normalized observations, ``(N, D)``. The hook is called under ``torch.enable_grad()``, so
  a PGD / FGSM attack can differentiate through :func:`member_policy_head` (the member's policy on an observation
  and a state) with respect to the observation; the returned tensor is detached before use. The perturbation is
  in normalized units (what the network sees), the space SA-PPO's epsilon ball is defined in; the previous action
  and reward are not perturbed.

Video: with ``video_dir``, every evaluation environment is made with ``render_mode="rgb_array"`` and wrapped in
Gymnasium's ``RecordVideo`` (one MP4 per episode, ``member<ID>-episode<j>.mp4``, :func:`video_path`; needs
``moviepy``, the ``rpbt[video]`` extra); :func:`check_renders` says why an environment cannot be recorded.

Trading accounting (metrics, whole-split evaluation against baselines) is in :mod:`rpbt.evaluation.trading`;
``rpbt evaluate`` in :mod:`rpbt.evaluation.run`.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rpbt.config import EnvConfig
from rpbt.envs.factory import space_info
from rpbt.envs.features import ActionFeatures
from rpbt.seeding import eval_episode_seeds

__all__ = [
    "CheckpointFallbackWarning",
    "EpisodeTrace",
    "EvaluationResult",
    "ObsPerturbation",
    "evaluate_members",
    "evaluate_policy",
    "check_renders",
    "load_member",
    "member_policy_head",
    "video_path",
]

ObsPerturbation = Callable[[Any, int, Tensor, dict], Tensor]
DEFAULT_MAX_EPISODE_STEPS = 100_000


class CheckpointFallbackWarning(UserWarning):
    """:func:`load_member` used an older kept round because the last committed round's checkpoint did not load."""


# --------------------------------------------------------------------------------------------------- results


@dataclass
class EpisodeTrace:
    """One evaluation episode of one member.

    ``rewards`` (T,) float64; ``actions`` (T,) int64 for Discrete, (T, K) int64 for MultiDiscrete or (T, A) float32
    for Box (what the env received);
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
    video: Optional[str] = None  # the MP4 the episode was recorded to (evaluate_members' video_dir), else None

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
    out = torch.zeros((learner.population,) + shape, device=learner.device)
    for m, x in rows.items():
        out[m] = x
    return out


def member_policy_head(learner, member: int, obs: Tensor, state: tuple[Tensor, ...],
                       prev: Optional[Tensor] = None) -> Tensor:
    """Member ``member``'s policy head output on normalized observations ``obs`` (N, D) from actor state ``state``
    ((h, c) for an LSTM, (h,) for a GRU, each (L, N, H)), with ``prev`` (N, E) the previous action features and
    reward fed after the observation when the member is fed them: logits (N, A) for Discrete and MultiDiscrete,
    means (N, A) for Box.

    Differentiable with respect to ``obs`` (and the weights) when called with gradients enabled: for attacks that
    maximize the policy change over an epsilon ball (SA-PPO). Runs the learner's own modules on a population batch
    in which the other members' rows are zero (the population is a batch, so this costs one small forward).
    """
    P = learner.population
    if prev is not None and prev.shape[-1] > 0:
        obs = torch.cat([obs, prev.to(obs.device, obs.dtype)], -1)
    n, d = obs.shape
    dev = obs.device
    full_obs = torch.cat([torch.zeros(member, n, d, device=dev), obs.unsqueeze(0),
                          torch.zeros(P - member - 1, n, d, device=dev)])
    full_state = []
    for t in state:
        full = torch.zeros((P,) + tuple(t.shape), device=dev)
        full[member] = t
        full_state.append(full)
    feats, _ = learner.actor.step(full_obs, tuple(full_state), torch.zeros(P, n, dtype=torch.bool, device=dev))
    return learner.policy_head(feats)[member]


def _member_actions(learner, member: int, head: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Member's actions from its head outputs (N, A) on the CPU: the mode when ``generator`` is None, else a sample
    drawn with it. (N,) indices for Discrete, (N, K) for MultiDiscrete, (N, A) for Box (not yet clipped)."""
    if learner.continuous:
        if generator is None:
            return head
        std = learner.policy_head.log_std[member].detach().exp().cpu()
        return head + std * torch.randn(head.shape, generator=generator)
    parts = [head] if learner.nvec is None else list(torch.split(head, list(learner.nvec), dim=-1))
    if generator is None:
        acts = [part.argmax(-1) for part in parts]
    else:
        acts = [torch.multinomial(torch.softmax(part, -1), 1, generator=generator).squeeze(-1) for part in parts]
    return acts[0] if learner.nvec is None else torch.stack(acts, -1)


def _make_env(env_cfg: EnvConfig, split: str, render_mode: Optional[str] = None):
    from rpbt.envs.factory import make_env

    return make_env(env_cfg, split, render_mode=render_mode)


def video_path(video_dir: Union[str, Path], member: int, episode: int) -> Path:
    """Where episode ``episode`` of member ``member`` (its global id) is recorded: ``member<ID>-episode<j>.mp4``."""
    return Path(video_dir) / f"member{member}-episode{episode}.mp4"


class _EpisodeVideo(gym.wrappers.RecordVideo):
    """Gymnasium's ``RecordVideo`` for an environment that plays one episode, written to ``<name_prefix>.mp4``
    (``RecordVideo`` itself appends ``-episode-<id>``, and every evaluation environment's one episode has id 0)."""

    def start_recording(self, video_name: str) -> None:
        super().start_recording(self.name_prefix)


def _headless_sdl() -> None:
    """On a machine without a display (no ``DISPLAY``, no ``WAYLAND_DISPLAY``) and ``SDL_VIDEODRIVER`` unset, set it
    to ``dummy`` in this process, before pygame draws a video's frames.

    Gymnasium's classic-control environments call ``pygame.display.init()`` even for ``rgb_array`` (they draw on an
    off-screen surface); without a display SDL tries X11, then Wayland, whose client library prints "error:
    XDG_RUNTIME_DIR is invalid or not set in the environment." to the process's stderr when that is unset, and then
    falls back to drawing off-screen. With no display the frames are the same either way, so only the noise goes; a
    user's own ``SDL_VIDEODRIVER`` and a machine with a display are left alone.
    """
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")) and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def _render_culprit(env_cfg: EnvConfig, render_mode: str, caller: str) -> tuple[str, str]:
    """What a render error names (``env.id``, or the function of ``env.entry_point``) and, for a function, the hint
    of what ``caller`` (``--video``, ``Policy.make_env``) calls it with and what it must take."""
    where, fn_hint = f"env.id {env_cfg.id!r}", ""
    if env_cfg.entry_point is not None:  # made by a function: say what it must take
        where = f"env.entry_point {env_cfg.entry_point!r}" + (
            f" (env.id {env_cfg.id!r})" if env_cfg.id != env_cfg.entry_point else "")
        fn_hint = (f"; {caller} calls {env_cfg.entry_point.partition(':')[2]}(**env.kwargs, "
                   f"render_mode={render_mode!r}): give it a render_mode=None parameter and pass it on to the "
                   f"environment")
    return where, fn_hint


def make_render_env(env_cfg: EnvConfig, split: str, render_mode: str, caller: str, so: str = ""):
    """The environment of ``env_cfg`` made with ``render_mode`` (:func:`rpbt.envs.factory.make_env`).

    Raises :class:`rpbt.envs.factory.EnvError` naming ``env.id`` when the environment refuses ``render_mode``; for
    one made by a function (``env.entry_point`` / ``env_fn``) that does not take it, naming the function and saying
    that ``caller`` (``--video``, ``Policy.make_env``) passes it and the function must take it and pass it on.
    ``so``: what follows for the caller (``"so its episodes cannot be recorded"``), said after the refusal.
    """
    from rpbt.envs.factory import EnvError

    where, fn_hint = _render_culprit(env_cfg, render_mode, caller)
    so = f", {so}" if so else ""
    try:
        return _make_env(env_cfg, split, render_mode=render_mode)
    except (TypeError, gym.error.Error) as err:
        if fn_hint and isinstance(err, TypeError):
            raise EnvError(f"{where} does not take render_mode ({err}){so}{fn_hint}") from None
        raise EnvError(f"{where} does not render {render_mode} frames{so} (it refused render_mode={render_mode!r}: "
                       f"{err})") from None


def check_renders(env_cfg: EnvConfig, split: str = "test") -> None:
    """Make sure episodes of ``env_cfg`` can be recorded: ``moviepy`` is installed and the environment renders
    ``rgb_array`` frames (an (H, W, 3) uint8 array after a reset). On a machine without a display it first points
    SDL at its ``dummy`` video driver unless ``SDL_VIDEODRIVER`` is set (:func:`_headless_sdl`: pygame's frames,
    without SDL's "XDG_RUNTIME_DIR is invalid" lines).

    Raises :class:`rpbt.extras.MissingExtraError` without moviepy, :class:`rpbt.envs.factory.EnvError` naming
    ``env.id`` for an environment that does not take ``render_mode="rgb_array"`` or renders no frame; for an
    environment made by a function (``env.entry_point`` / ``env_fn``), naming the function and saying that it must
    take ``render_mode`` and pass it on to the environment.
    """
    from rpbt.extras import require

    require("moviepy", "video", "recording evaluation videos (rpbt evaluate --video)")
    _headless_sdl()
    env = make_render_env(env_cfg, split, "rgb_array", "--video", "so its episodes cannot be recorded")
    where, fn_hint = _render_culprit(env_cfg, "rgb_array", "--video")
    try:
        env.reset(seed=0)
        frame = env.render()
    finally:
        env.close()
    if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[-1] == 3):
        from rpbt.envs.factory import EnvError

        raise EnvError(f"{where} does not render rgb_array frames, so its episodes cannot be recorded (render() "
                       f"returned {type(frame).__name__}{getattr(frame, 'shape', '')}, expected an (H, W, 3) array)"
                       f"{fn_hint}")


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
    video_dir: Optional[Union[str, Path]] = None,
    seeds: Optional[Sequence[int]] = None,
) -> dict[int, EvaluationResult]:
    """Evaluate several members of ``learner`` at once (one batched policy step per time step).

    Args:
        learner: a :class:`rpbt.agent.policy.PopulationPolicy` (not modified).
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
        video_dir: record every episode into this folder (see the module docstring; checked first with
            :func:`check_renders`).
        seeds: explicit reset seeds, one per episode (their number is the episode count; ``episodes``, when
            given, must match), instead of those derived from ``seed`` (held-out scoring episodes,
            :func:`rpbt.seeding.heldout_episode_seeds`). Sampling with ``deterministic=False`` then uses a
            generator seeded from the first.

    Returns ``{member: EvaluationResult}``. Raises ``ValueError`` for unknown/duplicate members, ``starts`` with a
    non-trading env, ``episodes < 1``, or a start outside the split (from the trading env); with ``video_dir``,
    what :func:`check_renders` raises.
    """
    members = [int(m) for m in members]
    P = learner.population
    if len(set(members)) != len(members) or any(not 0 <= m < P for m in members):
        raise ValueError(f"members must be distinct local indices in 0..{P - 1}, got {members}")
    if seeds is not None:
        seeds = [int(x) for x in seeds]
        if episodes is not None and int(episodes) != len(seeds):
            raise ValueError(f"episodes={episodes} but {len(seeds)} seeds were given (one per episode)")
        episodes = len(seeds)
    n_eps, starts = _episode_plan(env_cfg, split, episodes, starts)
    seeds = _eval_seeds(seed, n_eps) if seeds is None else seeds
    sample_gen = None if deterministic else torch.Generator().manual_seed(int(seeds[0]))
    runs = [_MemberEpisodes(envs, env_cfg.id == "trading", max_steps, learner.obs_dim)
            for envs in _make_envs(learner, members, env_cfg, split, n_eps, video_dir)]
    for run in runs:
        run.reset(seeds, starts)
    try:
        _play(learner, members, runs, obs_perturbation, sample_gen)
    finally:
        for run in runs:
            run.close()
    return {m: run.result(m, split, learner.continuous,
                          None if video_dir is None else lambda j, m=m: video_path(video_dir, learner.member_ids[m], j))
            for m, run in zip(members, runs)}


def _episode_plan(env_cfg: EnvConfig, split: str, episodes: Optional[int], starts: Optional[Sequence[int]]
                  ) -> tuple[int, Optional[list[int]]]:
    """The number of episodes per member and, for trading, their start bars (see :func:`evaluate_members`)."""
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
    return n_eps, starts


def _make_envs(learner, members: Sequence[int], env_cfg: EnvConfig, split: str, n: int,
               video_dir: Optional[Union[str, Path]]) -> list[list[gym.Env]]:
    """One environment per (member, episode); recording every episode into ``video_dir`` when given."""
    if video_dir is None:
        return [[_make_env(env_cfg, split) for _ in range(n)] for _ in members]
    check_renders(env_cfg, split)
    Path(video_dir).mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # "overwriting existing videos": the episodes share the folder
        warnings.simplefilter("ignore")
        return [[_EpisodeVideo(_make_env(env_cfg, split, render_mode="rgb_array"), str(video_dir),
                               episode_trigger=lambda _: True, disable_logger=True,
                               name_prefix=video_path(video_dir, learner.member_ids[m], j).stem)
                 for j in range(n)] for m in members]


def _play(learner, members: Sequence[int], runs: Sequence["_MemberEpisodes"],
          obs_perturbation: Optional[ObsPerturbation], sample_gen: Optional[torch.Generator]) -> None:
    """Run every member's episodes to their end, one :meth:`~rpbt.agent.policy.PopulationPolicy.act` per time
    step for all members (rows of members not evaluated are zero), from zero actor states and no previous action or
    reward (every episode starts now)."""
    P, D, dev, N = learner.population, learner.obs_dim, learner.device, len(runs[0].envs)
    spec = space_info(runs[0].envs[0].action_space)
    features = ActionFeatures(spec)
    state = learner.initial_state(N, ["actor"])  # (P, L, N, H) each
    prev_action = torch.zeros(P, N, learner.prev_action_dim, device=dev)
    prev_reward = torch.zeros(P, N, learner.prev_reward_dim, device=dev)
    while not all(run.done.all() for run in runs):
        raw = _padded(learner, {m: run.raw for m, run in zip(members, runs)}, (N, D))
        obs = learner.normalize_obs(raw)  # the statistics are not updated
        if obs_perturbation is not None:
            obs = _perturbed(learner, members, obs, state["actor"], torch.cat([prev_action, prev_reward], -1),
                             obs_perturbation)
        out = learner.act(obs, state, prev_action, prev_reward, normalize=False)
        state = out.state
        head = out.head.cpu()  # (P, N, A)
        for m, run in zip(members, runs):
            act = _member_actions(learner, m, head[m], sample_gen)  # the policy's actions, (N, *action_shape)
            act_env = spec.to_env(act.numpy())
            rewards = run.step(act_env, learner.continuous)
            if learner.prev_action_dim:  # what the member is fed with its next observation
                taken = torch.as_tensor(act_env)
                prev_action[m] = features(taken.reshape(N, -1) if spec.continuous else taken).to(dev)
            if learner.prev_reward_dim:
                prev_reward[m] = rewards.unsqueeze(-1).to(dev)


def _perturbed(learner, members: Sequence[int], obs: Tensor, actor_state: tuple[Tensor, ...], prev: Tensor,
               hook: ObsPerturbation) -> Tensor:
    """``obs`` (P, N, D) normalized, with every evaluated member's rows replaced by what ``hook`` returns (see the
    module docstring); ``prev`` (P, N, E): the previous action features and reward, handed to the hook."""
    obs = obs.clone()
    shape = tuple(obs.shape[1:])
    for m in members:
        with torch.enable_grad():
            states: dict = {"actor": tuple(t[m].clone() for t in actor_state)}
            if prev.shape[-1] > 0:
                states["prev"] = prev[m].clone()
            out = hook(learner, m, obs[m].clone(), states)
        out = torch.as_tensor(out).detach().to(obs.device, torch.float32)
        if tuple(out.shape) != shape:
            raise ValueError(f"obs_perturbation returned shape {tuple(out.shape)}, expected {shape}")
        obs[m] = out
    return obs


class _MemberEpisodes:
    """One member's N evaluation episodes, run side by side: environments, traces, the latest raw observations
    ``raw`` (N, D), which episodes are ``done`` (N,) and their (terminated, truncated) ``flags`` (N, 2)."""

    def __init__(self, envs: list[gym.Env], trading: bool, max_steps: int, obs_dim: int):
        self.envs, self.trading, self.max_steps = envs, trading, max_steps
        n = len(envs)
        self.raw = torch.zeros(n, obs_dim)
        self.traces: list[dict[str, Any]] = [{"rewards": [], "actions": []} for _ in range(n)]
        self.done = np.zeros(n, dtype=bool)
        self.flags = np.zeros((n, 2), dtype=bool)

    def reset(self, seeds: Sequence[int], starts: Optional[Sequence[int]]) -> None:
        for j, env in enumerate(self.envs):
            obs, info = env.reset(seed=seeds[j], options={"start": starts[j]} if self.trading else None)
            self.raw[j] = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(-1))
            if self.trading:
                self.traces[j].update(start=int(info["bar"]), bars=[int(info["bar"])],
                                      equity=[float(info["equity"])], positions=[float(info["position"])],
                                      turnover=[], asset_returns=[])

    def step(self, env_actions: np.ndarray, continuous: bool) -> Tensor:
        """Step every running episode with its action; returns the rewards (N,) (0 for finished episodes)."""
        rewards = torch.zeros(len(self.envs))
        for j, env in enumerate(self.envs):
            if self.done[j]:
                continue
            a = env_actions[j]
            obs_j, reward, term, trunc, info = env.step(a if continuous or env_actions.ndim > 1 else int(a))
            rewards[j] = float(reward)
            tr = self.traces[j]
            tr["rewards"].append(float(reward))
            tr["actions"].append(np.array(a, copy=True))
            if self.trading:
                for key, name, cast in (("bars", "bar", int), ("equity", "equity", float),
                                        ("positions", "position", float), ("turnover", "turnover", float),
                                        ("asset_returns", "asset_return", float)):
                    tr[key].append(cast(info[name]))
            self.raw[j] = torch.as_tensor(np.asarray(obs_j, dtype=np.float32).reshape(-1))
            cut = len(tr["rewards"]) >= self.max_steps
            if term or trunc or cut:
                self.done[j] = True
                self.flags[j] = (bool(term), bool(trunc) or (cut and not term))
        return rewards

    def result(self, member: int, split: str, continuous: bool,
               video: Optional[Callable[[int], Path]]) -> EvaluationResult:
        result = EvaluationResult(member=member, split=split)
        for j, tr in enumerate(self.traces):
            acts = np.stack(tr["actions"]) if tr["actions"] else np.zeros((0,))
            ep = EpisodeTrace(rewards=np.asarray(tr["rewards"], dtype=np.float64),
                              actions=acts.astype(np.float32 if continuous else np.int64),
                              terminated=bool(self.flags[j, 0]), truncated=bool(self.flags[j, 1]))
            if self.trading:
                ep.start = tr["start"]
                ep.bars = np.asarray(tr["bars"], dtype=np.int64)
                for key in ("equity", "positions", "turnover", "asset_returns"):
                    setattr(ep, key, np.asarray(tr[key], dtype=np.float64))
            if video is not None:
                ep.video = str(video(j))
            result.episodes.append(ep)
        return result

    def close(self) -> None:
        for env in self.envs:
            env.close()


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
    video_dir: Optional[Union[str, Path]] = None,
) -> EvaluationResult:
    """Evaluate one member (local index ``member``) of ``learner``; see :func:`evaluate_members` for the arguments.

    ``result.returns`` are the per-episode returns (trading: total log returns); for trading every episode also
    carries its equity curve and positions (:class:`EpisodeTrace`).
    """
    return evaluate_members(learner, [member], env_cfg, split, episodes=episodes, starts=starts,
                            deterministic=deterministic, obs_perturbation=obs_perturbation, seed=seed,
                            max_steps=max_steps, video_dir=video_dir)[int(member)]


# --------------------------------------------------------------------------------------------------- loading


def load_member(run_dir: Union[str, Path], member: int, device: str = "cpu", env_fn: Optional[Callable] = None):
    """Rebuild member ``member`` of a run from its latest committed checkpoint.

    Reads ``RUN_DIR/config.yaml`` and ``RUN_DIR/checkpoints/runner.json`` (whose ``checkpoint_dir`` names the round
    folder of the last commit; a run directory without it falls back to ``checkpoints/member_<i>.pt``) and restores
    ``member_<member>.pt`` (``torch.load(weights_only=True)`` via :meth:`MemberState.load`) into a fresh
    :class:`~rpbt.agent.policy.PopulationPolicy` holding that one member (local index 0, global id ``member``) on
    ``device`` (a checkpoint is device-independent). ``env_fn``: the callable the run was trained with
    (``rpbt.train(env_fn=...)``), needed when its recorded ``env.entry_point`` cannot be imported.

    When that checkpoint does not load or fit (damaged, missing), the older rounds ``runner.json`` keeps
    (``history``, newest first; ``run.keep_checkpoints``) are tried in turn, as ``rpbt resume`` does, with a
    :class:`CheckpointFallbackWarning` naming the round used.

    Returns ``(cfg, policy)``; ``policy.checkpoint_path`` is the file restored (a path, or a URL under
    ``run.storage``) and ``policy.checkpoint_name`` the same relative to the run directory where it lies there. Raises
    :class:`rpbt.run.rundir.RunDirError` for a missing config / runner state or a
    member outside ``0..population_size-1``, :class:`rpbt.checkpoint.CheckpointError` (the newest round's, naming
    its file) when no kept round's checkpoint loads, :class:`rpbt.envs.market_data.MarketDataError` naming
    ``env.data.path`` and the run's ``config.yaml`` when a trading run's data does not load.
    """
    from rpbt.run.rundir import RunDirectory, RunDirError, load_run_config

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if cfg.env.id == "trading":  # the data first, so a moved file or a relative path names the run's config
        from rpbt.envs.market_data import MarketDataError
        from rpbt.envs.trading import load_market_data

        try:
            load_market_data(cfg.env.data)
        except MarketDataError as err:
            raise MarketDataError(f"{err} [env.data of {run_dir / 'config.yaml'}]") from None
    if env_fn is not None:
        cfg.env.with_env_fn(env_fn)
    P = cfg.pbt.population_size
    member = int(member)
    rundir = RunDirectory(run_dir, P, tensorboard=False)
    state = rundir.read_runner_state(missing=f"no completed round to load member {member} from (the run stopped "
                                             "before its first round ended, or this file was removed)")
    if state.get("replay"):  # `rpbt replay` trains --seeds members, whatever the source's population size
        seeds = len(state.get("scores") or [])
        if not 0 <= member < seeds:
            raise RunDirError(f"{rundir.runner_state_path}: member {member} does not exist; this replay run has "
                              f"members 0..{seeds - 1} (its --seeds)")
    elif not 0 <= member < P:
        raise RunDirError(f"{run_dir / 'config.yaml'}: member {member} does not exist; the population has members "
                          f"0..{P - 1}")
    return cfg, _restore_newest_member(cfg, rundir, state, member, device, run_dir)


def _restore_newest_member(cfg: Any, rundir: Any, state: dict, member: int, device: str, run_dir: Path) -> Any:
    """Member ``member`` restored from the newest kept round of the commit point ``state`` that loads and fits
    (see :func:`load_member`); sets ``checkpoint_path`` / ``checkpoint_name`` on the policy returned."""
    from rpbt.agent.policy import resolve_device
    from rpbt.agent.ppo import make_policy
    from rpbt.checkpoint import CheckpointError, naming_checkpoint
    from rpbt.run.storage import CheckpointFolder

    folder = state.get("checkpoint_dir")
    folders = list(dict.fromkeys([folder, *(state.get("history") or [])])) if folder else [None]
    first_error: Optional[CheckpointError] = None
    older_errors: list[str] = []
    for k, name in enumerate(folders):
        kept = rundir.store(state).folder(name) if name else CheckpointFolder(rundir.store(state).root)
        path = kept.url(f"member_{member}.pt")
        try:
            ms = kept.load_member(member)
            learner = make_policy(cfg, [member], device=resolve_device(device))
            with naming_checkpoint(path, run_dir / "config.yaml"):  # a "does not fit" error
                learner.restore(0, ms)
        except CheckpointError as err:
            if first_error is None:
                first_error = err
            else:
                older_errors.append(f"{name}: {err}")
            continue
        if k > 0:
            warnings.warn(CheckpointFallbackWarning(
                f"{run_dir}: member {member}'s checkpoint of the last committed round does not load "
                f"({first_error}); using the older kept round {name} (as `rpbt resume` would)"), stacklevel=3)
        learner.eval()
        learner.checkpoint_path = path  # which file was loaded (an older kept round after a fallback)
        learner.checkpoint_name = path  # relative to the run directory when it lies there
        if kept.local is not None and Path(path).resolve().is_relative_to(Path(run_dir).resolve()):
            learner.checkpoint_name = Path(path).resolve().relative_to(Path(run_dir).resolve()).as_posix()
        return learner
    assert first_error is not None
    if older_errors:
        raise CheckpointError(f"{first_error}; the older kept rounds did not load either ("
                              f"{'; '.join(older_errors)})") from None
    raise first_error
