"""The Python API: train a population, resume it, load a member as a :class:`Policy` and act with it, export it.

::

    import rpbt

    run = rpbt.train(**{"pbt.population_size": 4, "run.total_env_steps": 20_000})   # the shipped default, smaller
    policy = rpbt.load_policy(run.dir)                   # the best member, one policy (no population dimension)
    env = policy.make_env()                              # the run's environment, as evaluation makes it
    obs, _ = env.reset(seed=0)
    state, start = None, True
    while True:
        action, state = policy.predict(obs, state, episode_start=start)
        obs, reward, terminated, truncated, _ = env.step(action)
        start = terminated or truncated
        if start:
            break
    rpbt.export(run.dir, "actor.onnx")                   # or policy.export("actor.pt", format="torchscript")

Configuration: ``config`` is the shipped default (None), a YAML file, a nested mapping or a
:class:`~rpbt.config.Config`; overrides are dotted keys, as keyword arguments whose names contain a dot
(``rpbt.train(**{"agent.learning_rate": 3e-4})``, Python values) and/or command-line strings
(``overrides=["agent.learning_rate=3e-4"]``, parsed as YAML, applied first). Errors are
:class:`~rpbt.config.ConfigError`\\ s that name the key and where the value came from, as on the command line.

Custom environments: ``env_fn`` is a callable returning a Gymnasium environment (called with ``env.kwargs``). The
local backend calls it in this process; the process and Ray backends send it to their workers by reference, so
there it must be importable (a module-level function of an importable module, or of the script that calls
:func:`train` under ``if __name__ == "__main__":``); a lambda or a nested function is refused with a
:class:`~rpbt.config.ConfigError`. ``config.yaml`` records it as ``env.entry_point`` (``module:qualname``), so
``rpbt resume`` / ``rpbt evaluate`` / :func:`load_policy` find it again when it is importable; otherwise pass
``env_fn=`` to them. ``env.id: my_package.envs:MyEnv-v0`` is the config-file way: Gymnasium imports
``my_package.envs``, which registers ``MyEnv-v0``.

:class:`Policy` follows Stable-Baselines3's ``RecurrentPPO.predict``: ``predict(obs, state, episode_start,
deterministic)`` returns the actions and the next state; ``state=None`` starts from zero, ``episode_start`` (True
where an environment's episode starts at this observation) zeroes the state of those environments first.
"""

from __future__ import annotations

import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import torch

from rpbt.config import (
    Config,
    ConfigError,
    DottedSetter,
    apply_overrides,
    config_from_dict,
    env_id_given,
    name_custom_env,
    read_config_data,
)
from rpbt.envs.features import ActionFeatures
from rpbt.run.output import say

__all__ = ["Interrupted", "Policy", "PolicyState", "Run", "train", "resume", "load_policy", "evaluate", "export",
           "resolve_config"]

ConfigLike = Union[None, str, Path, Mapping[str, Any], Config]
MemberLike = Union[int, str]


# --------------------------------------------------------------------------------------------------- config


