"""Trading accounting: metrics of an equity curve, and a member run over a whole split against baselines.

Trading metrics (:func:`trading_metrics`) are computed from per-bar log returns and position changes; see its
docstring for the exact definitions (Sharpe ratio annualized with ``MarketData.bars_per_year``).
:func:`evaluate_trading_split` runs a member deterministically (:func:`rpbt.evaluation.policy.evaluate_policy`) over
the whole split as one episode and compares it with buy-and-hold and flat through the same environment.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from rpbt.config import EnvConfig
from rpbt.evaluation.policy import EpisodeTrace, ObsPerturbation, evaluate_policy
from rpbt.extras import require

#: What ``curves["position"][k]`` of :func:`evaluate_trading_split`'s report means (written into the report).
POSITION_MEANING = ("curves.position[k] (k >= 1) is the position held from dates[k-1]'s close to dates[k]'s close "
                    "(chosen at dates[k-1], earning that bar's return); position[0] = 0, before the first decision")

__all__ = ["POSITION_MEANING", "evaluate_trading_split", "plot_equity_curves", "trading_metrics",
           "whole_split_env_config"]


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
    ``split``, ``start_bar``, ``end_bar``, ``start_date``, ``end_date``, ``bars_per_year``, ``cost_bps`` (the cost
    the environment charged: ``env.kwargs``'s ``cost_bps`` when set there, else ``env.trading.cost_bps``),
    ``terminated`` (the policy's account was wiped out), ``curves`` (``dates``, ``policy``, ``buy_and_hold``,
    ``flat`` equity and the policy's ``position``, each of length T+1) and ``position_meaning`` (a sentence):
    ``equity[k]`` is the equity at ``dates[k]``'s close, and ``position[k]`` (k >= 1) is the position held from
    ``dates[k-1]``'s close to ``dates[k]``'s close (chosen at ``dates[k-1]``, earning that bar's return);
    ``position[0] = 0``, before the first decision.
    """
    from rpbt.envs.trading import load_market_data

    cfg_w, start = whole_split_env_config(env_cfg, split)
    data = load_market_data(env_cfg.data)
    bpy = float(data.bars_per_year)
    ep = evaluate_policy(learner, member, cfg_w, split, starts=[start], obs_perturbation=obs_perturbation).episodes[0]
    bh = _constant_position_trace(cfg_w, split, start, 1.0)
    flat = _constant_position_trace(cfg_w, split, start, 0.0)
    # The cost the environment charges: env.kwargs (e.g. {cost_bps: 50}) override env.trading.cost_bps, as in
    # make_trading_env.
    cost_bps = float((cfg_w.kwargs or {}).get("cost_bps", cfg_w.trading.cost_bps))
    # Baselines span the whole split; the policy's curve is shorter only if its account was wiped out.
    dates = [str(np.datetime_as_string(data.dates[b], unit="s")) for b in bh.bars]
    return {
        "split": split,
        "start_bar": int(bh.bars[0]),
        "end_bar": int(bh.bars[-1]),
        "start_date": dates[0],
        "end_date": dates[-1],
        "bars_per_year": bpy,
        "cost_bps": cost_bps,
        "terminated": bool(ep.terminated),
        "position_meaning": POSITION_MEANING,
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
    """Write a PNG: equity of the policy, buy-and-hold and flat (top) and the policy's position (bottom).

    The position is drawn as a step over the bar it was held: ``position[k]`` spans ``(dates[k-1], dates[k]]``
    (matplotlib's ``where="pre"``), so a position change shows at the bar where it was taken. Raises
    :class:`rpbt.extras.MissingExtraError` (``pip install 'rpbt[trading]'``) when matplotlib is not installed.
    """
    matplotlib = require("matplotlib", "trading", "the equity-curve figure of a trading evaluation")

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
    axp.step(x[: len(curves["position"])], curves["position"], where="pre", color="C0")
    axp.set_ylabel("position")
    axp.set_ylim(-1.1, 1.1)
    axp.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

