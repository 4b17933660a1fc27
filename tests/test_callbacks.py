"""Callbacks: what the hooks receive, and a hook returning False stops the run so that `rpbt resume` continues it
exactly as it continues a run interrupted at the same round boundary."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

import rpbt
from rpbt.callbacks import Callback, CallbackList, StopAtScore
from rpbt.cli import main
from rpbt.pbt.runner import PopulationRunner
from tests.conftest import TINY, tiny_config

WALL_CLOCK = ("time", "train_s", "transfer_s")


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _metrics(run_dir, m):
    with (run_dir / "members" / str(m) / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k not in ("time", "time/fps")} for r in csv.DictReader(f)]


class Recorder(Callback):
    """Records every hook's info; stops (returns False) at the end of round ``stop_at``."""

    def __init__(self, stop_at=None):
        self.stop_at, self.rounds, self.exploits, self.starts, self.ends = stop_at, [], [], [], []

    def on_training_start(self, info):
        self.starts.append(info)

    def on_exploit(self, info):
        self.exploits.append(info)

    def on_round_end(self, info):
        self.rounds.append(info)
        return False if info["round"] == self.stop_at else None

    def on_training_end(self, info):
        self.ends.append(info)


def test_hooks_receive_each_round_s_scores_hyperparameters_env_steps_and_each_exploit(tmp_path):
    rec = Recorder()
    run = rpbt.train(tiny_config(f"run.dir={tmp_path / 'r'}", "run.total_env_steps=256"), callbacks=[rec])
    events = _events(run.dir)
    rounds = [e for e in events if e["type"] == "round"]
    assert [i["round"] for i in rec.rounds] == [1, 2, 3, 4] and rec.rounds[-1]["rounds_total"] == 4
    for info, e in zip(rec.rounds, rounds):
        assert info["scores"] == e["scores"] and info["hparams"] == e["hparams"]
        assert info["env_steps"] == e["env_steps"] == info["round"] * 2 * 32  # 2 updates x 32 steps per round
    exploits = [e for e in events if e["type"] == "exploit"]
    assert exploits and len(rec.exploits) == len(exploits)
    for info, e in zip(rec.exploits, exploits):
        assert (info["round"], info["donor"], info["recipient"]) == (e["round"], e["donor"], e["recipient"])
        assert info["hparams_before"] == rounds[e["round"] - 1]["hparams"][e["recipient"]]
        if e["round"] < 4:  # the explored hyperparameters are those in force in the recipient's next round
            assert info["hparams_after"] == rounds[e["round"]]["hparams"][e["recipient"]]
        assert info["hparams_after"] == e["new_hparams"] and info["measurements"] == e["measurements"]
    best = rec.rounds[-1]["best_member"]
    assert rec.rounds[-1]["best_score"] == run.summary["best_score"] == rec.rounds[-1]["scores"][best]
    assert [s["round"] for s in rec.starts] == [0] and rec.ends[0]["stopped"] is None
    assert rec.ends[0]["summary"] == run.summary and "stopped" not in run.summary


def test_a_stop_leaves_an_interrupted_run_that_resumes_like_one_interrupted_at_the_same_round(tmp_path, capsys):
    """The resume contract (README) promises determinism given the commit, so the stopped-then-resumed run must equal
    a run killed after the same committed round and resumed: events (but the stop event), metrics, summary."""
    cfg = ["run.total_env_steps=256"]  # 4 rounds
    stopped = tmp_path / "stopped"
    rec = Recorder(stop_at=2)
    run = rpbt.train(tiny_config(f"run.dir={stopped}", *cfg), callbacks=[rec])
    assert run.summary["round"] == 2 and run.summary["stopped"] == "Recorder"
    assert [i["round"] for i in rec.rounds] == [1, 2] and rec.ends[0]["stopped"] == "Recorder"
    events = _events(stopped)
    assert [e["type"] for e in events][-1] == "stop" and not any(e["type"] == "end" for e in events)
    state = json.loads((stopped / "checkpoints" / "runner.json").read_text())
    assert state["round"] == 2 and state["updates"] == 4

    killed = tmp_path / "killed"
    runner = PopulationRunner(tiny_config(f"run.dir={killed}", *cfg), killed)
    runner.start()
    runner.play_round()
    runner.play_round()
    runner.close()  # as a Ctrl-C / kill right after round 2's commit leaves it

    for d in (stopped, killed):
        assert main(["resume", str(d)]) == 0
    capsys.readouterr()
    a = [{k: v for k, v in e.items() if k not in WALL_CLOCK} for e in _events(stopped) if e["type"] != "stop"]
    b = [{k: v for k, v in e.items() if k not in WALL_CLOCK} for e in _events(killed)]
    assert a == b and [e["round"] for e in a if e["type"] == "round"] == [1, 2, 3, 4]
    for m in range(4):
        assert _metrics(stopped, m) == _metrics(killed, m)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (stopped, killed))
    assert (sa["scores"], sa["hparams"], sa["best_member"], sa["env_steps"]) == \
        (sb["scores"], sb["hparams"], sb["best_member"], sb["env_steps"])
    assert "stopped" not in sa and sa["round"] == 4