def resolve_config(config: ConfigLike = None, overrides: Sequence[str] = (), values: Optional[Mapping[str, Any]] = None
                   ) -> Config:
    """The validated :class:`~rpbt.config.Config` of ``config`` with ``overrides`` and then ``values`` applied.

    ``config``: None (the shipped default), a YAML path, a nested mapping or a ``Config`` (copied, not changed; an
    attached ``env_fn`` is kept); ``overrides``: ``key.sub=value`` strings, values parsed as YAML (as on the command
    line); ``values``: ``{"key.sub": value}`` with Python values. Raises :class:`~rpbt.config.ConfigError` naming the
    key and where the bad value came from (the file, or the argument that set it).
    """
    if isinstance(overrides, (str, bytes)) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"overrides must be a list of 'key.sub=value' strings, got {overrides!r:.80}"
                          + (" (wrap the string in a list)" if isinstance(overrides, str) else ""))
    if config is not None and not isinstance(config, (Config, Mapping, str, os.PathLike)):
        raise ConfigError(f"config must be None (the shipped default), a YAML file's path, a mapping or a Config, "
                          f"got {type(config).__name__} {config!r:.80}")
    values = dict(values or {})
    for key in values:
        if "." not in key:
            raise ConfigError(f"{key}={values[key]!r} (argument): config overrides are dotted keys such as "
                              f"'pbt.population_size' (pass them as **{{'section.key': value}})")
    if isinstance(config, Config):
        source, data = "<Config>", config.to_dict()  # it holds env.id: a Config's id was named when it was made
    elif isinstance(config, Mapping):
        source, data = "<mapping>", _plain(config)
    else:
        path, data = read_config_data(config)
        source = str(path)
    id_given = env_id_given(data if config is not None else None, overrides, values)
    setter = DottedSetter(data)  # one for overrides and values: a type change keeps what either gives
    apply_overrides(data, list(overrides), origin="argument", setter=setter)
    labels = list(overrides)
    for key, value in values.items():
        label = f"{key}={value!r}"
        setter.set(key, value, f"{label} (argument)")
        labels.append(label)
    name_custom_env(data, id_given)
    cfg = config_from_dict(data, source, overrides=labels, origin="argument")
    if isinstance(config, Config) and config.env._env_fn is not None:
        cfg.env.with_env_fn(config.env._env_fn)
    return cfg


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _attach_env_fn(cfg: Config, env_fn: Optional[Callable[..., Any]], explicit_id: bool = True) -> None:
    """Attach ``env_fn``; check that the process and Ray backends can send it to their workers by reference."""
    if env_fn is None:
        return
    cfg.env.with_env_fn(env_fn)
    if not explicit_id:
        cfg.env.id = str(cfg.env.entry_point)
    if cfg.backend.kind in ("process", "ray"):  # auto trains locally when env_fn cannot be sent
        try:
            pickle.loads(pickle.dumps(env_fn))
        except Exception as err:
            raise ConfigError(
                f"env_fn {cfg.env.entry_point!r} cannot be sent to the {cfg.backend.kind} backend's workers: it is "
                f"not importable by reference ({type(err).__name__}: {err}). Define it at module level in an "
                f"importable module (or in the script that calls rpbt.train, run under `if __name__ == "
                f"'__main__':`), or train with backend.kind=local") from None


