"""``rpbt.report.load_run``: a real (tiny) run directory as DataFrames, checked against the files read
independently (the csv and json modules), and a run still being written (cut last lines)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")

from rpbt.api import train  # noqa: E402
from rpbt.report import RunFrames, load_run  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny run: 4 members, 6 rounds (exploits included), TINY's settings."""
    out = tmp_path_factory.mktemp("frames") / "run"
    train(tiny_config(f"run.dir={out}", "run.total_env_steps=384"))
    return out


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


def _metrics_rows(run: Path, member: int) -> list[dict]:
    with (run / "members" / str(member) / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _same(a, b) -> bool:
    a, b = float("nan") if a in ("", None) else float(a), float("nan") if b in ("", None) else float(b)
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_metrics_are_every_members_csv_rows_with_a_member_column(run_dir):
    frames = load_run(run_dir)
    assert isinstance(frames, RunFrames) and frames.population_size == 4 and frames.warnings == []
    assert list(frames.metrics.columns[:4]) == ["member", "round", "update", "env_steps"]
    for member in range(4):
        rows = _metrics_rows(run_dir, member)
        mine = frames.metrics[frames.metrics["member"] == member].reset_index(drop=True)
        assert len(mine) == len(rows) == 12  # 384 env steps / (2 envs x 16 steps) updates
        for i, row in enumerate(rows):
            for name, value in row.items():
                assert _same(mine.loc[i, name], value), (member, i, name)
    assert frames.metrics["update"].dtype == "int64"


def test_hyperparameters_and_scores_per_round_and_member_are_the_round_events(run_dir):
    frames = load_run(run_dir)
    rounds = [e for e in _events(run_dir) if e["type"] == "round"]
    hp = frames.hyperparameters
    assert len(hp) == 4 * len(rounds) and len(rounds) == 6
    for ev in rounds:
        for member in range(4):
            (row,) = hp[(hp["round"] == ev["round"]) & (hp["member"] == member)].to_dict("records")
            assert _same(row["score"], ev["scores"][member])
            assert row["env_steps"] == ev["env_steps"]  # one number per round in this run's events
            for name, value in ev["hparams"][member].items():
                assert row[name] == value, (ev["round"], member, name)
    # the searched hyperparameters come first, in the start event's search-space order
    start = next(e for e in _events(run_dir) if e["type"] == "start")
    assert list(hp.columns[4:4 + len(start["search_space"])]) == list(start["search_space"])


def test_exploits_are_the_exploit_lines_with_their_measurements_as_columns(run_dir):
    frames = load_run(run_dir)
    exploits = [e for e in _events(run_dir) if e["type"] == "exploit"]
    assert len(exploits) > 0 and len(frames.exploits) == len(exploits)
    assert list(frames.exploits.columns[:4]) == ["round", "env_steps", "recipient", "donor"]
    for (_, row), ev in zip(frames.exploits.iterrows(), exploits):
        assert (row["round"], row["recipient"], row["donor"]) == (ev["round"], ev["recipient"], ev["donor"])
        for key, value in ev["measurements"].items():
            assert _same(row[key], value), key
        for name, value in ev["new_hparams"].items():
            assert row[f"new_hparams.{name}"] == value


def test_events_are_the_lines_of_events_jsonl_in_file_order(run_dir):
    frames = load_run(run_dir)
    events = _events(run_dir)
    assert frames.events["type"].tolist() == [e["type"] for e in events]
    assert frames.events["line"].tolist() == list(range(1, len(events) + 1))
    assert frames.events["type"].iloc[0] == "start" and frames.events["type"].iloc[-1] == "end"


def test_a_run_being_written_loses_only_its_cut_last_lines(run_dir, tmp_path):
    """Half a metrics row and half an events line at the ends of the files: the frames are those of the complete
    lines, and the warnings name both files."""
    whole = load_run(run_dir)
    cut = tmp_path / "run"
    shutil.copytree(run_dir, cut)
    metrics = cut / "members" / "2" / "metrics.csv"
    last = metrics.read_text().splitlines()[-1]
    metrics.write_text(metrics.read_text() + last[: len(last) // 2])
    events = cut / "events.jsonl"
    line = json.dumps({"type": "round", "round": 7, "scores": [1.0, 2.0, 3.0, 4.0], "hparams": []})
    events.write_text(events.read_text() + line[: len(line) // 2])
    frames = load_run(cut)
    pd.testing.assert_frame_equal(frames.metrics, whole.metrics)
    pd.testing.assert_frame_equal(frames.hyperparameters, whole.hyperparameters)
    assert len(frames.events) == len(whole.events) and len(frames.exploits) == len(whole.exploits)
    assert any("metrics.csv" in w and "incomplete" in w for w in frames.warnings)
    assert any("events.jsonl" in w and "incomplete" in w for w in frames.warnings)


def test_a_run_with_no_round_yet_gives_empty_frames_with_their_key_columns(tmp_path):
    (tmp_path / "events.jsonl").write_text('{"type": "start", "round": 0, "population_size": 2}\n')
    frames = load_run(tmp_path)
    assert frames.metrics.empty and "member" in frames.metrics
    assert frames.hyperparameters.empty and list(frames.hyperparameters.columns[:4]) == ["round", "member",
                                                                                          "env_steps", "score"]
    assert frames.exploits.empty and "donor" in frames.exploits
    assert frames.events["type"].tolist() == ["start"]
