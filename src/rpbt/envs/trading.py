"""A single-asset trading environment on real market bars, one bar per step.

The agent chooses a *target position* ``p`` in [-1, +1] (short, flat, long; fractional with a continuous action)
at the close of bar ``t`` and holds it until the close of bar ``t+1``. Episodes are windows of ``episode_length``
steps inside one walk-forward split (see :func:`rpbt.envs.market_data.walk_forward_split`), so a policy trained on
the ``train`` split can be selected on ``validation`` and reported on ``test`` without ever seeing those bars.

Accounting (equity starts at 1.0 at every reset, position at 0):

    at step t, from position p to the new target p':
        cost_t        = cost_bps * 1e-4 * |p' - p|                 (fraction of equity, charged at bar t's close)
        R_{t+1}       = close[t+1] / close[t] - 1                  (simple return of the asset over the step)
        equity_{t+1}  = equity_t * (1 - cost_t) * (1 + p' * R_{t+1})
        reward_t      = log(equity_{t+1} / equity_t) = log(1 - cost_t) + log(1 + p' * R_{t+1})

This is the usual "simple return with proportional transaction cost" model: the position is a fraction of equity
(``p' = -1`` is a short of the whole equity), rebalanced at the close, with costs proportional to the traded
fraction (turnover ``|p' - p|``). Rewards summed over an episode give the log growth of equity. If
``1 + p' * R_{t+1} <= 0`` (a short through a price more than doubling) the account is wiped out: the growth factor
is floored at ``1e-12`` (reward about -27.6) and the episode terminates.

Observation at step t (float32, shape ``(window * (1 + len(features)) + 1,)``), built only from bars ``<= t``:

    [ r[t-window+1], ..., r[t],                      log returns of close, r[i] = log(close[i] / close[i-1])
      p,                                             the position currently held (before this step's action)
      f1[t-window+1], ..., f1[t], f2[...], ... ]     each requested feature over the same window, oldest first

with features ``log_volume_change``: ``log(1 + v[i]) - log(1 + v[i-1])`` (zero volume is safe) and
``high_low_range``: ``log(high[i] / low[i])``. ``TradingEnv.observation_names`` lists the entries. The
observation space's bounds are each series' minimum and maximum over the whole data set, and [-1, 1] for p.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rpbt.envs.market_data import (
    SPLIT_NAMES,
    MarketData,
    MarketDataError,
    load_csv,
    load_shipped,
    walk_forward_split,
)
from rpbt.extras import require

__all__ = ["FEATURES", "TRADING_KWARGS", "TradingEnv", "check_trading_kwargs", "check_trading_setup", "episode_starts",
           "load_market_data", "make_trading_env", "valid_start_range"]

FEATURES = ("log_volume_change", "high_low_range")
DISCRETE_POSITIONS = np.array([-1.0, 0.0, 1.0])
_MIN_GROWTH = 1e-12


def valid_start_range(split: slice, window: int, episode_length: int) -> tuple[int, int]:
    """The first and last start bar (inclusive, absolute bar indices) of an episode inside ``split``.

    An episode starting at bar ``s`` observes bars ``s - window .. s + episode_length - 1`` and is rewarded with
    bars up to ``s + episode_length``; all of them lie inside ``split``, so
    ``split.start + window <= s <= split.stop - 1 - episode_length``.

    Raises ``ValueError`` when the split has fewer than ``window + episode_length + 1`` bars.
    """
    lo = split.start + window
    hi = split.stop - 1 - episode_length
    if hi < lo:
        length = split.stop - split.start
        raise ValueError(
            f"split of {length} bars (bars {split.start}..{split.stop - 1}) is too short for an episode: need "
            f"window + episode_length + 1 = {window} + {episode_length} + 1 = {window + episode_length + 1} bars; "
            f"lower trading.episode_length or trading.window, or give the split more data"
        )
    return lo, hi


def episode_starts(split: slice, window: int, episode_length: int, n: int) -> list[int]:
    """``n`` evenly spaced start bars (absolute indices) covering the valid start range of ``split``.

    The first start is the earliest and (for ``n >= 2``) the last is the latest valid start, so together the
    episodes span the split. Deterministic; starts repeat when the split has fewer than ``n`` distinct starts.
    Raises ``ValueError`` when ``n < 1`` or the split is too short (see :func:`valid_start_range`).
    """
    if n < 1:
        raise ValueError(f"need n >= 1 evaluation episodes, got {n}")
    lo, hi = valid_start_range(split, window, episode_length)
    return [int(s) for s in np.round(np.linspace(lo, hi, n)).astype(np.int64)]


def _check_env_args(data: MarketData, split: str, action: str, window: int, features: Sequence[str],
                    cost_bps: float, episode_length: int, equity_floor: float) -> tuple[str, ...]:
    """Check :class:`TradingEnv`'s arguments and return ``features`` as a tuple; raises ``ValueError`` naming the
    argument for an unknown split or action, a window or episode_length below 1, an equity_floor outside [0, 1), a
    negative or non-finite cost_bps, an unknown or repeated feature, or ``log_volume_change`` without volume."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
    if action not in ("discrete", "continuous"):
        raise ValueError(f"action must be 'discrete' or 'continuous', got {action!r}")
    if int(window) < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if int(episode_length) < 1:
        raise ValueError(f"episode_length must be >= 1, got {episode_length}")
    if not (0.0 <= float(equity_floor) < 1.0):
        raise ValueError(f"equity_floor must be in [0, 1), got {equity_floor}")
    if not (math.isfinite(float(cost_bps)) and float(cost_bps) >= 0.0):
        raise ValueError(f"cost_bps must be >= 0, got {cost_bps}")
    features = tuple(features)
    for f in features:
        if f not in FEATURES:
            raise ValueError(f"unknown feature {f!r}; choose from {FEATURES}")
    if len(set(features)) != len(features):
        raise ValueError(f"duplicate features in {features}")
    if "log_volume_change" in features and data.volume is None:
        raise ValueError(f"feature 'log_volume_change' needs volume, but {data.source or data.name} has none")
    return features


