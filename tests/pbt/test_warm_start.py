"""Warm start (--init-from): every new member starts from the source member's weights and normalizers, with its own
hyperparameters, optimizer, counters and generator; a source that does not fit is refused, naming what differs."""

from __future__ import annotations

import json

import pytest
import torch

import rpbt
from rpbt.checkpoint import MemberState
from rpbt.cli import main
from rpbt.pbt.runner import PopulationRunner
from rpbt.pbt.warm_start import WarmStart, parse_init_from, warm_keys
from tests.conftest import TINY, tiny_config


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    run = tmp_path_factory.mktemp("warm") / "source"
    return rpbt.train(tiny_config(f"run.dir={run}"))


@pytest.mark.parametrize("kind", ["local", "process"])
def test_every_new_member_starts_with_the_source_member_s_weights_and_normalizers(source, tmp_path, kind):
    src = MemberState.load(source.dir / "checkpoints" / "round_000003" / "member_1.pt")
    keys = warm_keys(src)
    assert "obs_rms.mean" in keys and "return_normalizer.var" in keys and "actor.lstm.weight_hh.0" in keys
    assert not [k for k in keys if k.startswith(("hp_", "optimizer.")) or k in ("env_steps", "updates")]
    assert float(src.tensors["obs_rms.count"]) > 1 and int(src.tensors["optimizer.step_count"]) > 0
    cfg = tiny_config(f"run.dir={tmp_path / 'new'}", "pbt.population_size=3", "run.seed=7", f"backend.kind={kind}",
                      *(["backend.num_workers=2"] if kind == "process" else []))
    runner = PopulationRunner(cfg, tmp_path / "new")
    runner.start(init_from=WarmStart(f"{source.dir}:1"))
    try:
        start = json.loads((tmp_path / "new" / "events.jsonl").read_text().splitlines()[0])
        assert start["init_from"] == {"run": str(source.dir), "member": 1, "round": 3}
        for m in range(3):
            state = runner.backend.snapshot(m)
            for k in keys:
                assert torch.equal(state.tensors[k], src.tensors[k]), k
            assert state.hparams() == pytest.approx(start["hparams"][m])  # drawn as usual, not the source's
            assert int(state.tensors["optimizer.step_count"]) == 0 and int(state.tensors["env_steps"]) == 0
            assert not state.tensors["optimizer.exp_avg_sq__actor__lstm__weight_hh__0"].any()
        assert len({tuple(h.values()) for h in start["hparams"]}) == 3
    finally:
        runner.close()


def test_init_from_on_the_command_line_defaults_to_the_best_member_and_trains(source, tmp_path, capsys):
    out = tmp_path / "fine"
    assert main(["train", *TINY, f"run.dir={out}", "--init-from", str(source.dir)]) == 0
    capsys.readouterr()
    start = json.loads((out / "events.jsonl").read_text().splitlines()[0])
    assert start["init_from"]["member"] == source.summary["best_member"]
    assert json.loads((out / "summary.json").read_text())["round"] == 3


def test_bad_sources_are_refused_naming_what_differs_and_nothing_is_written(source, tmp_path, capsys):
    new = tmp_path / "new"
    cases = [
        ([f"run.dir={new}", "--init-from", str(tmp_path / "missing")], "no rpbt run directory"),
        ([f"run.dir={new}", "--init-from", f"{source.dir}:9"], "member 9 does not exist; "),
        ([f"run.dir={new}", "--init-from", f"{source.dir}:x"], "must be a member id"),
        ([f"run.dir={new}", "agent.network.lstm_hidden_size=32", "--init-from", f"{source.dir}:0"],
         "agent.network.lstm_hidden_size: 16 there, 32 here"),
        ([f"run.dir={new}", "env.id=CartPole-v1", "--init-from", f"{source.dir}:0"],
         "observations have 2 features in the source, 4 here (tensor obs_rms.mean); settings that differ: env.id"),
    ]
    for args, words in cases:
        assert main(["train", *TINY, *args]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
        assert not new.exists()
    assert parse_init_from("runs/a:3") == (parse_init_from("runs/a")[0], 3)
    assert parse_init_from("runs/a:best")[1] is None


def test_a_source_whose_checkpoints_live_in_run_storage_is_read_from_there(tmp_path):
    src = rpbt.train(tiny_config(f"run.dir={tmp_path / 'src'}", f"run.storage={tmp_path / 'store'}"))
    assert not list((src.dir / "checkpoints").glob("round_*"))  # the members are in run.storage only
    warm = WarmStart(f"{src.dir}:2")
    stored = MemberState.load(tmp_path / "store" / "src" / "round_000003" / "member_2.pt")
    assert all(torch.equal(warm.state.tensors[k], stored.tensors[k]) for k in warm_keys(stored))
