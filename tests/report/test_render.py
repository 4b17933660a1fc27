"""Rendering ``rpbt report``: the Markdown and HTML report and its sections, on fabricated and real run directories."""

from __future__ import annotations

import json

from rpbt.report import (
    PNG_NAMES,
    build_report,
    write_report,
)
from tests.report.fabricate import (
    HAND_EVENTS,
    PNG_MAGIC,
    _write_events,
    fabricate_run,
)


def test_write_report_writes_every_file(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, population=8, rounds=10)
    result = build_report(run)
    out = run / "report"
    assert result.out_dir == out
    assert result.warnings == []
    for name in ["report.md", "report.html", *PNG_NAMES.values()]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in PNG_NAMES.values():
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(PNG_NAMES)
    assert ".png\"" not in html  # self-contained: no reference to the files next to it
    md = (out / "report.md").read_text()
    for name in PNG_NAMES.values():
        assert f"({name})" in md
    for heading in ("Scores", "Hyperparameters", "Lineage", "Value loss around exploits", "Members"):
        assert heading in md
    assert "status: finished" in md
    assert "checkpoints present: 8/8 (`checkpoints/round_000010`, round 10)" in md
    assert "`burn_in`" in md and "`zero`" in md  # one row per hidden-state strategy
    assert "Ancestry of the best member" in md
    assert not list(out.glob("*.tmp"))


def test_write_report_returns_dir_and_custom_out_dir(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, population=4, rounds=3)
    out = write_report(run, tmp_path / "elsewhere")
    assert out == tmp_path / "elsewhere"
    assert (out / "report.html").is_file()
    assert not (run / "report").exists()


def test_readable_at_16_members_50_rounds(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, population=16, rounds=50, updates_per_round=2, strategies=("burn_in", "zero", "keep"))
    result = build_report(run)
    assert result.warnings == []
    lin = result.lineage
    assert lin is not None and lin.population_size == 16 and lin.last_round == 50
    # every member's chain ends with its last exploit, and chains go back in time
    for m, chain in lin.ancestry.items():
        assert [r for r, _ in chain] == sorted({r for r, _ in chain})
        if lin.received[m]:
            assert chain[-1] == lin.received[m][-1]


