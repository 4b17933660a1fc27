"""Tests of ``rpbt report`` on tiny synthetic run directories (RUNDIR_FORMAT.md), fabricated here."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from rpbt.report import (
    PNG_NAMES,
    ReportError,
    build_report,
    derive_lineage,
    load_run,
    read_events,
    read_metrics,
    write_report,
)
from rpbt.report.analysis import value_loss_windows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SEARCH_SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "scale": "log", "values": None},
    "clip_range": {"type": "float", "low": 0.1, "high": 0.3, "scale": "linear", "values": None},
    "num_minibatches": {"type": "int", "low": 1, "high": 8, "scale": "linear", "values": None},
    "activation": {"type": "categorical", "low": None, "high": None, "scale": "linear", "values": ["tanh", "relu"]},
}

METRIC_COLUMNS = ["round", "update", "env_steps", "time", "rollout/ep_rew_mean", "train/value_loss",
                  "train/approx_kl", "pbt/score"]


# --------------------------------------------------------------------------------------------------- fabrication


def _write_events(run_dir: Path, events: list[dict]) -> Path:
    path = run_dir / "events.jsonl"
    with path.open("w") as f:
        for ev in events:
            f.write(json.dumps(ev) + "\n")
    return path


def _write_metrics(run_dir: Path, member: int, rows: list[dict], columns: list[str]) -> Path:
    d = run_dir / "members" / str(member)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "metrics.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in rows:
            w.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return path


def fabricate_run(
    run_dir: Path,
    population: int = 6,
    rounds: int = 8,
    updates_per_round: int = 5,
    steps_per_update: int = 1024,
    seed: int = 0,
    strategies: tuple[str, ...] = ("burn_in", "zero"),
    end: bool = True,
    summary: bool = True,
) -> dict:
    """A plausible PBT run: truncation selection (bottom quarter copies the top quarter), perturbed
    hyperparameters, value loss that jumps after an exploit. Returns what was written (events, metrics rows)."""
    rng = random.Random(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        "env:\n  id: popgym-PositionOnlyCartPoleEasy-v0\npbt:\n"
        f"  population_size: {population}\n  exploit: truncation\n  hidden_state: burn_in\n"
    )
    hps = [
        {"learning_rate": 10 ** rng.uniform(-4, -2.6), "clip_range": rng.uniform(0.1, 0.3),
         "num_minibatches": rng.randint(1, 8), "activation": rng.choice(["tanh", "relu"])}
        for _ in range(population)
    ]
    quality = [rng.uniform(0, 10) for _ in range(population)]
    vloss = [rng.uniform(1, 2) for _ in range(population)]
    t = 1_700_000_000.0
    events: list[dict] = [{"type": "start", "round": 0, "time": t, "population_size": population,
                           "hparams": [dict(h) for h in hps], "search_space": SEARCH_SPACE}]
    rows: dict[int, list[dict]] = {i: [] for i in range(population)}
    update = 0
    n_exploit = 0
    jump_next: dict[int, float] = {}
    for r in range(1, rounds + 1):
        for k in range(updates_per_round):
            update += 1
            for i in range(population):
                quality[i] += rng.uniform(-1, 3) * (1 + 200 * hps[i]["learning_rate"])
                vloss[i] *= 0.97
                spike = jump_next.get(i, 1.0) if k == 0 else 1.0
                rows[i].append({"round": r, "update": update, "env_steps": update * steps_per_update,
                                "time": t + update, "rollout/ep_rew_mean": quality[i],
                                "train/value_loss": vloss[i] * spike, "train/approx_kl": 0.01,
                                "pbt/score": quality[i] if k == updates_per_round - 1 else None})
        jump_next = {}
        scores = list(quality)
        events.append({"type": "round", "round": r, "time": t + update, "env_steps": update * steps_per_update,
                       "updates": update, "scores": scores, "hparams": [dict(h) for h in hps]})
        order = sorted(range(population), key=lambda i: scores[i])
        q = max(1, population // 4)
        before_q, before_v, before_h = list(quality), list(vloss), [dict(h) for h in hps]
        for rec, donor in zip(order[:q], reversed(order[-q:])):
            new = dict(before_h[donor])
            new["learning_rate"] = min(3e-3, max(1e-4, new["learning_rate"] * rng.choice([0.8, 1.2])))
            new["clip_range"] = min(0.3, max(0.1, new["clip_range"] * rng.choice([0.8, 1.2])))
            strategy = strategies[n_exploit % len(strategies)]
            n_exploit += 1
            events.append({
                "type": "exploit", "round": r, "time": t + update, "env_steps": update * steps_per_update,
                "recipient": rec, "donor": donor, "recipient_score": scores[rec], "donor_score": scores[donor],
                "old_hparams": hps[rec], "new_hparams": new, "resampled": [], "hidden_state": strategy,
                "measurements": {"pbt/hidden_state_drift": rng.uniform(0, 1), "pbt/policy_kl_at_exploit": 0.02,
                                 "pbt/value_gap_at_exploit": 0.5, "pbt/burn_in_truncated": 0},
            })
            quality[rec], vloss[rec], hps[rec] = before_q[donor], before_v[donor], new
            jump_next[rec] = 3.0 if strategy == "zero" else 1.3
    if end:
        events.append({"type": "end", "round": rounds, "time": t + update + 1, "env_steps": update * steps_per_update})
    _write_events(run_dir, events)
    for i in range(population):
        _write_metrics(run_dir, i, rows[i], METRIC_COLUMNS)
    _write_checkpoints(run_dir, rounds, population, scores=list(quality))
    if summary:
        best = max(range(population), key=lambda i: quality[i])
        (run_dir / "summary.json").write_text(json.dumps({"round": rounds, "best_member": best}))
    return {"events": events, "rows": rows}


def _write_checkpoints(run_dir: Path, round_: int, population: int, members=None, scores=None,
                       runner_json: bool = True) -> Path:
    """The runner's commit (PopulationRunner.commit): checkpoints/round_<r:06d>/member_<i>.pt for ``members``
    (default all), then checkpoints/runner.json naming that folder. Returns the round folder."""
    folder = run_dir / "checkpoints" / f"round_{round_:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(population) if members is None else members:
        (folder / f"member_{i}.pt").write_bytes(b"x")
    if runner_json:
        (run_dir / "checkpoints" / "runner.json").write_text(json.dumps({
            "round": round_, "checkpoint_dir": folder.name, "scheduler": {}, "lineage": [[] for _ in range(population)],
            "exploitation_count": [0] * population, "scores": scores or [None] * population, "env_steps": 0}))
    return folder


# A hand-built example: 4 members, 4 rounds.
#   round 1: 0 -> 3
#   round 2: 3 -> 1 (3 carries 0's weights) and 1 -> 2 (same round: 1 donates its own pre-exploit weights)
#   round 3: 2 -> 0
# written with a crash after round 3 and a resume from round 2, so round 3 and a stale exploit (1 -> 0) appear twice.
HAND_EVENTS = [
    {"type": "start", "round": 0, "time": 0, "population_size": 4,
     "hparams": [{"learning_rate": 1e-3}] * 4, "search_space": {"learning_rate": SEARCH_SPACE["learning_rate"]}},
    {"type": "round", "round": 1, "time": 1, "env_steps": 100, "updates": 2, "scores": [5, 3, 2, 1],
     "hparams": [{"learning_rate": 1e-3}] * 4},
    {"type": "exploit", "round": 1, "time": 1, "env_steps": 100, "recipient": 3, "donor": 0,
     "hidden_state": "burn_in", "new_hparams": {"learning_rate": 1.2e-3}},
    {"type": "round", "round": 2, "time": 2, "env_steps": 200, "updates": 4, "scores": [5, 4, 1, 6],
     "hparams": [{"learning_rate": 1e-3}] * 3 + [{"learning_rate": 1.2e-3}]},
    {"type": "exploit", "round": 2, "time": 2, "env_steps": 200, "recipient": 1, "donor": 3,
     "hidden_state": "zero", "new_hparams": {"learning_rate": 1.44e-3}},
    {"type": "exploit", "round": 2, "time": 2, "env_steps": 200, "recipient": 2, "donor": 1,
     "hidden_state": "burn_in", "new_hparams": {"learning_rate": 0.8e-3}},
    # first attempt at round 3, then a crash
    {"type": "round", "round": 3, "time": 3, "env_steps": 300, "updates": 6, "scores": [1, 7, 8, 6],
     "hparams": [{"learning_rate": 1e-3}, {"learning_rate": 1.44e-3}, {"learning_rate": 0.8e-3},
                 {"learning_rate": 1.2e-3}]},
    {"type": "exploit", "round": 3, "time": 3, "env_steps": 300, "recipient": 0, "donor": 1,
     "hidden_state": "zero", "new_hparams": {"learning_rate": 9e-9}},
    {"type": "resume", "round": 2, "time": 10},
    {"type": "round", "round": 3, "time": 11, "env_steps": 300, "updates": 6, "scores": [1, 7, 8, 6],
     "hparams": [{"learning_rate": 1e-3}, {"learning_rate": 1.44e-3}, {"learning_rate": 0.8e-3},
                 {"learning_rate": 1.2e-3}]},
    {"type": "exploit", "round": 3, "time": 11, "env_steps": 300, "recipient": 0, "donor": 2,
     "hidden_state": "burn_in", "new_hparams": {"learning_rate": 0.96e-3}},
    {"type": "round", "round": 4, "time": 12, "env_steps": 400, "updates": 8, "scores": [9, 7, 8, 6],
     "hparams": [{"learning_rate": 0.96e-3}, {"learning_rate": 1.44e-3}, {"learning_rate": 0.8e-3},
                 {"learning_rate": 1.2e-3}]},
]


# --------------------------------------------------------------------------------------------------- tests


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


def test_lineage_matches_hand_built_example():
    lin = derive_lineage(HAND_EVENTS)
    assert lin.population_size == 4
    assert lin.last_round == 4
    # the stale attempt's exploit (round 3, 1 -> 0) is gone after the resume
    assert [(x.round, x.donor, x.recipient) for x in lin.exploits] == [(1, 0, 3), (2, 3, 1), (2, 1, 2), (3, 2, 0)]
    assert lin.received == {0: [(3, 2)], 1: [(2, 3)], 2: [(2, 1)], 3: [(1, 0)]}
    assert lin.ancestry == {
        0: [(2, 1), (3, 2)],  # member 1's initial weights -> 2 at round 2 -> 0 at round 3
        1: [(1, 0), (2, 3)],  # member 0's initial weights -> 3 at round 1 -> 1 at round 2
        2: [(2, 1)],  # same-round: 1 donated its own weights before receiving 3's
        3: [(1, 0)],
    }
    assert lin.origin == {0: 1, 1: 0, 2: 1, 3: 0}
    assert lin.origin_by_round == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 0, 1, 0], [1, 0, 1, 0], [1, 0, 1, 0]]
    assert lin.scores == {0: 9.0, 1: 7.0, 2: 8.0, 3: 6.0}
    assert lin.best_member == 0
    assert lin.best_ancestry == [(2, 1), (3, 2)]
    assert lin.describe(0) == "member 1 -(round 2)-> member 2 -(round 3)-> member 0"
    assert lin.ancestry_at(0, 2) == []  # before round 3's exploit member 0 had its own weights
    # derive_lineage is pure: the input is untouched, and the same from cleaned or raw events
    assert derive_lineage(list(HAND_EVENTS)).ancestry == lin.ancestry


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


def test_duplicate_round_lines_keep_last(tmp_path):
    path = tmp_path / "events.jsonl"
    events = [HAND_EVENTS[0], HAND_EVENTS[1],
              {**HAND_EVENTS[1], "scores": [0, 0, 0, 42]}]  # round 1 again, no resume line
    _write_events(tmp_path, events)
    run = load_run(tmp_path)
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
    run = load_run(run_dir)
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
    run = load_run(run_dir)
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
    run = load_run(run_dir)
    series, source = score_series(run, x_axis(run))
    assert source == "metrics"
    assert all(len(xs) == 3 and np.isfinite(ys).all() for xs, ys in series.values())
    build_report(run_dir)


# --------------------------------------------------------------------------------------------------- checkpoints


def test_checkpoints_counted_in_the_folder_runner_json_names(tmp_path):
    """A commit cut short leaves a newer partial folder (round 4) and an old one not yet deleted (round 2): only
    the folder runner.json names counts."""
    run = tmp_path / "run"
    fabricate_run(run, population=4, rounds=3)
    _write_checkpoints(run, 2, 4, runner_json=False)
    _write_checkpoints(run, 4, 4, members=[0], runner_json=False)
    (run / "checkpoints" / "round_000003" / "member_2.pt").unlink()
    data = load_run(run)
    assert data.warnings == []
    assert (data.checkpoints_present, data.checkpoint_round) == (3, 3)
    assert data.checkpoint_dir == run / "checkpoints" / "round_000003"
    assert "checkpoints present: 3/4 (`checkpoints/round_000003`, round 3)" in build_report(run).markdown.read_text()


def test_missing_runner_json_falls_back_to_the_newest_round_folder(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, population=4, rounds=3)
    _write_checkpoints(run, 4, 4, members=[0, 1], runner_json=False)  # 4 > 3 numerically and by name
    (run / "checkpoints" / "runner.json").unlink()
    data = load_run(run)
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
    data = load_run(run)
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
