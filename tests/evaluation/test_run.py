"""Evaluating a run directory (``rpbt evaluate``): the best or a named member, the report files, the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rpbt.cli import main
from rpbt.envs.trading import make_trading_env
from tests.conftest import TINY, tiny_config
from tests.evaluation.test_trading import _csv

TRADING = ["env.id=trading", "env.trading.episode_length=32", "env.trading.eval_episodes=3",
           "pbt.population_size=2"]


def test_rpbt_evaluate_trading_writes_json_and_png(tmp_path, capsys):
    run = tmp_path / "trade"
    assert main(["train", *TINY, *TRADING, f"run.dir={run}"]) == 0
    best = json.loads((run / "summary.json").read_text())["best_member"]
    assert main(["evaluate", str(run), "--split", "test"]) == 0
    out = json.loads((run / "evaluation" / f"test_member{best}.json").read_text())
    assert out["member"] == best and out["split"] == "test"
    for key in ("policy", "buy_and_hold", "flat"):
        assert {"total_log_return", "sharpe", "max_drawdown", "turnover"} <= set(out[key])
    cfg = tiny_config(*TRADING)
    env = make_trading_env(cfg.env, "test")
    assert out["end_bar"] == env.split_slice.stop - 1 and out["start_bar"] == env.split_slice.start + 1
    assert out["bars_per_year"] == pytest.approx(252.0)
    png = (run / "evaluation" / f"test_member{best}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "buy and hold" in capsys.readouterr().out
    # A chosen member and split; the same state gives the same numbers.
    assert main(["evaluate", str(run), "--member", "1", "--split", "validation"]) == 0
    again = json.loads((run / "evaluation" / "validation_member1.json").read_text())
    assert main(["evaluate", str(run), "--member", "1", "--split", "validation"]) == 0
    assert json.loads((run / "evaluation" / "validation_member1.json").read_text()) == again
    assert main(["evaluate", str(run), "--episodes", "3"]) == 2
    assert "(--episodes) does not apply" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--member", "7"]) == 2


def test_rpbt_evaluate_from_another_folder_names_env_data_path_and_the_run_config(tmp_path, monkeypatch, capsys):
    # A relative env.data.path is read from the current folder; evaluating from elsewhere cannot find it, and the
    # message said only "bars.csv: file not found".
    train_dir, other = tmp_path / "a", tmp_path / "b"
    train_dir.mkdir()
    other.mkdir()
    _csv(train_dir, np.round(100 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.01, 600))), 4))
    monkeypatch.chdir(train_dir)
    run = tmp_path / "run"
    assert main(["train", *TINY, *TRADING, "env.data.path=bars.csv", f"run.dir={run}"]) == 0
    monkeypatch.chdir(other)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "bars.csv: file not found" in err and "env.data.path 'bars.csv'" in err, err
    assert f"relative to the current directory {other}" in err and str(run / "config.yaml") in err, err
    assert "Traceback" not in err and not (run / "evaluation").exists()


def test_rpbt_evaluate_non_trading(tmp_path, capsys):
    run = tmp_path / "cartpole"
    assert main(["train", *TINY, "pbt.population_size=2", f"run.dir={run}"]) == 0
    assert main(["evaluate", str(run), "--member", "0", "--episodes", "3"]) == 0
    out = json.loads((run / "evaluation" / "test_member0.json").read_text())
    assert len(out["returns"]) == 3 and len(out["lengths"]) == 3
    assert out["mean_return"] == pytest.approx(np.mean(out["returns"]))
    assert out["std_return"] == pytest.approx(np.std(out["returns"]))
    assert all(n > 0 for n in out["lengths"])
    assert not (run / "evaluation" / "test_member0.png").exists()
    assert main(["evaluate", str(run), "--member", "0", "--episodes", "3"]) == 0
    assert json.loads((run / "evaluation" / "test_member0.json").read_text())["returns"] == out["returns"]
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
