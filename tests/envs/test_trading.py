"""TradingEnv: reward and cost accounting by hand, no look-ahead, episode bounds, Gymnasium API."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rpbt.config import EnvConfig, TradingConfig, TradingDataConfig
from rpbt.envs.market_data import MarketData, load_shipped, walk_forward_split
from rpbt.envs.trading import TradingEnv, episode_starts, make_trading_env

SHORT, FLAT, LONG = 0, 1, 2  # discrete action indices -> positions -1, 0, +1


def make_data(close, volume=None, high=None, low=None) -> MarketData:
    close = np.asarray(close, dtype=float)
    n = close.shape[0]
    dates = np.datetime64("2021-01-04") + np.arange(n).astype("timedelta64[D]")
    return MarketData(
        dates=dates,
        open=close.copy(),
        high=close * 1.01 if high is None else high,
        low=close * 0.99 if low is None else low,
        close=close,
        volume=volume,
        name="synthetic",
    )


def random_data(n=80, seed=0) -> MarketData:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    high = close * np.exp(rng.uniform(0, 0.02, n))
    low = close * np.exp(-rng.uniform(0, 0.02, n))
    volume = rng.integers(0, 1000, n).astype(float)  # includes zeros now and then
    volume[3] = 0.0
    return make_data(close, volume=volume, high=high, low=low)


@pytest.fixture(scope="module")
def googl():
    return load_shipped("googl")


# ----------------------------------------------------------------------------------------------- accounting


def test_three_step_reward_and_cost_by_hand():
    # Closes by bar: 0: 100, 1: 100, 2: 110, 3: 99, 4: 108.9.  window = 1, so the first start is bar 1
    # (the observation needs close[0]); three steps use bars 1..4.  cost_bps = 10 -> 0.001 per unit traded.
    env = TradingEnv(
        make_data([100.0, 100.0, 110.0, 99.0, 108.9]),
        fractions=(1.0, 0.0, 0.0),
        cost_bps=10.0,
        episode_length=3,
        deterministic_start=1,
    )
    obs, info = env.reset(seed=0)
    # obs = [log(close[1]/close[0]), position] = [log(100/100), 0]
    np.testing.assert_allclose(obs, [0.0, 0.0])
    assert info["equity"] == 1.0 and info["position"] == 0.0

    # Step 1 at bar 1: flat -> long.  turnover |1 - 0| = 1, cost = 0.001.
    #   asset return 110/100 - 1 = 0.10;  equity = 1 * (1 - 0.001) * (1 + 1 * 0.10) = 0.999 * 1.1 = 1.0989
    obs, reward, terminated, truncated, info = env.step(LONG)
    assert info["turnover"] == 1.0 and info["cost"] == pytest.approx(0.001)
    assert info["asset_return"] == pytest.approx(0.10)
    assert info["equity"] == pytest.approx(1.0989)
    assert reward == pytest.approx(math.log(1.0989))
    assert info["log_return"] == reward
    np.testing.assert_allclose(obs, [math.log(110 / 100), 1.0], rtol=1e-6)
    assert not terminated and not truncated

    # Step 2 at bar 2: long -> flat.  turnover 1, cost 0.001; flat, so the move 110 -> 99 does not matter.
    #   equity = 1.0989 * 0.999 * (1 + 0 * (-0.1)) = 1.0978011
    obs, reward, terminated, truncated, info = env.step(FLAT)
    assert info["turnover"] == 1.0 and info["position"] == 0.0
    assert info["equity"] == pytest.approx(1.0978011)
    assert reward == pytest.approx(math.log(0.999))
    np.testing.assert_allclose(obs, [math.log(99 / 110), 0.0], rtol=1e-6)
    assert not terminated and not truncated

    # Step 3 at bar 3: flat -> short.  turnover 1, cost 0.001; asset return 108.9/99 - 1 = +0.10, short loses 10%.
    #   equity = 1.0978011 * 0.999 * (1 - 0.10) = 1.0978011 * 0.8991 = 0.98703296901
    obs, reward, terminated, truncated, info = env.step(SHORT)
    assert info["position"] == -1.0 and info["turnover"] == 1.0
    assert info["asset_return"] == pytest.approx(0.10)
    assert info["equity"] == pytest.approx(0.98703296901)
    assert reward == pytest.approx(math.log(0.999 * 0.9))
    np.testing.assert_allclose(obs, [math.log(108.9 / 99), -1.0], rtol=1e-6)
    # episode_length = 3 steps: truncated (not terminated: equity 0.987 is above the 0.5 floor)
    assert truncated and not terminated

    # Summed rewards are the log growth of equity: log(0.98703296901) = 3 log(0.999) + log(1.1) + log(0.9)
    assert math.log(info["equity"]) == pytest.approx(3 * math.log(0.999) + math.log(1.1) + math.log(0.9))


def test_continuous_positions_flip_cost_and_clipping():
    # Closes 50, 50, 55, 44.  cost_bps = 20 -> 0.002 per unit traded.
    env = TradingEnv(
        make_data([50.0, 50.0, 55.0, 44.0]),
        fractions=(1.0, 0.0, 0.0),
        action="continuous",
        cost_bps=20.0,
        episode_length=2,
    )
    env.reset(options={"start": 1})
    # Step 1: 0 -> 0.5.  cost = 0.002 * 0.5 = 0.001; return 55/50 - 1 = 0.1
    #   equity = 0.999 * (1 + 0.5 * 0.1) = 0.999 * 1.05 = 1.04895
    _, r1, _, _, info = env.step(np.array([0.5], dtype=np.float32))
    assert info["cost"] == pytest.approx(0.001) and info["equity"] == pytest.approx(1.04895)
    # Step 2: target -7 is clipped to -1; 0.5 -> -1 is turnover 1.5, cost 0.003; return 44/55 - 1 = -0.2
    #   equity = 1.04895 * 0.997 * (1 + (-1) * (-0.2)) = 1.04895 * 0.997 * 1.2 = 1.25496378
    _, r2, _, truncated, info = env.step(np.array([-7.0], dtype=np.float32))
    assert info["position"] == -1.0 and info["turnover"] == pytest.approx(1.5)
    assert info["equity"] == pytest.approx(1.25496378)
    assert r1 + r2 == pytest.approx(math.log(1.25496378))
    assert truncated


def test_equity_floor_terminates():
    # Long through a 60% crash: equity 1 * (1 - 0.0001) * 0.4 < 0.5 -> terminated, not truncated.
    env = TradingEnv(make_data([100.0, 100.0, 40.0, 40.0, 40.0]), fractions=(1.0, 0.0, 0.0), episode_length=3)
    env.reset(options={"start": 1})
    _, reward, terminated, truncated, info = env.step(LONG)
    assert terminated and not truncated
    assert info["equity"] == pytest.approx(0.9999 * 0.4)
    assert reward == pytest.approx(math.log(0.9999 * 0.4))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(FLAT)


def test_short_wipe_out_is_finite_and_terminates():
    # Short while the price triples: 1 + (-1) * 2 < 0 -> growth floored, finite reward, terminated even with floor 0.
    env = TradingEnv(
        make_data([10.0, 10.0, 30.0, 30.0]), fractions=(1.0, 0.0, 0.0), episode_length=2, equity_floor=0.0
    )
    env.reset(options={"start": 1})
    _, reward, terminated, _, info = env.step(SHORT)
    assert terminated and math.isfinite(reward) and reward < -20
    assert info["equity"] > 0


# ----------------------------------------------------------------------------------------------- look-ahead


@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_no_look_ahead(action):
    """Changing every bar after t leaves every observation (and reward) up to bar t unchanged."""
    data = random_data(n=80, seed=1)
    kw = dict(
        fractions=(1.0, 0.0, 0.0),
        action=action,
        window=4,
        features=("log_volume_change", "high_low_range"),
        episode_length=60,
        deterministic_start=6,
    )
    rng = np.random.default_rng(2)
    if action == "discrete":
        actions = [int(a) for a in rng.integers(0, 3, 60)]
    else:
        actions = [rng.uniform(-1.5, 1.5, 1).astype(np.float32) for _ in range(60)]

    def rollout(d, upto):
        env = TradingEnv(d, **kw)
        obs, _ = env.reset()
        seen, rewards = [obs], []
        for a in actions[: upto - 6]:
            obs, r, *_ = env.step(a)
            seen.append(obs)
            rewards.append(r)
        return seen, rewards

    for t in (6, 7, 20, 45):
        changed = MarketData(
            dates=data.dates,
            open=data.open.copy(),
            high=data.high.copy(),
            low=data.low.copy(),
            close=data.close.copy(),
            volume=data.volume.copy(),
            name="changed",
        )
        k = slice(t + 1, None)
        changed.close[k] *= np.exp(rng.normal(0, 0.2, 80 - t - 1))
        changed.high[k] = changed.close[k] * 1.5
        changed.low[k] = changed.close[k] * 0.5
        changed.volume[k] = rng.integers(0, 10**6, 80 - t - 1)
        seen_a, rew_a = rollout(data, t)
        seen_b, rew_b = rollout(changed, t)
        assert len(seen_a) == t - 6 + 1
        for oa, ob in zip(seen_a, seen_b):
            np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(rew_a, rew_b)
        # and the observation at t does depend on bar t itself (the check above is not vacuous)
        moved = changed.close.copy()
        moved[t] *= 1.1
        high, low = np.maximum(data.high, moved), np.minimum(data.low, moved)
        moved_data = MarketData(data.dates, moved, high, low, moved, data.volume)
        seen_c, _ = rollout(moved_data, t)
        assert not np.array_equal(seen_c[-1], seen_a[-1])


def test_observation_layout():
    data = random_data(n=40, seed=3)
    env = TradingEnv(data, fractions=(1.0, 0.0, 0.0), window=3, features=("log_volume_change", "high_low_range"),
                     episode_length=10)
    obs, _ = env.reset(options={"start": 10})
    lr = np.log(data.close[8:11] / data.close[7:10])
    lv = np.log1p(data.volume[8:11]) - np.log1p(data.volume[7:10])
    hl = np.log(data.high[8:11] / data.low[8:11])
    np.testing.assert_allclose(obs, np.concatenate([lr, [0.0], lv, hl]).astype(np.float32), rtol=1e-6)
    assert env.observation_names[3] == "position" and len(env.observation_names) == obs.shape[0] == 10
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert np.all(np.isfinite(obs))  # zero volume at bar 3 is handled by log1p


# ----------------------------------------------------------------------------------------------- episodes


def test_episodes_truncate_at_episode_length_inside_split(googl):
    env = TradingEnv(googl, split="validation", episode_length=25, window=2)
    split = walk_forward_split(len(googl))["validation"]
    lo, hi = env.start_range
    assert lo == split.start + 2 and hi == split.stop - 1 - 25
    rng = np.random.default_rng(0)
    for seed in range(5):
        _, info = env.reset(seed=seed)
        start = info["bar"]
        assert lo <= start <= hi
        for k in range(1, 26):
            _, _, terminated, truncated, info = env.step(int(rng.integers(3)))
            assert not terminated
            assert truncated == (k == 25)
        assert info["bar"] == start + 25 <= split.stop - 1
    # the latest start ends exactly on the split's last bar
    env.reset(options={"start": hi})
    for _ in range(25):
        *_, info = env.step(FLAT)
    assert info["bar"] == split.stop - 1


def test_random_starts_are_seeded(googl):
    env = TradingEnv(googl, episode_length=32)
    starts = [env.reset(seed=s)[1]["bar"] for s in range(6)]
    assert starts == [env.reset(seed=s)[1]["bar"] for s in range(6)]
    assert len(set(starts)) > 1
    fixed = TradingEnv(googl, episode_length=32, deterministic_start=100)
    assert {fixed.reset(seed=s)[1]["bar"] for s in range(3)} == {100}
    assert fixed.reset(options={"start": 200})[1]["bar"] == 200


def test_episode_starts_for_evaluation(googl):
    env = TradingEnv(googl, split="validation", episode_length=64, window=3)
    starts = env.episode_starts_for_evaluation("validation", 4)
    assert starts == env.episode_starts_for_evaluation(n=4)  # deterministic, default split = env's
    lo, hi = env.start_range
    assert starts[0] == lo and starts[-1] == hi and starts == sorted(starts)
    assert max(np.diff(starts)) - min(np.diff(starts)) <= 1  # evenly spaced
    for s in starts:
        assert env.reset(options={"start": s})[1]["bar"] == s
    test_starts = env.episode_starts_for_evaluation("test", 3)
    assert test_starts[0] >= walk_forward_split(len(googl))["test"].start + 3
    assert episode_starts(slice(10, 20), 1, 5, 1) == [11]
    with pytest.raises(ValueError, match="n >= 1"):
        env.episode_starts_for_evaluation(n=0)


def test_constructor_errors(googl):
    with pytest.raises(ValueError, match="too short for an episode"):
        TradingEnv(googl, split="test", episode_length=400)
    with pytest.raises(ValueError, match="needs volume"):
        TradingEnv(make_data(np.linspace(1, 2, 50)), features=("log_volume_change",), episode_length=5)
    with pytest.raises(ValueError, match="unknown feature"):
        TradingEnv(googl, features=("rsi",))
    with pytest.raises(ValueError, match="outside the train split"):
        TradingEnv(googl, deterministic_start=0)
    env = TradingEnv(googl, episode_length=16)
    with pytest.raises(ValueError, match="outside the train split"):
        env.reset(options={"start": len(googl) - 5})
    with pytest.raises(RuntimeError, match="before reset"):
        TradingEnv(googl, episode_length=16).step(FLAT)


# ----------------------------------------------------------------------------------------------- API, factory


@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_gymnasium_check_env(googl, action):
    env = TradingEnv(googl, action=action, window=3, features=("log_volume_change", "high_low_range"),
                     episode_length=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's warnings (unbounded spaces, dtype, ...) fail the test
        check_env(env, skip_render_check=True)


def test_make_trading_env_from_config(tmp_path):
    cfg = EnvConfig(
        id="trading",
        data=TradingDataConfig(source="googl", split=(0.6, 0.2, 0.2)),
        trading=TradingConfig(action="continuous", window=2, features=["high_low_range"], cost_bps=5.0,
                              episode_length=32, equity_floor=0.3),
    )
    env = make_trading_env(cfg, split="validation")
    assert env.split == "validation" and env.fractions == (0.6, 0.2, 0.2)
    assert env.action_space.shape == (1,) and env.observation_space.shape == (2 + 1 + 2,)
    assert env.cost_bps == 5.0 and env.episode_length == 32 and env.equity_floor == 0.3
    assert env.split_slice == walk_forward_split(len(env.data), (0.6, 0.2, 0.2))["validation"]
    assert make_trading_env(cfg).data is env.data  # loaded once, shared

    path = tmp_path / "mine.csv"
    rows = ["Date,Open,High,Low,Close"] + [f"2021-01-{d:02d},{10 + d},{11 + d},{9 + d},{10 + d}" for d in range(1, 31)]
    path.write_text("\n".join(rows) + "\n")
    cfg = EnvConfig(id="trading", data=TradingDataConfig(path=str(path)), trading=TradingConfig(episode_length=4),
                    kwargs={"deterministic_start": 3})
    env = make_trading_env(cfg)
    # bar k (0-based) is 2021-01-(k+1) with close 11 + k: the start bar 3 closes at 14, the next at 15
    obs, _ = env.reset()
    np.testing.assert_allclose(obs, [math.log(14 / 13), 0.0], rtol=1e-6)
    assert env.data.source == str(path)
    obs, *_ = env.step(LONG)
    np.testing.assert_allclose(obs, [math.log(15 / 14), 1.0], rtol=1e-6)


def test_env_data_date_format_reaches_the_loader(tmp_path):
    from rpbt.envs.market_data import MarketDataError
    from rpbt.envs.trading import load_market_data

    path = tmp_path / "monthly.csv"
    stamps = [f"01/{m:02d}/{y}" for y in (2010, 2011) for m in range(1, 13)][1:]  # dd/mm/yyyy, monthly
    path.write_text("Date,Open,High,Low,Close\n" + "".join(f"{s},1,1,1,1\n" for s in stamps))
    with pytest.raises(MarketDataError, match="env.data.date_format"):
        load_market_data(TradingDataConfig(path=str(path)))
    data = load_market_data(TradingDataConfig(path=str(path), date_format="%d/%m/%Y"))
    assert str(data.dates[0])[:10] == "2010-02-01" and str(data.dates[1])[:10] == "2010-03-01"
    with pytest.raises(ValueError, match="env.data.date_format applies to a CSV file"):
        TradingDataConfig(source="googl", date_format="%Y-%m-%d")
    with pytest.raises(ValueError, match="strftime format"):
        TradingDataConfig(path=str(path), date_format="dd/mm/yyyy")


def test_bad_env_kwargs_are_one_env_error_naming_env_kwargs():
    from rpbt.envs.factory import EnvError, make_env

    for kwargs, words in [({"bogus": 1}, "env.kwargs has 'bogus'"), ({"split": "test"}, "env.kwargs sets 'split'"),
                          ({"fractions": [0.5, 0.25, 0.25]}, "env.data.split"),
                          ({"window": 0}, "env.kwargs {'window': 0}: window must be >= 1"),
                          ({"features": ["nope"]}, "unknown feature 'nope'")]:
        cfg = EnvConfig(id="trading", kwargs=kwargs)
        with pytest.raises(EnvError, match="env.kwargs") as err:
            make_env(cfg)
        assert words in str(err.value)
    env = make_env(EnvConfig(id="trading", kwargs={"cost_bps": 50}))  # a good key still works
    assert env.unwrapped.cost_bps == 50.0


def test_merged_date_and_time_columns_are_recorded_in_the_start_event(tmp_path, caplog):
    import json
    import logging

    from rpbt.pbt.runner import PopulationRunner
    from tests.conftest import tiny_config

    stamps = np.datetime64("2017-01-01T22:00") + np.arange(400).astype("timedelta64[h]")
    rows = [f"{str(s)[:10].replace('-', '.')},{str(s)[11:16]},1.05,1.06,1.04,1.055,100" for s in stamps]
    path = tmp_path / "EURUSD60.csv"
    path.write_text("Date,Time,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    cfg = tiny_config("env.id=trading", f"env.data.path={path}", "env.trading.episode_length=16",
                      "env.trading.eval_episodes=1", "pbt.population_size=2", f"run.dir={run}", "run.torch_threads=1")
    runner = PopulationRunner(cfg, run)
    try:
        with caplog.at_level(logging.INFO, logger="rpbt"):
            runner.start()
    finally:
        runner.close()
    start = json.loads((run / "events.jsonl").read_text().splitlines()[0])
    assert start["type"] == "start"
    assert start["data"] == {"path": str(path), "bars": 400, "timestamps": "merged columns Date + Time"}
    logged = [r.getMessage() for r in caplog.records if "timestamps:" in r.getMessage()]
    assert len(logged) == 1 and "timestamps: merged columns Date + Time" in logged[0], logged
