"""Reading a run directory for ``rpbt report``: events.jsonl (cut lines, duplicates, resumes), metrics.csv,
runner.json and the checkpoints, on tiny synthetic run directories (tests/report/fabricate.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rpbt.report import (
    PNG_NAMES,
    ReportError,
    build_report,
    derive_lineage,
    read_events,
    read_metrics,
    read_run,
    write_report,
)
from tests.report.fabricate import (
    HAND_EVENTS,
    _write_checkpoints,
    _write_events,
    _write_metrics,
    fabricate_run,
)

# --------------------------------------------------------------------------------------------------- tests


def test_duplicate_round_lines_keep_last(tmp_path):
    path = tmp_path / "events.jsonl"
    events = [HAND_EVENTS[0], HAND_EVENTS[1],
              {**HAND_EVENTS[1], "scores": [0, 0, 0, 42]}]  # round 1 again, no resume line
    _write_events(tmp_path, events)
    run = read_run(tmp_path)
    assert len(run.rounds) == 1 and run.rounds[0]["scores"] == [0, 0, 0, 42]
    assert derive_lineage(read_events(path)[0]).best_member == 3


def test_partly_written_events_last_line_cut(tmp_path):
    run = tmp_path / "run"
    written = fabricate_run(run, population=4, rounds=4, end=False, summary=False)
    text = (run / "events.jsonl").read_text()
    full = json.dumps({"type": "round", "round": 5, "time": 1, "env_steps": 1, "updates": 1,
                       "scores": [1, 2, 3, 4], "hparams": []})
    (run / "events.jsonl").write_text(text + full[: len(full) // 2])
    events, warnings = read_events(run / "events.jsonl")
    assert len(events) == len(written["events"])
    assert len(warnings) == 1 and "incomplete" in warnings[0] and "events.jsonl" in warnings[0]
    result = build_report(run)
    assert any("incomplete" in w for w in result.warnings)
    md = result.markdown.read_text()
    assert "## Warnings" in md and "incomplete" in md
    assert "status: in progress" in md
    for name in ["report.md", "report.html", *PNG_NAMES.values()]:
        assert (run / "report" / name).is_file()


def test_first_line_cut_is_a_warning_not_an_error(tmp_path):
    (tmp_path / "events.jsonl").write_text('{"type": "start", "round": 0, "popul')
    events, warnings = read_events(tmp_path / "events.jsonl")
    assert events == [] and "incomplete" in warnings[0]
    result = build_report(tmp_path)
    assert result.html.is_file()


def test_empty_events_file(tmp_path, caplog):
    (tmp_path / "events.jsonl").write_text("")
    events, warnings = read_events(tmp_path / "events.jsonl")
    assert events == [] and len(warnings) == 1 and "empty" in warnings[0]
    with caplog.at_level("WARNING", logger="rpbt.report"):
        out = write_report(tmp_path)
    assert any("empty" in r.getMessage() for r in caplog.records)  # printed / logged
    md = (out / "report.md").read_text()
    assert "empty" in md and "status: no events yet" in md
    assert "No scores yet" in md and "No exploits yet" in md
    for name in ["report.md", "report.html", *PNG_NAMES.values()]:
        assert (out / name).is_file()


def test_bad_lines_in_the_middle_are_skipped_with_a_warning(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, population=4, rounds=3)
    lines = (run / "events.jsonl").read_text().splitlines()
    lines.insert(2, "this is not json")
    lines.insert(3, "[1, 2]")
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    events, warnings = read_events(run / "events.jsonl")
    assert len(events) == len(lines) - 2
    assert any("line 3" in w for w in warnings) and any("line 4" in w for w in warnings)


def test_missing_run_dir_raises_naming_the_path(tmp_path):
    missing = tmp_path / "no_such_run"
    with pytest.raises(ReportError, match="no_such_run"):
        write_report(missing)
    assert issubclass(ReportError, ValueError)


def test_missing_events_file_raises_naming_the_path(tmp_path):
    (tmp_path / "config.yaml").write_text("env: {}\n")
    with pytest.raises(ReportError) as info:
        write_report(tmp_path)
    assert str(tmp_path / "events.jsonl") in str(info.value)
    with pytest.raises(ReportError, match="events.jsonl"):
        read_events(tmp_path / "events.jsonl")


def test_unusable_events_file_raises(tmp_path):
    (tmp_path / "events.jsonl").mkdir()
    with pytest.raises(ReportError, match="events.jsonl"):
        write_report(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "events.jsonl").write_text("garbage\nmore garbage\n")
    with pytest.raises(ReportError, match="events.jsonl"):
        write_report(other)
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    with pytest.raises(ReportError, match="not a directory"):
        write_report(not_dir)


def test_run_still_going(tmp_path):
    """No summary.json, no checkpoints, a member without metrics, a metrics row being written, no exploit yet."""
    run = tmp_path / "run"
    fabricate_run(run, population=4, rounds=1, end=False, summary=False)
    lines = (run / "events.jsonl").read_text().splitlines()
    (run / "events.jsonl").write_text("\n".join(line for line in lines if '"exploit"' not in line) + "\n")
    shutil.rmtree(run / "checkpoints")  # round 1 reported, not committed yet
    (run / "members" / "3" / "metrics.csv").unlink()
    with (run / "members" / "2" / "metrics.csv").open("a") as f:
        f.write("2,6,61")  # cut mid-row
    result = build_report(run)
    md = result.markdown.read_text()
    assert "checkpoints present: 0/4" in md
    assert any("runner.json" in w and "missing" in w for w in result.warnings)
    assert any("members/3" in w or "member(s) [3]" in w for w in result.warnings)
    assert any("last row incomplete" in w for w in result.warnings)
    assert "No exploits yet" in md
    for name in ["report.md", "report.html", *PNG_NAMES.values()]:
        assert (run / "report" / name).is_file()


def test_metrics_rows_after_resume_keep_last(tmp_path):
    rows = [{"round": 1, "update": 1, "train/value_loss": 1.0}, {"round": 1, "update": 2, "train/value_loss": 2.0},
            {"round": 2, "update": 3, "train/value_loss": 3.0},
            # resumed from round 1: round 2 redone
            {"round": 2, "update": 3, "train/value_loss": 30.0}, {"round": 2, "update": 4, "train/value_loss": 40.0}]
    path = _write_metrics(tmp_path, 0, rows, ["round", "update", "env_steps", "train/value_loss", "later/col"])
    m, warnings = read_metrics(path)
    assert warnings == []
    assert m.get("update").tolist() == [1, 2, 3, 4]
    assert m.get("train/value_loss").tolist() == [1.0, 2.0, 30.0, 40.0]
    assert np.isnan(m.get("env_steps")).all()


def test_metrics_cells_rows_and_a_cut_last_row_read_as_before(tmp_path):
    """By hand: an empty or non-numeric cell is NaN, a short row is padded with NaN, a longer row is skipped with a
    warning, wholly blank rows (also ",,,") are skipped, quoted numbers are numbers, header names are stripped, a
    nameless column is dropped, and a row without its line end is ignored with a warning."""
    path = tmp_path / "metrics.csv"
    path.write_text('round, update ,train/value_loss,\n'
                    '1,1,0.5,7\n'
                    '\n'
                    ',,,\n'
                    '1,2,abc,7\n'
                    '1,3\n'
                    '1,4,0.25,7,99\n'
                    '2,5,"1e3",\n'
                    '2,6,0.1')
    m, warnings = read_metrics(path)
    assert list(m.columns) == ["round", "update", "train/value_loss"]
    assert m.get("update").tolist() == [1, 2, 3, 5]
    np.testing.assert_array_equal(m.get("train/value_loss"), [0.5, np.nan, np.nan, 1000.0])
    assert len(warnings) == 2
    assert "last row incomplete" in warnings[0] and "1 row(s) with more cells than the header" in warnings[1]


def test_a_metrics_file_with_a_blank_first_line_has_no_header(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("\nround,update\n1,1\n")
    m, warnings = read_metrics(path)
    assert m is None and warnings == [f"{path}: no header row (the first line is blank)"]


# --------------------------------------------------------------------------------------------------- checkpoints


def test_checkpoints_counted_in_the_folder_runner_json_names(tmp_path):
    """A commit cut short leaves a newer partial folder (round 4) and an old one not yet deleted (round 2): only
    the folder runner.json names counts."""
    run = tmp_path / "run"
    fabricate_run(run, population=4, rounds=3)
    _write_checkpoints(run, 2, 4, runner_json=False)
    _write_checkpoints(run, 4, 4, members=[0], runner_json=False)
    (run / "checkpoints" / "round_000003" / "member_2.pt").unlink()
    data = read_run(run)
    assert data.warnings == []
    assert (data.checkpoints_present, data.checkpoint_round) == (3, 3)
    assert data.checkpoint_dir == run / "checkpoints" / "round_000003"
    assert "checkpoints present: 3/4 (`checkpoints/round_000003`, round 3)" in build_report(run).markdown.read_text()


def test_missing_runner_json_falls_back_to_the_newest_round_folder(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, population=4, rounds=3)
    _write_checkpoints(run, 4, 4, members=[0, 1], runner_json=False)  # 4 > 3 numerically and by name
    (run / "checkpoints" / "runner.json").unlink()
    data = read_run(run)
    assert (data.checkpoints_present, data.checkpoint_round) == (2, 4)
    [w] = [w for w in data.warnings if "runner.json" in w]
    assert "missing" in w and "round_000004" in w


@pytest.mark.parametrize("content, says", [
    ("{not json", "cannot be read as JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"round": 3, "checkpoint_dir": "../elsewhere"}), "not the name of a folder"),
    (json.dumps({"round": 3, "checkpoint_dir": 7}), "not the name of a folder"),
])
def test_unusable_runner_json_is_a_warning_and_falls_back(tmp_path, content, says):
    run = tmp_path / "run"
    fabricate_run(run, population=4, rounds=3)
    (run / "checkpoints" / "runner.json").write_text(content)
    result = build_report(run)
    [w] = [w for w in result.warnings if "runner.json" in w]
    assert says in w and "round_000003" in w
    assert "checkpoints present: 4/4 (`checkpoints/round_000003`, round 3)" in result.markdown.read_text()


def test_runner_json_naming_a_missing_folder(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, population=4, rounds=3)
    shutil.rmtree(run / "checkpoints" / "round_000003")
    data = read_run(run)
    assert (data.checkpoints_present, data.checkpoint_round) == (0, 3)
    assert any("round_000003" in w and "does not exist" in w for w in data.warnings)


def test_runner_json_without_checkpoint_dir_reads_checkpoints_itself(tmp_path):
    """As ``rpbt evaluate`` (load_member) reads it: no "checkpoint_dir" -> checkpoints/member_<i>.pt."""
    from rpbt.report import read_checkpoints

    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    (ckpt / "runner.json").write_text(json.dumps({"round": 5}))
    for i in (0, 2, 9):  # 9 is outside a population of 3
        (ckpt / f"member_{i}.pt").write_bytes(b"x")
    warnings: list[str] = []
    c = read_checkpoints(tmp_path, 3, warnings=warnings)
    assert (c.present, c.round, c.folder, warnings) == (2, 5, ckpt, [])


def test_no_round_yet_no_checkpoints_no_warning(tmp_path):
    from rpbt.report import read_checkpoints

    (tmp_path / "checkpoints").mkdir()
    warnings: list[str] = []
    assert read_checkpoints(tmp_path, 4, expect_commit=False, warnings=warnings).present == 0
    assert warnings == []
    assert read_checkpoints(tmp_path, 4, expect_commit=True, warnings=warnings).present == 0
    assert len(warnings) == 1 and "runner.json" in warnings[0]