def test_stop_at_score_by_config_and_by_callback_and_lifting_it_on_resume(tmp_path, capsys):
    run = rpbt.train(tiny_config(f"run.dir={tmp_path / 'a'}", "run.stop_at_score=-1e9"))
    assert run.summary["round"] == 1 and run.summary["stopped"].startswith("StopAtScore: member")
    stop = [e for e in _events(run.dir) if e["type"] == "stop"]
    assert len(stop) == 1 and stop[0]["round"] == 1 and ">= -1e+09 in round 1" in stop[0]["reason"]
    # Resuming as it is stops again after one more round; lifting the stop on resume runs to the end.
    assert main(["resume", str(run.dir)]) == 0
    assert json.loads((run.dir / "summary.json").read_text())["round"] == 2
    assert main(["resume", str(run.dir), "run.stop_at_score=null"]) == 0
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["round"] == 3 and "stopped" not in summary
    assert "stop_at_score: null" in (run.dir / "config.yaml").read_text()
    capsys.readouterr()
    # The callback form; a target nobody reaches never stops.
    never = rpbt.train(tiny_config(f"run.dir={tmp_path / 'b'}"), callbacks=[StopAtScore(1e9)])
    assert never.summary["round"] == 3 and "stopped" not in never.summary
    low = rpbt.train(tiny_config(f"run.dir={tmp_path / 'c'}", "pbt.mode=min"), callbacks=[StopAtScore(1e9, "min")])
    assert low.summary["round"] == 1 and low.summary["stopped"].startswith("StopAtScore")


def test_callback_list_calls_every_callback_and_refuses_what_has_no_hooks():
    calls = []

    class A(Callback):
        def on_round_end(self, info):
            calls.append("a")
            return False

    class B(Callback):
        def on_round_end(self, info):
            calls.append("b")
            return 0  # falsy but not False: goes on

    cbs = CallbackList([B(), A(), B()])
    assert cbs.call("on_round_end", {}) is False and calls == ["b", "a", "b"] and cbs.stopped_by == "A"
    assert CallbackList([B()]).call("on_round_end", {}) is True
    assert Callback().on_exploit({}) is None
    with pytest.raises(TypeError, match="subclass rpbt.callbacks.Callback"):
        CallbackList([Recorder])  # the class, not an instance
    with pytest.raises(TypeError, match="callbacks must be objects with hooks"):
        CallbackList([print])
    with pytest.raises(ValueError, match="finite"):
        StopAtScore(float("nan"))


def test_callbacks_run_in_the_driver_with_the_process_backend_and_the_stop_resumes(tmp_path, capsys):
    run_dir = tmp_path / "p"
    rec = Recorder(stop_at=1)
    run = rpbt.train(tiny_config(f"run.dir={run_dir}", "backend.kind=process", "backend.num_workers=2"),
                     callbacks=[rec])
    assert run.summary["stopped"] == "Recorder" and run.summary["round"] == 1 and len(rec.rounds) == 1
    more = Recorder()
    resumed = rpbt.resume(run_dir, callbacks=[more])
    assert [i["round"] for i in more.rounds] == [2, 3] and resumed.summary["round"] == 3
    assert [e["round"] for e in _events(run_dir) if e["type"] == "round"] == [1, 2, 3]
    shutil.rmtree(run_dir)


def test_a_stop_by_run_stop_at_score_says_how_to_lift_it(tmp_path, capsys):
    """A plain `rpbt resume` of a run that run.stop_at_score stopped plays one round and stops again: the hints
    (the stop line and the end-of-run line) name the override that goes on; a callback's stop keeps the plain one."""
    run_dir = tmp_path / "a"
    assert main(["train", *TINY, "run.progress=true", "run.stop_at_score=-1e9", f"run.dir={run_dir}"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    want = f"rpbt resume {run_dir} run.stop_at_score=null"
    assert out.count(want) == 2, out
    rpbt.train(tiny_config(f"run.dir={tmp_path / 'b'}", "run.progress=true"), callbacks=[StopAtScore(-1e9)])
    out = " ".join(capsys.readouterr().out.split())
    assert f"rpbt resume {tmp_path / 'b'}`" in out and "run.stop_at_score=null" not in out, out


def test_a_stop_before_the_first_round_does_not_say_resume(tmp_path, capsys):
    """on_training_start returning False stops before any round is committed: there is nothing to resume."""
    class NoStart(Callback):
        def on_training_start(self, info):
            return False

    run = rpbt.train(tiny_config(f"run.dir={tmp_path / 'a'}", "run.progress=true"), callbacks=[NoStart()])
    assert run.summary["round"] == 0 and run.summary["stopped"] == "NoStart"
    out = " ".join(capsys.readouterr().out.split())
    assert "rpbt: stopped before the first round: NoStart; nothing to resume" in out and "rpbt resume" not in out, out


def test_stop_at_score_takes_numpy_targets_and_refuses_booleans():
    import numpy as np

    assert StopAtScore(np.float32(0.5)).target == 0.5 and isinstance(StopAtScore(np.int64(1)).target, float)
    for bad in (True, float("nan"), "0.9"):
        with pytest.raises(ValueError, match="finite number"):
            StopAtScore(bad)