def test_lineage_of_hand_built_run_in_report(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _write_events(run, HAND_EVENTS)
    result = build_report(run)
    md = result.markdown.read_text()
    assert "member 1 -(round 2)-> member 2 -(round 3)-> member 0" in md
    assert "resumed 1 time(s)" in md
    assert "status: in progress or interrupted" in md
    # no metrics.csv: said, not failed
    assert any("metrics.csv" in w for w in result.warnings)
    assert "No train/value_loss data" in md
    for name in PNG_NAMES.values():
        assert (run / "report" / name).is_file()


def test_report_of_a_real_tiny_run_finds_its_checkpoints(tmp_path):
    """The layout the runner really writes (not a fabricated one) is what the report reads."""
    from rpbt.pbt.runner import PopulationRunner
    from tests.conftest import tiny_config

    run = tmp_path / "run"
    cfg = tiny_config(f"run.dir={run}")
    runner = PopulationRunner(cfg, run)
    runner.start()
    runner.run(progress=False)
    result = build_report(run)
    assert result.warnings == []
    r = runner.total_rounds
    text = result.markdown.read_text()
    assert f"checkpoints present: 4/4 (`checkpoints/round_{r:06d}`, round {r})" in text
    # where the wall time went, summed by hand from the events (one transfer_s per round with exploits)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line]
    train = sum(e["train_s"] for e in events if e["type"] == "round")
    transfer = sum({e["round"]: e["transfer_s"] for e in events if e["type"] == "exploit"}.values())
    assert transfer > 0
    assert (f"wall time: training {train:.1f} s over {r} rounds, exploits (snapshots, transfers, burn-in) "
            f"{transfer:.2f} s ({100 * transfer / (train + transfer):.2f}% of the two)") in text


def test_failures_table_shows_count_and_action(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, population=4, rounds=2, end=False)
    with (run / "events.jsonl").open("a") as f:
        for n, action in ((1, "restart"), (2, "stop")):
            f.write(json.dumps({"type": "failure", "round": 3, "time": 0, "shard": 1, "members": [2, 3],
                                "cause": "exit code -9", "failures": n, "action": action}) + "\n")
    md = build_report(run).markdown.read_text()
    assert "failures: 2 (see below)" in md
    assert "| 3 | 1 | [2, 3] | 1 | restart | exit code -9 |" in md
    assert "| 3 | 1 | [2, 3] | 2 | stop | exit code -9 |" in md


def _recording_overlaps(monkeypatch) -> dict:
    """Wrap every figure module's save_figure: record, per file name, the overlapping tick labels of the figure
    about to be saved (drawn with the renderer, as the PNG is)."""
    from rpbt.report import curves, lineage_plot, plots, population, style

    found: dict = {}
    real = style.save_figure

    def save(fig, path):
        found[path.name] = style.overlapping_tick_labels(fig)
        real(fig, path)

    for module in (curves, lineage_plot, plots, population, style):
        monkeypatch.setattr(module, "save_figure", save)
    return found


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_every_figure_of_a_real_tiny_run_is_drawn_with_readable_ticks(tmp_path, monkeypatch):
    """A tiny real run (4 members, 3 rounds, exploits): every figure of PNG_NAMES is drawn from data (no message
    figure, no warning), is a sizeable PNG, and no two tick labels of one axis overlap; the same on every x-axis
    and with smoothing."""
    from rpbt.pbt.runner import PopulationRunner
    from tests.conftest import tiny_config

    run = tmp_path / "run"
    runner = PopulationRunner(tiny_config(f"run.dir={run}"), run)
    runner.start()
    runner.run(progress=False)
    found = _recording_overlaps(monkeypatch)
    for x, smooth in (("steps", 1), ("rounds", 2), ("time", 1)):
        found.clear()
        result = build_report(run, tmp_path / f"report_{x}", x=x, smooth_rounds=smooth)
        assert result.warnings == [], x
        assert set(found) == set(PNG_NAMES.values()), x  # each figure drawn once, by its plot function
        assert {name: bad for name, bad in found.items() if bad} == {}, x
        for name in PNG_NAMES.values():
            path = result.out_dir / name
            width, height = _png_size(path)
            # a message figure is 8 x 2.5 inches (at most 250 pixels high); every figure with data is larger
            assert width >= 700 and height >= 300 and path.stat().st_size > 15_000, (x, name, width, height)
        md = result.markdown.read_text()
        assert "No scores yet" not in md and "No training metrics yet" not in md and "No exploits yet" not in md


def test_figures_at_16_members_and_50_rounds_have_readable_ticks(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fabricate_run(run, population=16, rounds=50, updates_per_round=2, strategies=("burn_in", "zero", "keep"))
    found = _recording_overlaps(monkeypatch)
    result = build_report(run)
    assert result.warnings == []
    assert {name: bad for name, bad in found.items() if bad} == {}


def test_the_burn_in_row_says_its_left_vs_burned_measurements_are_zero_by_construction(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, population=6, rounds=6, strategies=("burn_in", "zero"))
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line]
    for e in events:
        if e["type"] == "exploit":
            zero = e["hidden_state"] == "burn_in"
            e["measurements"] = {"pbt/hidden_state_drift": 0.0 if zero else 0.5,
                                 "pbt/policy_kl_at_exploit": 0.0 if zero else 0.25,
                                 "pbt/value_gap_at_exploit": 0.0 if zero else 2.0, "pbt/burn_in_truncated": 1,
                                 "pbt/stale_state_drift": 0.75, "pbt/stale_policy_kl_at_exploit": 0.125,
                                 "pbt/stale_value_gap_at_exploit": 3.0}
    _write_events(run, events)
    md = build_report(run).markdown.read_text()
    burn_in = next(line for line in md.splitlines() if line.startswith("| `burn_in`"))
    zero = next(line for line in md.splitlines() if line.startswith("| `zero`"))
    assert burn_in.count("0 (by construction)") == 3 and "0.75" in burn_in and "0.125" in burn_in
    assert "by construction" not in zero and "| 0.5 |" in zero
    assert "Under `burn_in` those three are 0 by construction" in md and "`pbt/stale_state_drift`" in md


def test_bad_x_axis_or_smoothing_is_a_value_error(tmp_path):
    import pytest

    run = tmp_path / "run"
    fabricate_run(run, population=4, rounds=3)
    with pytest.raises(ValueError, match="x='wall'"):
        build_report(run, x="wall")
    with pytest.raises(ValueError, match="smooth_rounds=0"):
        build_report(run, smooth_rounds=0)