def _feature_series(data: MarketData, features: Sequence[str]) -> np.ndarray:
    """The per-bar series the observation windows read, shape ``(1 + len(features), n)``: log returns of close,
    then each feature; entry ``i`` uses bars ``i-1`` and ``i`` only (never later bars), ``nan`` where undefined."""
    series = [data.log_returns]
    for f in features:
        if f == "log_volume_change":
            lv = np.log1p(data.volume)
            s = np.full(len(data), np.nan)
            s[1:] = np.diff(lv)
        else:  # high_low_range
            s = np.log(data.high / data.low)
        series.append(s)
    return np.stack(series)


class TradingEnv(gym.Env):
    """Single-asset trading on :class:`MarketData` bars; see the module docstring for accounting and observation.

    Args:
        data: the bars (``n`` of them).
        split: ``"train"``, ``"validation"`` or ``"test"``: which walk-forward split episodes are drawn from.
        fractions: train / validation / test fractions for :func:`walk_forward_split`.
        action: ``"discrete"``: ``Discrete(3)``, index 0, 1, 2 -> position -1, 0, +1; ``"continuous"``:
            ``Box(-1, 1, shape=(1,), float32)`` target position (clipped into [-1, 1]).
        window: number of past bars (returns and features) in the observation, >= 1.
        features: any of ``"log_volume_change"`` (needs volume), ``"high_low_range"``.
        cost_bps: proportional transaction cost in basis points of the traded fraction of equity (1 bp = 1e-4).
        episode_length: steps per episode (>= 1); the episode is truncated after this many steps.
        equity_floor: the episode terminates when equity (starting at 1.0) falls below this, in [0, 1).
        deterministic_start: start every episode at this absolute bar index (evaluation); ``None``: a random start
            drawn from ``self.np_random`` (seeded by ``reset(seed=...)``). ``reset(options={"start": k})`` overrides
            both for one episode.

    ``step`` returns ``info`` with floats ``equity`` (after the step), ``position`` (held after the step),
    ``turnover`` (``|p' - p|`` of the step), ``cost`` (fraction of equity paid), ``log_return`` (the reward),
    ``asset_return`` (``R_{t+1}``) and int ``bar`` (index of the bar at which the next decision is made).
    ``reset`` returns the same keys (equity 1, position 0, the rest 0, bar = start).

    Raises ``ValueError`` for unknown options, a split too short for ``window + episode_length + 1`` bars,
    ``log_volume_change`` without volume, or a start outside the split's valid range.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        data: MarketData,
        split: str = "train",
        fractions: Sequence[float] = (0.7, 0.15, 0.15),
        action: str = "discrete",
        window: int = 1,
        features: Sequence[str] = (),
        cost_bps: float = 1.0,
        episode_length: int = 256,
        equity_floor: float = 0.5,
        deterministic_start: Optional[int] = None,
    ) -> None:
        super().__init__()
        features = _check_env_args(data, split, action, window, features, cost_bps, episode_length, equity_floor)

        self.data = data
        self.split = split
        self.fractions = tuple(float(f) for f in fractions)
        self.action_kind = action
        self.window = int(window)
        self.features = features
        self.cost_bps = float(cost_bps)
        self.episode_length = int(episode_length)
        self.equity_floor = float(equity_floor)
        self.bars_per_year = float(data.bars_per_year)

        self.splits = walk_forward_split(len(data), self.fractions)
        self.split_slice = self.splits[split]
        self.start_range = valid_start_range(self.split_slice, self.window, self.episode_length)
        self.deterministic_start = None if deterministic_start is None else self._check_start(deterministic_start)

        self._close = data.close
        self._series = _feature_series(data, features)  # (1 + len(features), n)
        self._build_spaces()

        self._t: Optional[int] = None
        self._start = 0
        self._steps = 0
        self._position = 0.0
        self._equity = 1.0
        self._done = True

    # ------------------------------------------------------------------ helpers

    def _build_spaces(self) -> None:
        """Set ``observation_names``, ``observation_space`` and ``action_space`` from the window and the series."""
        self.observation_names = (
            [f"log_return[t-{k}]" for k in range(self.window - 1, -1, -1)]
            + ["position"]
            + [f"{f}[t-{k}]" for f in self.features for k in range(self.window - 1, -1, -1)]
        )
        # Bounds: each series' range over the whole data set (true for every split, finite, so gymnasium's
        # checker is satisfied); the position lies in [-1, 1].
        s_low = np.nanmin(self._series, axis=1)
        s_high = np.nanmax(self._series, axis=1)
        low = np.concatenate([np.repeat(s_low[0], self.window), [-1.0], np.repeat(s_low[1:], self.window)])
        high = np.concatenate([np.repeat(s_high[0], self.window), [1.0], np.repeat(s_high[1:], self.window)])
        self.observation_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        if self.action_kind == "discrete":
            self.action_space = spaces.Discrete(3)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def _check_start(self, start: Any) -> int:
        lo, hi = self.start_range
        s = int(start)
        if not (lo <= s <= hi):
            raise ValueError(
                f"episode start {s} outside the {self.split} split's valid starts {lo}..{hi} "
                f"(window {self.window}, episode_length {self.episode_length})"
            )
        return s

    def _target(self, action: Any) -> float:
        if self.action_kind == "discrete":
            a = int(np.asarray(action).reshape(-1)[0]) if np.ndim(action) else int(action)
            if not 0 <= a < 3:
                raise ValueError(f"discrete action must be 0, 1 or 2 (short, flat, long), got {action!r}")
            return float(DISCRETE_POSITIONS[a])
        a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        if math.isnan(a):
            raise ValueError("continuous action is NaN")
        return float(np.clip(a, -1.0, 1.0))

    def _obs(self) -> np.ndarray:
        t = self._t
        assert t is not None
        window = self._series[:, t - self.window + 1 : t + 1]  # bars <= t only
        return np.concatenate([window[0], [self._position], window[1:].reshape(-1)]).astype(np.float32)

    def _info(self, turnover: float = 0.0, cost: float = 0.0, log_return: float = 0.0, asset_return: float = 0.0):
        return {
            "equity": float(self._equity),
            "position": float(self._position),
            "turnover": float(turnover),
            "cost": float(cost),
            "log_return": float(log_return),
            "asset_return": float(asset_return),
            "bar": int(self._t),
        }

    # ------------------------------------------------------------------ API

    def episode_starts_for_evaluation(self, split: Optional[str] = None, n: int = 4) -> list[int]:
        """``n`` evenly spaced deterministic start bars (absolute indices) inside ``split`` (default: this env's).

        Use them with ``reset(options={"start": k})`` on an env of that split, so validation scores do not depend
        on a random draw. See :func:`episode_starts`.
        """
        split = self.split if split is None else split
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        return episode_starts(self.splits[split], self.window, self.episode_length, n)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None):
        """Start an episode at ``options["start"]``, else ``deterministic_start``, else a random valid start.

        Returns ``(observation, info)``. Raises ``ValueError`` for a start outside the valid range.
        """
        super().reset(seed=seed)
        if options and options.get("start") is not None:
            start = self._check_start(options["start"])
        elif self.deterministic_start is not None:
            start = self.deterministic_start
        else:
            lo, hi = self.start_range
            start = int(self.np_random.integers(lo, hi + 1))
        self._start = start
        self._t = start
        self._steps = 0
        self._position = 0.0
        self._equity = 1.0
        self._done = False
        return self._obs(), self._info()

    def step(self, action: Any):
        """Move to target position ``action`` at bar t's close and hold it to bar t+1's close.

        Returns ``(observation at t+1, reward, terminated, truncated, info)``; see the module docstring for the
        reward. ``terminated``: equity fell below ``equity_floor`` (or was wiped out); ``truncated``:
        ``episode_length`` steps were taken without termination. Raises ``RuntimeError`` if called before
        ``reset`` or after the episode ended.
        """
        if self._done or self._t is None:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset()")
        t = self._t
        target = self._target(action)
        turnover = abs(target - self._position)
        cost = self.cost_bps * 1e-4 * turnover
        asset_return = self._close[t + 1] / self._close[t] - 1.0
        growth = (1.0 - cost) * (1.0 + target * asset_return)
        wiped_out = growth <= _MIN_GROWTH
        growth = max(growth, _MIN_GROWTH)
        reward = math.log(growth)
        self._equity *= growth
        self._position = target
        self._t = t + 1
        self._steps += 1
        terminated = bool(wiped_out or self._equity < self.equity_floor)
        truncated = bool(not terminated and self._steps >= self.episode_length)
        self._done = terminated or truncated
        info = self._info(turnover, cost, reward, asset_return)
        return self._obs(), float(reward), terminated, truncated, info


# --------------------------------------------------------------------------------------------------- factory


@lru_cache(maxsize=8)
def _cached_csv(path: str, mtime_ns: int, size: int, date_format: Optional[str] = None) -> MarketData:
    return load_csv(path, date_format=date_format)


@lru_cache(maxsize=4)
def _cached_shipped(name: str) -> MarketData:
    return load_shipped(name)


def load_market_data(data_cfg) -> MarketData:
    """The :class:`MarketData` named by an ``env.data`` section (:class:`rpbt.config.TradingDataConfig`).

    Loaded once per process and shared by every environment (cached by path, modification time and size for
    CSV files); a CSV's timestamps are parsed with ``env.data.date_format`` when set. Raises
    :class:`rpbt.envs.market_data.MarketDataError` for a bad file, or a missing one (naming ``env.data.path``
    and, for a relative path, the current directory it was looked up in), and
    :class:`rpbt.extras.MissingExtraError` naming ``pip install 'rpbt[trading]'`` without pandas.
    """
    require("pandas", "trading", "reading market data (env.id: trading)")
    if data_cfg.source == "csv":
        path = Path(data_cfg.path).expanduser()
        date_format = data_cfg.date_format
        try:
            st = path.stat()
        except FileNotFoundError:
            where = "" if path.is_absolute() else f", relative to the current directory {Path.cwd()}"
            raise MarketDataError(f"{path}: file not found (env.data.path {data_cfg.path!r}{where})") from None
        except OSError:
            return load_csv(path, date_format=date_format)  # raises MarketDataError naming the file
        return _cached_csv(str(path), st.st_mtime_ns, st.st_size, date_format)
    return _cached_shipped(data_cfg.source)


#: Constructor arguments ``env.kwargs`` may set on ``env.id: trading`` (the ``env.trading`` options and a fixed start).
TRADING_KWARGS = ("action", "window", "features", "cost_bps", "episode_length", "equity_floor", "deterministic_start")
#: Constructor arguments the run sets itself, with the config key to use instead.
_RUN_SET_KWARGS = {"split": "the run chooses the train / validation / test part itself",
                   "fractions": "set the fractions with env.data.split",
                   "data": "set the data with env.data.source / env.data.path"}


def check_trading_kwargs(env_cfg) -> None:
    """Check the keys of ``env.kwargs`` for ``env.id: trading`` (no environment is made).

    Raises :class:`rpbt.envs.factory.EnvError` naming ``env.kwargs`` and the key for a key the trading environment
    does not take (the message lists those it does) or one the run sets itself (``split``, ``fractions``, ``data``).
    """
    from rpbt.envs.errors import EnvError

    for key in (env_cfg.kwargs or {}):
        if key in _RUN_SET_KWARGS:
            raise EnvError(f"env.kwargs sets {key!r}, which the trading environment (env.id: trading) does not take "
                           f"from the config: {_RUN_SET_KWARGS[key]}")
        if key not in TRADING_KWARGS:
            raise EnvError(f"env.kwargs has {key!r}, which the trading environment (env.id: trading) does not take; "
                           f"it takes {', '.join(TRADING_KWARGS)} (usually set as env.trading.<name>)")


def make_trading_env(env_cfg, split: str = "train", **overrides: Any) -> TradingEnv:
    """A :class:`TradingEnv` from an ``env`` section (:class:`rpbt.config.EnvConfig`).

    Reads the data from ``env_cfg.data`` (source, path, split fractions) and the options from ``env_cfg.trading``;
    ``env_cfg.kwargs`` and then ``overrides`` (e.g. ``deterministic_start=...``) override constructor arguments.

    Raises :class:`rpbt.envs.market_data.MarketDataError` for bad data; :class:`rpbt.envs.factory.EnvError`
    naming ``env.kwargs`` for a key it may not set (:func:`check_trading_kwargs`) or a value the environment
    refuses (a ``window`` of 0, an unknown feature, a ``deterministic_start`` outside the split, ...).
    """
    check_trading_kwargs(env_cfg)
    t = env_cfg.trading
    kwargs: dict[str, Any] = dict(
        split=split,
        fractions=tuple(env_cfg.data.split),
        action=t.action,
        window=t.window,
        features=tuple(t.features),
        cost_bps=t.cost_bps,
        episode_length=t.episode_length,
        equity_floor=t.equity_floor,
    )
    kwargs.update(env_cfg.kwargs or {})
    kwargs.update(overrides)
    data = load_market_data(env_cfg.data)
    try:
        return TradingEnv(data, **kwargs)
    except (TypeError, ValueError) as err:
        if not env_cfg.kwargs:  # not the user's kwargs: a bug or bad data, raised as it is
            raise
        from rpbt.envs.errors import EnvError

        raise EnvError(f"the trading environment (env.id: trading) cannot be made with env.kwargs "
                       f"{dict(env_cfg.kwargs)}: {err}") from None


def _data_label(data_cfg, data: Optional[MarketData] = None) -> str:
    if data_cfg.source == "csv":
        return f"{data_cfg.path} (env.data.path)"
    where = f" ({data.source})" if data is not None and data.source else ""
    return f"env.data.source {data_cfg.source}{where}"


def _csv_header(path: str) -> list[str]:
    try:
        with open(Path(path).expanduser(), newline="", encoding="utf-8-sig") as f:
            return [c.strip() for c in f.readline().strip().split(",") if c.strip()]
    except (OSError, UnicodeDecodeError):  # pragma: no cover - load_csv read it a moment ago
        return []


def _min_bars(fractions: Sequence[float], needs: dict[str, int]) -> Optional[int]:
    """Fewest bars for which every split in ``needs`` gets at least its bars (None: no number is enough)."""
    fr = dict(zip(SPLIT_NAMES, fractions))
    if any(fr[k] <= 0 for k in needs):
        return None
    first = max(1, max(math.floor(needs[k] / fr[k]) for k in needs) - 2)
    for n in range(first, first + 10_000):
        splits = walk_forward_split(n, fractions, min_length=0)
        if all(splits[k].stop - splits[k].start >= need for k, need in needs.items()):
            return n
    return None  # pragma: no cover - ten thousand bars past the estimate always suffice


def check_trading_setup(env_cfg, validation_episodes: bool = True) -> MarketData:
    """Check, before any training, that the data of an ``env`` section (``env.id: trading``) fits its options.

    Loads the bars (:func:`load_market_data`: file, columns and values) and checks that a requested feature has
    its column (``log_volume_change`` needs volume) and that ``env.data.split`` leaves each part long enough:

    * train: a training episode, ``window + episode_length + 1`` bars;
    * validation: the same when members are scored on validation episodes (``validation_episodes``), else
      ``window + 2`` bars so ``rpbt evaluate --split validation`` can run (when its fraction is > 0);
    * test: ``window + 2`` bars, one evaluation step after a full window (when its fraction is > 0).

    ``window`` and ``episode_length`` are ``env.trading``'s, or ``env.kwargs``'s when given there. Returns the data.
    Raises :class:`MarketDataError` with one message naming the file (or shipped series), the config keys, what
    each too-short part has and needs, and the fewest bars that would do; :class:`rpbt.envs.factory.EnvError`
    naming ``env.kwargs`` for a key or value the trading environment does not take (:func:`make_trading_env`).
    """
    from rpbt.envs.errors import EnvError

    t = env_cfg.trading
    kwargs = env_cfg.kwargs or {}
    check_trading_kwargs(env_cfg)
    try:
        window = int(kwargs.get("window", t.window))
        episode_length = int(kwargs.get("episode_length", t.episode_length))
        features = tuple(kwargs.get("features", t.features))
    except (TypeError, ValueError) as err:
        raise EnvError(f"env.kwargs {dict(kwargs)}: window and episode_length must be integers and features a list "
                       f"({err})") from None
    fractions = tuple(float(f) for f in env_cfg.data.split)
    data = load_market_data(env_cfg.data)
    label = _data_label(env_cfg.data, data)

    if "log_volume_change" in features and data.volume is None:
        found = _csv_header(data.source) if data.source else []
        columns = f" (columns found: {', '.join(found)})" if found else ""
        raise MarketDataError(
            f"{label}: has no 'volume' column{columns}, but env.trading.features asks for 'log_volume_change', "
            "which is computed from volume; add a Volume column to the file or remove log_volume_change from "
            "env.trading.features")

    episode = window + episode_length + 1
    episode_why = (f"for an episode (env.trading.window + env.trading.episode_length + 1 = {window} + "
                   f"{episode_length} + 1)")
    evaluate_why = f"for `rpbt evaluate` (env.trading.window + 2 = {window} + 2)"
    needs = {"train": (episode, episode_why)}
    if validation_episodes:
        needs["validation"] = (episode, f"{episode_why[:-1]}; members are scored on validation episodes)")
    elif fractions[1] > 0:
        needs["validation"] = (window + 2, evaluate_why)
    if fractions[2] > 0:
        needs["test"] = (window + 2, evaluate_why)

    n = len(data)
    splits = walk_forward_split(n, fractions, min_length=0)
    problems = []
    for name, (need, why) in needs.items():
        length = splits[name].stop - splits[name].start
        if length < need:
            problems.append(f"the {name} part gets {length} bars but needs {need} {why}")
    if not problems:
        if kwargs:  # a value of env.kwargs the environment refuses (window 0, an unknown feature, ...): EnvError
            make_trading_env(env_cfg, split="train").close()
        return data
    least = _min_bars(fractions, {k: v[0] for k, v in needs.items()})
    advice = (f"use at least {least} bars, give the short part a larger fraction of env.data.split, or lower "
              "env.trading.episode_length / env.trading.window" if least is not None else
              "give every part a fraction > 0 in env.data.split")
    raise MarketDataError(f"{label}: {n} bars split {list(fractions)} (env.data.split) are too few: "
                          f"{'; '.join(problems)}; {advice}")
