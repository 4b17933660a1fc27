"""Trading accounting: metrics of an equity curve by hand, the whole-split report with its baselines, its plot."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rpbt.envs.market_data import walk_forward_split
from rpbt.envs.trading import make_trading_env
from rpbt.evaluation.trading import evaluate_trading_split, trading_metrics
from tests.conftest import policy_alone, tiny_config


def test_trading_metrics_on_a_hand_computed_curve():
    # Equity 1 -> 1.1 -> 0.99 -> 1.089 while holding +1, -1, +1 after starting flat.
    r = [math.log(1.1), math.log(0.9), math.log(1.1)]
    turnover = [1.0, 2.0, 2.0]
    m = trading_metrics(r, turnover, bars_per_year=252.0)
    mean = (2 * math.log(1.1) + math.log(0.9)) / 3
    var = (2 * (math.log(1.1) - mean) ** 2 + (math.log(0.9) - mean) ** 2) / 2  # sample variance, ddof 1
    assert m["total_log_return"] == pytest.approx(math.log(1.089))
    assert m["final_equity"] == pytest.approx(1.089)
    assert m["sharpe"] == pytest.approx(math.sqrt(252) * mean / math.sqrt(var))
    assert m["sharpe"] == pytest.approx(3.8944, abs=1e-3)
    assert m["max_drawdown"] == pytest.approx(1 - 0.99 / 1.1)  # peak 1.1, trough 0.99: 10%
    assert m["turnover"] == pytest.approx(5.0)
    assert m["turnover_per_year"] == pytest.approx(5.0 * 252 / 3)
    assert m["annualized_log_return"] == pytest.approx(mean * 252)
    assert m["annualized_volatility"] == pytest.approx(math.sqrt(var * 252))
    assert m["bars"] == 3 and m["years"] == pytest.approx(3 / 252)


def test_trading_metrics_drawdown_counts_a_loss_from_the_start_and_flat_is_zero():
    m = trading_metrics([math.log(0.8), math.log(1.25), math.log(0.5)], [1, 0, 0], 52.0)
    assert m["max_drawdown"] == pytest.approx(0.5)  # 1 -> 0.8 -> 1.0 (new peak) -> 0.5
    flat = trading_metrics([0.0] * 5, [0.0] * 5, 252.0)
    assert flat["sharpe"] == 0.0 and flat["max_drawdown"] == 0.0 and flat["total_log_return"] == 0.0
    assert trading_metrics([0.01], [1.0], 252.0)["sharpe"] is None  # one bar: no std
    with pytest.raises(ValueError, match="same length"):
        trading_metrics([0.0, 0.1], [0.0], 252.0)
    with pytest.raises(ValueError, match="bars_per_year"):
        trading_metrics([0.0], [0.0], 0.0)


def test_whole_split_report_baselines_and_policy_accounting_by_hand(tmp_path):
    rng = np.random.default_rng(3)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 200)))
    path = _csv(tmp_path, np.round(closes, 4))
    cfg = tiny_config(f"env.data.path={path}", "env.id=trading", "env.trading.episode_length=16",
                      "env.trading.cost_bps=10", "env.trading.window=2")
    policy = policy_alone(cfg, [0])
    env = make_trading_env(cfg.env, "test")
    close = env.data.close
    sl = walk_forward_split(len(close), cfg.env.data.split)["test"]
    report = evaluate_trading_split(policy, 0, cfg.env, "test")
    start, end = sl.start + 2, sl.stop - 1
    assert (report["start_bar"], report["end_bar"]) == (start, end)
    c = 10 * 1e-4
    bh = report["buy_and_hold"]
    assert bh["total_log_return"] == pytest.approx(math.log(1 - c) + math.log(close[end] / close[start]))
    assert bh["turnover"] == 1.0 and bh["bars"] == end - start
    assert report["flat"]["total_log_return"] == 0.0 and report["flat"]["turnover"] == 0.0
    # The policy's equity follows the documented accounting from its own positions.
    pos = np.asarray(report["curves"]["position"])
    equity = 1.0
    for t in range(end - start):
        b = start + t
        equity *= (1 - c * abs(pos[t + 1] - pos[t])) * (1 + pos[t + 1] * (close[b + 1] / close[b] - 1))
    assert report["policy"]["final_equity"] == pytest.approx(equity, rel=1e-9)
    assert "held from dates[k-1]'s close to dates[k]'s close" in report["position_meaning"]  # what was used above
    assert report["curves"]["policy"][-1] == pytest.approx(equity, rel=1e-9)
    assert report["policy"]["turnover"] == pytest.approx(np.abs(np.diff(pos)).sum())
    assert report["bars_per_year"] == pytest.approx(365.25)  # daily bars every calendar day: a 7-day market


def test_whole_split_report_names_the_cost_set_in_env_kwargs(tmp_path):
    # env.kwargs {cost_bps: 50} overrides env.trading.cost_bps (default 1) in the environment; the report said 1.
    closes = 100 * np.exp(np.cumsum(np.random.default_rng(4).normal(0, 0.02, 120)))
    path = _csv(tmp_path, np.round(closes, 4))
    cfg = tiny_config(f"env.data.path={path}", "env.id=trading", "env.trading.episode_length=16",
                      "env.kwargs={cost_bps: 50}")
    assert cfg.env.trading.cost_bps == 1.0
    report = evaluate_trading_split(policy_alone(cfg, [0]), 0, cfg.env, "test")
    assert report["cost_bps"] == 50.0
    close = make_trading_env(cfg.env, "test").data.close
    start, end = report["start_bar"], report["end_bar"]
    # buy-and-hold pays 50 bp once on entry: log(1 - 0.005) + log(close[end] / close[start])
    assert report["buy_and_hold"]["total_log_return"] == pytest.approx(
        math.log(1 - 0.005) + math.log(close[end] / close[start]))


def test_png_draws_each_position_over_the_bar_it_was_held(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib.cbook import STEP_LOOKUP_MAP

    from rpbt.evaluation.trading import plot_equity_curves

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at it
    metrics = {"total_log_return": 0.0}
    # flat before the first decision, long over bar 0 -> 1, short over bar 1 -> 2 and bar 2 -> 3
    report = {"policy": metrics, "buy_and_hold": metrics, "flat": metrics,
              "curves": {"dates": ["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-04"],
                         "policy": [1.0] * 4, "buy_and_hold": [1.0] * 4, "flat": [1.0] * 4,
                         "position": [0.0, 1.0, -1.0, -1.0]}}
    plot_equity_curves(report, tmp_path / "eq.png", "t")
    (line,) = figures[0].axes[1].lines
    x, y = STEP_LOOKUP_MAP[line.get_drawstyle()](np.arange(4.0), line.get_ydata())
    # the path rises to +1 at bar 0 and stays there until bar 1 (long held over bar 0 -> 1), then -1 to the end;
    # drawn "post" it would sit at 0 until bar 1 and at +1 over bar 1 -> 2, one bar late
    assert list(zip(x.tolist(), y.tolist())) == [(0, 0), (0, 1), (1, 1), (1, -1), (2, -1), (2, -1), (3, -1)]


def _csv(tmp_path, closes):
    path = tmp_path / "bars.csv"
    rows = ["Date,Open,High,Low,Close,Volume"]
    day = np.datetime64("2020-01-01")
    for k, c in enumerate(closes):
        rows.append(f"{day + k},{c},{c * 1.01},{c * 0.99},{c},1000")
    path.write_text("\n".join(rows) + "\n")
    return path