# --------------------------------------------------------------------------------------------------- runs


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (a ``KeyboardInterrupt`` like any other): ``run_dir`` and ``committed_rounds``,
    the rounds a ``rpbt resume`` / :func:`resume` continues from (0: nothing to resume, train again), and
    ``started``: False when it came while the run was starting (building the backend), before anything was written."""

    def __init__(self, run_dir: Path, committed_rounds: int, started: bool = True):
        super().__init__(f"{run_dir}: interrupted after {committed_rounds} committed rounds")
        self.run_dir, self.committed_rounds, self.started = Path(run_dir), int(committed_rounds), bool(started)


@dataclass
class Run:
    """A finished (or resumed to the end) run: its directory, resolved config and final summary.

    ``summary`` is ``summary.json``'s content (best member and score, every member's score, hyperparameters,
    lineage, wall time).
    """

    dir: Path
    config: Config
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def best_member(self) -> Optional[int]:
        return self.summary.get("best_member")

    @property
    def best_score(self) -> Optional[float]:
        return self.summary.get("best_score")

    def load_policy(self, member: MemberLike = "best", device: str = "cpu") -> "Policy":
        """:func:`load_policy` of this run (with the ``env_fn`` it was trained with, if any)."""
        return load_policy(self.dir, member, device, env_fn=self.config.env._env_fn)


def train(config: ConfigLike = None, *, overrides: Sequence[str] = (), env_fn: Optional[Callable[..., Any]] = None,
          overwrite: bool = False, announce: Optional[bool] = None, callbacks: Sequence[Any] = (),
          score_fn: Optional[Callable[[dict], Optional[float]]] = None,
          init_from: Union[None, str, Path] = None, **values: Any) -> Run:
    """Train a population, as ``rpbt train`` does; returns the :class:`Run`.

    Args:
        config: None (the shipped default job), a YAML file, a nested mapping or a :class:`~rpbt.config.Config`.
        overrides: ``key.sub=value`` strings, as on the command line (applied first).
        env_fn: a callable returning a Gymnasium environment, used instead of ``env.id`` (see the module
            docstring); ``env.id`` then names it (its ``module:qualname``) unless an override sets ``env.id``.
        overwrite: replace ``run.dir`` if it is an rpbt run directory no process is using; otherwise a used
            ``run.dir`` gets a numbered sibling (``runs/default_2``).
        **values: dotted-key overrides with Python values: ``**{"pbt.population_size": 4}``.
        announce: print ``rpbt: run directory PATH`` once the data is checked and the backend built (default:
            ``run.progress``; the command line always does).
        callbacks: :class:`rpbt.callbacks.Callback` instances called in this process after each round and exploit;
            a hook returning ``False`` stops the run cleanly (``Run.summary["stopped"]`` says why; :func:`resume`
            continues it). See :mod:`rpbt.callbacks`.
        score_fn: a custom PBT score, ``score_fn(info) -> float | None`` per member per round (the keys of
            ``info``: :mod:`rpbt.pbt.scoring`); a resume of the run needs it again (``resume(score_fn=...)``).
        init_from: ``"RUN"`` or ``"RUN:MEMBER"``: every member starts from that trained member's weights and
            normalizer statistics (default member: the run's best), see :mod:`rpbt.pbt.warm_start`.

    Shows a progress bar when ``run.progress`` is true. Raises
    :class:`~rpbt.config.ConfigError` (bad config, an ``env_fn`` the backend cannot send),
    :class:`~rpbt.envs.factory.EnvError`, :class:`~rpbt.run.rundir.RunDirError`, and what training raises
    (:class:`~rpbt.pbt.runner.MemberFaultError`, :class:`~rpbt.pbt.backends.process.BackendError`).
    """
    from rpbt.pbt.runner import PopulationRunner
    from rpbt.run.rundir import RunDirectory

    cfg = resolve_config(config, overrides, values)
    explicit_id = env_id_given(None, overrides, values)  # only an override names an env_fn environment
    _attach_env_fn(cfg, env_fn, explicit_id)
    run_dir = Path(cfg.run.dir)
    if not overwrite:
        run_dir = RunDirectory.fresh_path(run_dir)
    cfg.run.dir = str(run_dir)
    warm = None
    if init_from is not None:
        from rpbt.pbt.warm_start import WarmStart

        warm = WarmStart(init_from)  # loaded and checked before anything is written
    runner = PopulationRunner(cfg, run_dir, callbacks=callbacks, score_fn=score_fn)
    try:
        runner.start(overwrite=overwrite, init_from=warm)  # checks the data, builds the backend, writes nothing yet
    except KeyboardInterrupt:
        runner.close()
        raise Interrupted(run_dir, 0, started=False) from None
    except BaseException:
        runner.close()
        raise
    if cfg.run.progress if announce is None else announce:
        say(f"rpbt: run directory {run_dir} ({_backend_words(runner)})")
    try:
        summary = runner.run()
    except KeyboardInterrupt:
        raise Interrupted(run_dir, runner.round) from None
    return Run(run_dir, cfg, summary)


def _backend_words(runner: Any) -> str:
    """``backend process, 2 worker processes; auto: 2 usable CPUs``: what the announce line says of the backend."""
    from rpbt.pbt.backends import backend_reason

    b = runner.backend
    workers = f", {b.num_workers} worker processes" if b.kind != "local" else ""
    why = backend_reason(runner.cfg, b)
    return f"backend {b.kind}{workers}" + (f"; {why}" if why else "")


def resume(run_dir: Union[str, Path], env_fn: Optional[Callable[..., Any]] = None,
           announce: Optional[bool] = None, *, overrides: Sequence[str] = (), callbacks: Sequence[Any] = (),
           score_fn: Optional[Callable[[dict], Optional[float]]] = None) -> Run:
    """Continue an interrupted (or stopped, or finished) run from its last committed round, as ``rpbt resume``
    does; returns the :class:`Run`.

    ``overrides``: ``key=value`` strings that change the run's budget (:data:`rpbt.pbt.resume.RESUMABLE_KEYS`:
    ``run.total_env_steps`` extends a finished run, ``run.stop_at_score`` sets or lifts the early stop); any other
    key is a :class:`~rpbt.config.ConfigError` naming it, and nothing is written. ``callbacks`` / ``score_fn`` as
    for :func:`train` (a run trained with a ``score_fn`` needs it again).

    ``env_fn``: the callable the run was trained with, when its recorded ``env.entry_point`` cannot be imported
    (a lambda, a nested function). ``announce`` (default ``run.progress``): print ``rpbt: resuming ...`` and each
    skipped round as ``rpbt: warning: ...`` (otherwise a skipped round is a
    :class:`~rpbt.pbt.runner.ResumeWarning`). Raises :class:`~rpbt.run.rundir.RunDirError` for a directory that is
    not a run or has nothing committed, and what :func:`train` raises.
    """
    import warnings

    from rpbt.pbt.resume import resume_config
    from rpbt.pbt.runner import PopulationRunner, ResumeWarning

    if isinstance(overrides, (str, bytes)) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"overrides must be a list of 'key.sub=value' strings, got {overrides!r:.80}")
    run_dir = Path(run_dir)
    cfg, changes = resume_config(run_dir, list(overrides))
    _attach_env_fn(cfg, env_fn)
    runner = PopulationRunner(cfg, run_dir, callbacks=callbacks, score_fn=score_fn)
    if cfg.run.progress if announce is None else announce:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResumeWarning)
            runner.resume(changes)
        for w in caught:
            if issubclass(w.category, ResumeWarning):
                print(f"rpbt: warning: {w.message}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        say(f"rpbt: resuming {run_dir} after round {runner.round}/{runner.total_rounds} ({_backend_words(runner)})")
    else:
        runner.resume(changes)
    summary = runner.run()
    return Run(run_dir, cfg, summary)


def evaluate(run_dir: Union[str, Path], member: MemberLike = "best", split: str = "test",
             episodes: Optional[int] = None, seed: Optional[int] = None, video_dir: Union[None, str, Path] = None,
             env_fn: Optional[Callable[..., Any]] = None) -> dict[str, Any]:
    """``rpbt evaluate``: deterministic episodes of a member, written to ``RUN_DIR/evaluation/``; returns the report.

    See :func:`rpbt.evaluation.run.evaluate_run` (``video_dir`` records every episode as an MP4).
    """
    from rpbt.evaluation.run import evaluate_run

    member_id = _member_id(member)
    report, _, _ = evaluate_run(run_dir, member=None if member_id == "best" else member_id, split=split,
                                episodes=episodes, seed=seed, video_dir=video_dir, env_fn=env_fn)
    return report


def _member_id(member: Any) -> Union[int, str]:
    """``"best"`` or a member id (an int, a NumPy integer or a string of digits); ``ValueError`` for anything else
    (a float or a bool is not silently truncated to an id)."""
    if isinstance(member, str):
        if member == "best" or member.isdigit():
            return member if member == "best" else int(member)
    elif isinstance(member, (int, np.integer)) and not isinstance(member, (bool, np.bool_)):
        return int(member)
    raise ValueError(f"member must be 'best' or a member id (an integer), got {member!r}")


def export(run_dir: Union[str, Path], path: Union[str, Path], format: str = "onnx", member: MemberLike = "best",
           env_fn: Optional[Callable[..., Any]] = None) -> Path:
    """Export a member's actor to ``path`` (``onnx`` or ``torchscript``; see :mod:`rpbt.actor_export`); returns the
    path. Raises what :func:`load_policy` and :func:`rpbt.actor_export.export_policy` raise."""
    return load_policy(run_dir, member, env_fn=env_fn).export(path, format)


# --------------------------------------------------------------------------------------------------- policy


class _Acted(NamedTuple):
    """One :meth:`Policy._act`: head outputs (B, A), new h and c (L, B, H) each (c None for a GRU), whether the
    observation was a batch, and the previous-action features the step was fed (B, A')."""

    head: torch.Tensor
    h: torch.Tensor
    c: Optional[torch.Tensor]
    batched: bool
    prev_action: np.ndarray


@dataclass
class PolicyState:
    """What a :class:`Policy` carries from one call to the next, for a batch of B environments.

    ``h``, ``c``: (L, B, H) float32, the actor's recurrent state (Stable-Baselines3's ``lstm_states``); ``c`` is
    None for a GRU policy (``agent.network.cell: gru``), whose state is ``h`` alone; ``prev_action``:
    (B, A') float32, the features of the actions the last call returned (one-hot, concatenated one-hots, or the
    clipped Box action; zero before the first action), fed back to a policy trained with
    ``agent.network.prev_action`` (A' = 0 for any other policy).
    """

    h: np.ndarray
    c: Optional[np.ndarray]
    prev_action: np.ndarray

    @property
    def batch_size(self) -> int:
        return int(self.h.shape[1])


def _numpy_or_none(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.cpu().numpy()


class Policy:
    """One trained member as a policy: raw observations in, actions out (no population dimension).

    Built by :func:`load_policy`. Observations are flattened as the environment factory does
    (``gymnasium.spaces.flatten`` of Dict, Tuple, Discrete and multi-dimensional Box observations; an already flat
    float vector of the flattened size is taken as it is) and normalized with the member's running statistics
    (frozen). The member's networks run through the learner's own code (:class:`~rpbt.agent.policy.PopulationPolicy`
    with P = 1).

    Attributes: ``config`` (the run's), ``member`` (global id), ``observation_space`` (the environment's, before
    flattening), ``action_space``, ``action_spec``, ``obs_dim`` (D, flattened), ``num_layers`` (L),
    ``hidden_size`` (H), ``cell`` (``lstm``: state (h, c); ``gru``: state h), ``device``, ``learner`` (the
    one-member PopulationPolicy).
    """

    def __init__(self, cfg: Config, learner: Any, member: int, observation_space: gym.Space,
                 action_space: gym.Space, device: Union[str, torch.device] = "cpu"):
        from rpbt.envs.factory import space_info

        self.config, self.learner, self.member = cfg, learner, int(member)
        self.observation_space, self.action_space = observation_space, action_space
        self.action_spec = space_info(action_space)
        self.obs_dim = int(learner.obs_dim)
        self.num_layers = int(cfg.agent.network.lstm_num_layers)
        self.hidden_size = int(cfg.agent.network.lstm_hidden_size)
        self.cell = str(cfg.agent.network.cell)  # lstm: state (h, c); gru: state h
        self.device = torch.device(device)
        self.prev_action = learner.prev_action_dim > 0
        self.prev_reward = learner.prev_reward_dim > 0
        self.generator = torch.Generator().manual_seed(int(learner.seeds[0]))  # for deterministic=False
        self._features = ActionFeatures(self.action_spec)

    def __repr__(self) -> str:
        return (f"Policy(member={self.member}, env={self.config.env.id!r}, obs_dim={self.obs_dim}, "
                f"action_space={self.action_space}, {self.cell}={self.num_layers}x{self.hidden_size})")

    # ------------------------------------------------------------------------------------------ state

    def initial_state(self, batch: int = 1) -> PolicyState:
        """The state before any observation of ``batch`` environments: zero h and c (L, B, H) (c None for a GRU), no
        previous action."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        zeros = np.zeros((self.num_layers, batch, self.hidden_size), dtype=np.float32)
        c = zeros.copy() if self.cell == "lstm" else None
        return PolicyState(zeros, c, np.zeros((batch, self.learner.prev_action_dim), dtype=np.float32))

    # ------------------------------------------------------------------------------------------ observations

    def flatten_obs(self, obs: Any) -> tuple[np.ndarray, bool]:
        """Observations as the networks' flat float32 vectors: ``(x (B, D), batched)``.

        Accepts one observation of ``observation_space`` or a batch of them (a leading batch dimension; for Dict
        and Tuple spaces on every entry, as vector environments return them), or flat float vectors (D,) / (B, D).
        Raises ``ValueError`` for anything else, naming the space, and for NaN or inf anywhere in the observation.
        """
        x, batched = self._flatten(obs)
        if not np.isfinite(x).all():
            rows = sorted({int(i) for i in np.argwhere(~np.isfinite(x))[:, 0]})
            raise ValueError(f"observation holds NaN or inf (batch rows {rows}); the policy would carry it in its "
                             "LSTM state to every later step")
        return x, batched

    def _flatten(self, obs: Any) -> tuple[np.ndarray, bool]:
        space, D = self.observation_space, self.obs_dim
        if isinstance(space, gym.spaces.Box):
            try:
                arr = np.asarray(obs, dtype=np.float32)
            except (TypeError, ValueError) as err:
                raise ValueError(f"observation {obs!r:.80} is not an array of numbers for {space}: {err}") from None
            if arr.shape == space.shape or arr.shape == (D,):
                return arr.reshape(1, D), False
            if arr.ndim >= 2 and (arr.shape[1:] == space.shape or arr.shape[1:] == (D,)):
                return arr.reshape(arr.shape[0], D), True
            raise ValueError(f"observation of shape {arr.shape} fits neither {space} nor a batch of it")
        if isinstance(obs, np.ndarray) and obs.dtype.kind == "f" and obs.ndim in (1, 2) and obs.shape[-1] == D:
            return obs.astype(np.float32, copy=False).reshape(-1, D), obs.ndim == 2  # already flattened
        try:
            batch = _batch_size(space, obs)
            if batch is None:
                return gym.spaces.flatten(space, obs).astype(np.float32).reshape(1, D), False
            from gymnasium.vector.utils import batch_space, iterate

            items = list(iterate(batch_space(space, batch), obs))
            if len(items) != batch:
                raise ValueError(f"its entries hold {len(items)} and {batch} observations")
            x = np.stack([gym.spaces.flatten(space, o).astype(np.float32) for o in items])
            return x.reshape(batch, D), True
        except (KeyError, IndexError, TypeError, ValueError, AssertionError) as err:
            raise ValueError(f"observation {obs!r:.120} fits neither {space}, nor a batch of it, nor flat float "
                             f"vectors of {D} features ({type(err).__name__}: {err})") from None

    # ------------------------------------------------------------------------------------------ acting

    @torch.no_grad()
    def _act(self, obs: Any, state: Optional[PolicyState], episode_start: Any, prev_reward: Any) -> _Acted:
        """One step of the member's actor (:meth:`rpbt.agent.policy.PopulationPolicy.act`, P = 1) on B
        environments."""
        x, batched = self.flatten_obs(obs)
        B = x.shape[0]
        fresh = state is None
        if state is None:
            state = self.initial_state(B)
        else:
            self._check_state(state, B)
        start = np.zeros(B, dtype=bool) if episode_start is None else _per_env("episode_start", episode_start, B,
                                                                               "bool")
        learner, dev = self.learner, self.learner.device
        prev_r = None
        if self.prev_reward:
            if prev_reward is None:
                if not fresh and not bool(start.all()):
                    raise ValueError("this policy was trained with agent.network.prev_reward: pass prev_reward=, the "
                                     "reward each environment returned for the previous action")
                prev_reward = 0.0
            r = _per_env("prev_reward", prev_reward, B, "number").astype(np.float32)
            prev_r = torch.as_tensor(r).view(1, B, 1)
        parts = (state.h,) if self.cell == "gru" else (state.h, state.c)
        hidden = {"actor": tuple(torch.as_tensor(t).unsqueeze(0).to(dev) for t in parts)}
        out = learner.act(torch.as_tensor(x).view(1, B, -1).to(dev), hidden,
                          torch.as_tensor(state.prev_action).view(1, B, -1), prev_r,
                          torch.as_tensor(start).view(1, B).to(dev))
        new = out.state["actor"]
        return _Acted(out.head[0], new[0][0], new[1][0] if len(new) > 1 else None, batched, state.prev_action)

    def _check_state(self, state: Any, B: int) -> None:
        """Raise ``ValueError`` unless ``state`` is a :class:`PolicyState` of this policy for B environments."""
        if not isinstance(state, PolicyState):
            raise ValueError(f"state must be the PolicyState a previous call returned (or initial_state(B)), got "
                             f"{type(state).__name__}")
        L, H, A = self.num_layers, self.hidden_size, self.learner.prev_action_dim
        if self.cell == "gru" and state.c is not None:
            raise ValueError("state.c must be None for a GRU policy (its state is h alone)")
        checks = [("h", state.h, (L, B, H)), ("prev_action", state.prev_action, (B, A))]
        if self.cell == "lstm":
            checks.insert(1, ("c", state.c, (L, B, H)))
        for name, value, shape in checks:
            got = tuple(np.shape(value))
            if got != shape:
                what = (f"state is for {got[1]} environments, the observation for {B}"
                        if name == "h" and len(got) == 3 and got[::2] == (L, H) else
                        f"state.{name} has shape {got}, expected {shape} (L layers, B environments, H hidden units"
                        f"{'' if name != 'prev_action' else '; A = the previous-action features'})")
                raise ValueError(what)

    def _action_features(self, env_actions: np.ndarray) -> np.ndarray:
        """(B, A') features of actions as the environments took them (A' = 0 when no previous action is fed)."""
        if not self.prev_action:
            return np.zeros((len(env_actions), 0), dtype=np.float32)
        a = torch.as_tensor(np.asarray(env_actions))
        return self._features(a.reshape(len(a), -1) if self.action_spec.continuous else a).numpy()

    def action_distribution(self, obs: Any, state: Optional[PolicyState] = None, episode_start: Any = None,
                            prev_reward: Any = None) -> tuple[dict[str, np.ndarray], PolicyState]:
        """The action distribution's parameters at ``obs`` and the next state (whose ``prev_action`` is unchanged:
        no action was taken).

        Returns ``({"logits": (B, A)}, state)`` for Discrete and MultiDiscrete (the K categoricals' logits
        concatenated, A = sum(nvec)) or ``({"mean": (B, d), "log_std": (B, d)}, state)`` for Box (a diagonal
        Gaussian before clipping); without a batch dimension for a single observation. The exported actor
        (:mod:`rpbt.actor_export`) returns the same numbers. Arguments as :meth:`predict`.
        """
        acted = self._act(obs, state, episode_start, prev_reward)
        head = acted.head
        if self.action_spec.continuous:
            log_std = self.learner.policy_head.log_std[0].detach().expand_as(head)
            params = {"mean": head.cpu().numpy(), "log_std": log_std.cpu().numpy()}
        else:
            params = {"logits": head.cpu().numpy()}
        if not acted.batched:
            params = {k: v[0] for k, v in params.items()}
        return params, PolicyState(acted.h.cpu().numpy(), _numpy_or_none(acted.c), acted.prev_action)

    def predict(self, obs: Any, state: Optional[PolicyState] = None, episode_start: Any = None,
                deterministic: bool = True, prev_reward: Any = None) -> tuple[np.ndarray, PolicyState]:
        """Actions for ``obs`` and the next state, as Stable-Baselines3's ``RecurrentPPO.predict``.

        Args:
            obs: one observation of ``observation_space`` or a batch of B of them (see :meth:`flatten_obs`).
            state: the state returned by the previous call, or None: zero (h, c) and no previous action or reward
                (as at an episode's first step).
            episode_start: (B,) bool (or one bool for all): True where this observation is the first of an
                episode; the state (and the previous action and reward) of those environments is zeroed first.
                None: no episode starts.
            deterministic: the mode of the action distribution (argmax of each categorical, the Gaussian's
                mean), else a sample drawn with ``self.generator``.
            prev_reward: (B,) (or a number): the reward of the previous ``env.step``; used, and required once
                an episode is running, by a policy trained with ``agent.network.prev_reward`` (ignored otherwise).

        Returns ``(actions, state)``: actions as the environment takes them ((B,) int64 for Discrete with
        Gymnasium's ``start`` added, (B, K) int64 for MultiDiscrete, (B, *box_shape) float32 clipped to the Box, in
        the Box's own shape), without the batch dimension for a single observation. Raises ``ValueError``, naming
        the argument, for an observation that does not fit or holds NaN / inf, a state that is not this policy's
        ``PolicyState`` (L, B, H) for this batch, an ``episode_start`` or ``prev_reward`` that is not 1 or B bools
        / numbers, or a missing ``prev_reward``.
        """
        acted = self._act(obs, state, episode_start, prev_reward)
        head, h, c, batched, B = acted.head, acted.h, acted.c, acted.batched, acted.head.shape[0]
        learner = self.learner
        noise = None
        if not deterministic:
            if learner.continuous:
                noise = torch.randn(B, learner.action_dim, generator=self.generator)
            else:
                shape = (B,) if learner.nvec is None else (B, len(learner.nvec))
                noise = torch.rand(shape, generator=self.generator)
            noise = noise.unsqueeze(0).to(head.device)
        with torch.no_grad():
            actions = learner.actions(head.unsqueeze(0), noise)[0].cpu().numpy()
        env_actions = self.action_spec.to_env(actions)
        if self.action_spec.continuous:
            env_actions = env_actions.astype(np.float32)
        new_state = PolicyState(h.cpu().numpy(), _numpy_or_none(c), self._action_features(env_actions))
        return (env_actions if batched else env_actions[0]), new_state

    # ------------------------------------------------------------------------------------------ environments

    def make_env(self, split: str = "test", render_mode: Optional[str] = None) -> gym.Env:
        """The run's environment as training and evaluation make it (:func:`rpbt.envs.factory.make_env`: flat
        float32 observations, observation noise if configured); ``split`` matters for trading only.

        With ``render_mode``, an environment that refuses it raises :class:`~rpbt.envs.factory.EnvError` naming
        ``env.id``, or the function (``env.entry_point`` / ``env_fn``) and what it must take, as ``rpbt evaluate
        --video`` does (:func:`rpbt.evaluation.policy.make_render_env`)."""
        from rpbt.envs.factory import make_env

        if render_mode is None:
            return make_env(self.config.env, split)
        from rpbt.evaluation.policy import make_render_env

        return make_render_env(self.config.env, split, render_mode, "Policy.make_env")

    def export(self, path: Union[str, Path], format: str = "onnx") -> Path:
        """Write this policy's actor to ``path`` as ONNX or TorchScript (:func:`rpbt.actor_export.export_policy`)."""
        from rpbt.actor_export import export_policy

        return export_policy(self, path, format)


def _per_env(name: str, value: Any, B: int, kind: str) -> np.ndarray:
    """``value`` (one entry for all or B of them) as a (B,) array of bools or numbers; ``ValueError`` naming ``name``
    otherwise."""
    arr = np.asarray(value)
    if arr.dtype.kind not in ("b" if kind == "bool" else "") + "iuf":
        what = "a bool" if kind == "bool" else "a number"
        raise ValueError(f"{name} must be {what} or {B} of them, got {value!r:.80}")
    if arr.size not in (1, B):
        raise ValueError(f"{name} has {arr.size} entries, expected 1 or {B} (one per environment)")
    return np.array(np.broadcast_to(arr.reshape(-1), (B,)), dtype=bool if kind == "bool" else arr.dtype)


def _batch_size(space: gym.Space, obs: Any) -> Optional[int]:
    """None when ``obs`` is one observation of ``space``, else its leading batch size (read on the first leaf)."""
    if isinstance(space, gym.spaces.Dict):
        key = next(iter(space.spaces))
        return _batch_size(space.spaces[key], obs[key])
    if isinstance(space, gym.spaces.Tuple):
        return _batch_size(space.spaces[0], obs[0])
    if isinstance(space, gym.spaces.Discrete):
        return None if np.ndim(obs) == 0 else int(np.shape(obs)[0])
    shape = getattr(space, "shape", None)
    if shape is None:
        raise ValueError(f"observation space {space} is not supported")
    return None if np.ndim(obs) == len(shape) else int(np.shape(obs)[0])


def load_policy(run_dir: Union[str, Path], member: MemberLike = "best", device: str = "cpu",
                env_fn: Optional[Callable[..., Any]] = None) -> Policy:
    """Load one member of a run as a :class:`Policy` from its latest committed checkpoint.

    ``member``: ``"best"`` (``summary.json``'s best member) or a member id; ``device``: where the networks run;
    ``env_fn``: the callable the run was trained with when ``env.entry_point`` cannot be imported (an environment
    is made once, to read its spaces). Raises :class:`~rpbt.run.rundir.RunDirError` (no run, no best member yet,
    an unknown member), :class:`~rpbt.checkpoint.CheckpointError`, :class:`~rpbt.envs.factory.EnvError`, and
    ``ValueError`` for a ``member`` that is neither ``"best"`` nor an integer id.
    """
    from rpbt.envs.factory import base_observation_space, make_env
    from rpbt.evaluation.policy import load_member
    from rpbt.evaluation.run import _best_member
    from rpbt.run.rundir import require_run_dir

    run_dir = require_run_dir(Path(run_dir))
    member = _member_id(member)
    if member == "best":
        member = _best_member(run_dir)
    cfg, learner = load_member(run_dir, int(member), device=device, env_fn=env_fn)
    probe = make_env(cfg.env, "test")
    try:
        obs_space, act_space = base_observation_space(probe), probe.action_space
    finally:
        probe.close()
    return Policy(cfg, learner, int(member), obs_space, act_space, device)
