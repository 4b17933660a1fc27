"""The report's analysis: value loss aligned on exploits, hyperparameter scales, score series."""

from __future__ import annotations

import json

import numpy as np

from rpbt.report import (
    build_report,
    read_run,
)
from rpbt.report.analysis import value_loss_windows
from tests.report.fabricate import (
    _write_events,
    _write_metrics,
    fabricate_run,
)


def test_value_loss_aligned_on_the_exploit(tmp_path):
    """Offset 0 = recipient's last update of the exploit's round, 1 = its first after; relative to the donor's
    value loss at its last update of that round."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    events = [
        {"type": "start", "round": 0, "time": 0, "population_size": 2, "hparams": [{}, {}], "search_space": {}},
        {"type": "round", "round": 1, "time": 1, "env_steps": 30, "updates": 3, "scores": [1, 2], "hparams": []},
        {"type": "exploit", "round": 1, "time": 1, "env_steps": 30, "recipient": 0, "donor": 1,
         "hidden_state": "zero"},
        {"type": "round", "round": 2, "time": 2, "env_steps": 60, "updates": 6, "scores": [2, 2], "hparams": []},
    ]
    _write_events(run_dir, events)
    cols = ["round", "update", "env_steps", "train/value_loss"]
    _write_metrics(run_dir, 0, [{"round": 1 + (u - 1) // 3, "update": u, "env_steps": 10 * u,
                                 "train/value_loss": float(u)} for u in range(1, 7)], cols)
    _write_metrics(run_dir, 1, [{"round": 1 + (u - 1) // 3, "update": u, "env_steps": 10 * u,
                                 "train/value_loss": 2.0} for u in range(1, 7)], cols)
    run = read_run(run_dir)
    windows, window, notes = value_loss_windows(run, window=3)
    assert notes == [] and len(windows) == 1
    w = windows[0]
    assert w.strategy == "zero" and w.donor_value_loss == 2.0
    assert w.offsets.tolist() == [-2, -1, 0, 1, 2, 3]
    assert w.absolute.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert w.relative.tolist() == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    result = build_report(run_dir)
    assert not any("could not draw" in w for w in result.warnings)


def test_log_scale_and_categorical_hparams_detected(tmp_path):
    from rpbt.report.analysis import hparam_series, is_categorical, is_log, x_axis

    run_dir = tmp_path / "run"
    fabricate_run(run_dir, population=4, rounds=3)
    run = read_run(run_dir)
    series = hparam_series(run, x_axis(run))
    lr = [v for _, vs in series["learning_rate"].values() for v in vs]
    assert is_log(run, "learning_rate", lr)
    assert not is_log(run, "clip_range", [0.2])
    assert is_categorical(run, "activation", ["tanh"])
    xs, _ = series["learning_rate"][0]
    assert xs[0] == 0 and xs[-1] == 3 * 5 * 1024  # from step 0 to the last round's end


def test_scores_fall_back_to_metrics_csv(tmp_path):
    from rpbt.report.analysis import score_series, x_axis

    run_dir = tmp_path / "run"
    fabricate_run(run_dir, population=3, rounds=3)
    lines = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    for ev in lines:
        if ev["type"] == "round":
            ev["scores"] = [None, None, None]
    _write_events(run_dir, lines)
    run = read_run(run_dir)
    series, source = score_series(run, x_axis(run))
    assert source == "metrics"
    assert all(len(xs) == 3 and np.isfinite(ys).all() for xs, ys in series.values())
    build_report(run_dir)


def test_population_stats_gap_and_smoothing_by_hand(tmp_path):
    from rpbt.report.analysis import gap_to_best, population_stats, score_matrix, smooth
    from tests.report.fabricate import HAND_EVENTS

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _write_events(run_dir, HAND_EVENTS)
    run = read_run(run_dir)
    rounds, scores = score_matrix(run)
    assert rounds.tolist() == [1, 2, 3, 4]
    assert scores[:, 0].tolist() == [5, 3, 2, 1] and scores[:, 3].tolist() == [9, 7, 8, 6]
    stats = population_stats(run)
    assert stats["mean"].tolist() == [2.75, 4.0, 5.5, 7.5]
    assert stats["median"][0] == 2.5 and stats["q25"][0] == 1.75 and stats["q75"][0] == 3.5
    assert stats["best"].tolist() == [5, 6, 8, 9] and stats["min"].tolist() == [1, 1, 1, 6]
    assert gap_to_best(scores)[:, 0].tolist() == [0, 2, 3, 4]
    assert gap_to_best(scores, "min")[:, 0].tolist() == [4, 2, 1, 0]
    with_nan = np.array([[1.0, np.nan], [3.0, np.nan]])
    assert np.isnan(gap_to_best(with_nan)[:, 1]).all() and gap_to_best(with_nan)[:, 0].tolist() == [2, 0]
    assert smooth(np.array([1.0, 3.0, np.nan, 5.0]), 2).tolist()[:2] == [1.0, 2.0]
    assert np.isnan(smooth(np.array([1.0, 3.0, np.nan, 5.0]), 2)[2])
    assert smooth(np.array([1.0, 3.0, np.nan, 5.0]), 2)[3] == 5.0  # the window holds 5 and a NaN


def test_round_times_by_hand(tmp_path):
    from rpbt.report.analysis import round_times

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _write_events(run_dir, [
        {"type": "start", "round": 0, "time": 0.5, "population_size": 2, "hparams": [{}, {}], "search_space": {}},
        {"type": "round", "round": 1, "time": 3.0, "env_steps": 8, "scores": [1, 2], "train_s": 2.0},
        {"type": "exploit", "round": 1, "time": 3.1, "donor": 1, "recipient": 0, "transfer_s": 0.25},
        {"type": "round", "round": 2, "time": 7.0, "env_steps": 16, "scores": [1, 2], "train_s": 3.0},
    ])
    t = round_times(read_run(run_dir))
    assert t["rounds"].tolist() == [1, 2]
    assert t["train"].tolist() == [2.0, 3.0] and t["exploit"].tolist() == [0.25, 0.0]
    assert t["total"].tolist() == [2.5, 4.0]
    # round 2's clock holds round 1's exploits (written after its round event) and round 2's training
    assert t["other"].tolist() == [0.5, 0.75]
