"""Making environments from a config: Gymnasium ids, POPGym ids and rpbt's trading environment.

Every member gets ``env.num_envs`` environments; a learner holding P members steps one Gymnasium
``SyncVectorEnv`` of P * num_envs environments (member-major order) with ``autoreset_mode=SAME_STEP``, so the
observation returned at an episode's end is already the next episode's first, and the final observation is in
``infos["final_obs"]`` for bootstrapping at a time limit. Environment j of member m is seeded from member m's seed
only, so a member's experience does not depend on which other members share its process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import gymnasium as gym
import numpy as np

from rpbt.config import EnvConfig, import_env_module
from rpbt.envs.errors import EnvError


class ObservationNoise(gym.ObservationWrapper):
    """Adds i.i.d. Gaussian noise of standard deviation ``std`` to every observation (a noisier POMDP)."""

    def __init__(self, env: gym.Env, std: float):
        super().__init__(env)
        self.std = std

    def observation(self, observation):
        noise = self.np_random.normal(0.0, self.std, size=np.shape(observation))
        return (observation + noise).astype(np.float32)


def _import_popgym() -> None:
    try:
        import popgym  # noqa: F401  (registers the popgym-* ids)
    except ImportError as err:  # pragma: no cover - popgym is a dependency
        raise EnvError("env.id names a POPGym environment but the 'popgym' package is not installed") from err


def _import_id_module(env_id: str) -> None:
    """Import the module of an ``env.id`` of the form ``module:EnvId`` (importing it registers ``EnvId``), as
    ``gymnasium.make`` would, but with errors that say what to do. Raises :class:`EnvError` naming ``env.id`` for an
    id of another form with a colon, a module that is not found (see :func:`rpbt.config.import_env_module`) or
    does not import."""
    module, _, name = env_id.partition(":")
    if not module or not name or ":" in name:
        raise EnvError(f"env.id {env_id!r}: expected a registered Gymnasium id (CartPole-v1) or 'module:EnvId' (one "
                       f"colon: my_package.envs:MyEnv-v0, where importing my_package.envs registers MyEnv-v0)")
    try:
        import_env_module(module, f"env.id {env_id!r} cannot be made")
    except ValueError as err:
        raise EnvError(str(err)) from None


def make_env(cfg: EnvConfig, split: str = "train", render_mode: Optional[str] = None) -> gym.Env:
    """One environment for ``cfg`` with a flat float32 observation vector.

    Made by ``cfg.env_fn()`` when the config has one (``env.entry_point`` or an attached ``env_fn``, called with
    ``env.kwargs``), else by ``gymnasium.make(env.id, **env.kwargs)`` (``env.id`` may be ``module:EnvId``: the module,
    which registers the id, is imported first), or rpbt's trading environment for ``env.id: trading``.
    Observations that are not a flat Box (Dict, Tuple, Discrete, a multi-dimensional Box) are flattened with
    Gymnasium's ``FlattenObservation`` (``gymnasium.spaces.flatten``: Box entries raveled, Discrete and MultiDiscrete
    entries one-hot, Dict entries in key order). ``render_mode`` (e.g. ``"rgb_array"``) is passed to the
    environment's constructor when given.

    Raises :class:`EnvError` naming ``env.id`` when the id is unknown, its module is not found (the message says
    how to make it importable) or does not import, the entry point cannot be imported or does not return a
    ``gymnasium.Env``, or its spaces are unsupported (observations: Text, Sequence, Graph or other spaces without a
    fixed-size flattening, also inside Dict / Tuple); for ``env.id:
    trading``, naming ``env.kwargs`` when a key or value there is one the trading environment does not take
    (:func:`rpbt.envs.trading.make_trading_env`; bad data raises its ``MarketDataError``); the constructor's
    ``TypeError`` when it does not take ``render_mode``.
    """
    extra = {} if render_mode is None else {"render_mode": render_mode}
    try:
        env_fn = cfg.env_fn()
    except ValueError as err:
        raise EnvError(str(err)) from None
    if env_fn is not None:
        try:
            env = env_fn(**cfg.kwargs, **extra)
        except TypeError as err:  # env.kwargs the callable does not take
            if render_mode is not None and "render_mode" in str(err):
                raise
            raise EnvError(f"env {cfg.id!r} (env.entry_point {cfg.entry_point!r}) cannot be made with env.kwargs "
                           f"{cfg.kwargs}: {err}") from None
        if not isinstance(env, gym.Env):
            raise EnvError(f"env.entry_point {cfg.entry_point!r} returned {type(env).__name__}, not a gymnasium.Env")
    elif cfg.id == "trading":
        from rpbt.envs.trading import make_trading_env

        if render_mode is not None:
            raise TypeError("the trading environment does not render")
        env = make_trading_env(cfg, split=split)
    else:
        if cfg.id.startswith("popgym-"):
            _import_popgym()
        if ":" in cfg.id:
            _import_id_module(cfg.id)
        try:
            env = gym.make(cfg.id, **cfg.kwargs, **extra)
        except gym.error.Error as err:
            raise EnvError(f"env.id {cfg.id!r} cannot be made: {err}") from None
        except ImportError as err:  # a module the environment's constructor imports
            raise EnvError(f"env.id {cfg.id!r} cannot be made: {err}") from None
        except TypeError as err:  # env.kwargs the constructor does not take
            if render_mode is not None and "render_mode" in str(err):
                raise
            raise EnvError(f"env.id {cfg.id!r} cannot be made with env.kwargs {cfg.kwargs}: {err}") from None
    unsupported = _unsupported_observation_part(env.observation_space)
    if unsupported is not None:
        env.close()
        raise EnvError(f"env.id {cfg.id!r}: observation space {env.observation_space} holds {unsupported}; "
                       f"supported are Box, Discrete, MultiDiscrete and MultiBinary, and Dict / Tuple of them "
                       f"(flattened to one fixed-size vector)")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        env = gym.wrappers.FlattenObservation(env)
    if env.observation_space.dtype != np.float32:  # e.g. one-hot int64 from flattened Discrete observations
        env = gym.wrappers.DtypeObservation(env, np.float32)
    try:
        space_info(env.action_space)
    except EnvError as err:
        env.close()
        raise EnvError(f"env.id {cfg.id!r}: {err}") from None
    if cfg.observation_noise_std > 0:
        env = ObservationNoise(env, cfg.observation_noise_std)
    return env


_FLAT_SPACES = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)


def _unsupported_observation_part(space: gym.Space) -> Optional[gym.Space]:
    """The first part of an observation space that does not flatten to a fixed-size vector (Text, Sequence, Graph,
    an unknown space), or None."""
    if isinstance(space, _FLAT_SPACES):
        return None
    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):
        parts = space.spaces.values() if isinstance(space, gym.spaces.Dict) else space.spaces
        return next((bad for bad in map(_unsupported_observation_part, parts) if bad is not None), None)
    return space


def make_vector_env(cfg: EnvConfig, num_envs: int, split: str = "train") -> gym.vector.SyncVectorEnv:
    """A ``SyncVectorEnv`` of ``num_envs`` copies with same-step autoreset (final obs in ``infos['final_obs']``)."""
    fns: list[Callable[[], gym.Env]] = [lambda: make_env(cfg, split) for _ in range(num_envs)]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


ACTION_KINDS = ("discrete", "multi_discrete", "box")


@dataclass(frozen=True)
class ActionSpec:
    """What a policy needs to know of an action space.

    Attributes:
        kind: ``discrete`` (``Discrete(n)``: one categorical), ``multi_discrete`` (a one-dimensional
            ``MultiDiscrete(nvec)``: K independent categoricals) or ``box`` (``Box``: a diagonal Gaussian).
        dim: A, the width of the policy head's output and of the action features: n logits, sum(nvec) logits
            (the K categoricals' logits concatenated), or the Box's flat size d.
        nvec: the K category counts of a MultiDiscrete space (empty otherwise).
        start: the first action of each categorical (Gymnasium's ``start``; (1,) for Discrete, (K,) for
            MultiDiscrete, empty for Box): the policy's index i is the environment's action ``start + i``.
        low, high: for Box, the bounds (d,) that actions are clipped to before they reach the environment (None
            otherwise).
        box_shape: for Box, the space's own shape (e.g. (2, 2), or () for a scalar Box): the policy acts on the
            flat (d,) vector and the environment receives it reshaped to this shape (empty for the other kinds).
    """

    kind: str
    dim: int
    nvec: tuple[int, ...] = ()
    start: tuple[int, ...] = ()
    low: Optional[np.ndarray] = None
    high: Optional[np.ndarray] = None
    box_shape: tuple[int, ...] = ()

    @property
    def continuous(self) -> bool:
        """Box actions (a Gaussian), as opposed to one or several categoricals."""
        return self.kind == "box"

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one action as the policy produces it: () for Discrete (an index), (K,) for MultiDiscrete
        (K indices), (d,) for Box."""
        if self.kind == "discrete":
            return ()
        return (len(self.nvec),) if self.kind == "multi_discrete" else (self.dim,)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Policy actions (..., *shape) as the environment takes them: Box clipped to [low, high] and reshaped to
        (..., *box_shape), categorical indices shifted by ``start`` (a no-op for the usual start 0)."""
        if self.kind == "box":
            clipped = np.clip(actions, self.low, self.high)
            if self.box_shape == (self.dim,):
                return clipped
            return clipped.reshape(*clipped.shape[:-1], *self.box_shape)
        if any(self.start):
            return actions + np.asarray(self.start if self.kind == "multi_discrete" else self.start[0])
        return actions


def space_info(space: gym.Space) -> ActionSpec:
    """The :class:`ActionSpec` of a Discrete, one-dimensional MultiDiscrete or Box action space.

    Raises :class:`EnvError` for any other space (MultiBinary, Dict, Tuple, or a MultiDiscrete of more than one
    dimension).
    """
    if isinstance(space, gym.spaces.Discrete):
        return ActionSpec(kind="discrete", dim=int(space.n), start=(int(space.start),))
    if isinstance(space, gym.spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise EnvError(f"action space {space} is a MultiDiscrete of shape {space.nvec.shape}; only "
                           f"one-dimensional MultiDiscrete spaces are supported")
        nvec = tuple(int(n) for n in space.nvec)
        return ActionSpec(kind="multi_discrete", dim=sum(nvec), nvec=nvec,
                          start=tuple(int(s) for s in np.asarray(space.start).reshape(-1)))
    if isinstance(space, gym.spaces.Box):
        return ActionSpec(kind="box", dim=int(np.prod(space.shape)), low=space.low.reshape(-1),
                          high=space.high.reshape(-1), box_shape=tuple(int(n) for n in space.shape))
    raise EnvError(f"action space {space} is not Discrete, MultiDiscrete or Box")


def base_observation_space(env: gym.Env) -> gym.Space:
    """The observation space of ``env`` before :func:`make_env` flattened it (the space a user's own loop sees when
    it makes the environment itself); ``env.observation_space`` when nothing was flattened."""
    inner = env
    while isinstance(inner, gym.Wrapper):
        if isinstance(inner, gym.wrappers.FlattenObservation):
            return inner.env.observation_space
        inner = inner.env
    return env.observation_space


__all__: Sequence[str] = ["make_env", "make_vector_env", "EnvError", "space_info", "ActionSpec", "ACTION_KINDS",
                          "base_observation_space"]
