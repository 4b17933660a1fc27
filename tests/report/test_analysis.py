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
