"""Smoke run of benchmarks/popgym_suite.py (seconds): one POPGym environment, population 2, 2 seeds, a tiny network
and rollout. Checks the JSON fields, the markdown table, the plot, how each arm is built, and that a second run skips
the finished runs and a run directory of another budget is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import TINY_BENCH, load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "popgym_suite.py"
ENV = "RepeatPreviousEasy"
TINY = TINY_BENCH


@pytest.fixture(scope="module")
def suite():
    return load_script("popgym_suite")


def _args(out: Path, steps: int = 320) -> list[str]:
    args = ["--envs", ENV, "--steps", str(steps), "--population", "2", "--seeds", "2", "--eval-episodes", "3",
            "--out", str(out)]
    for o in TINY:
        args += ["--override", o]
    return args


def _start_hparams(run_dir: Path) -> list[dict]:
    first = json.loads((run_dir / "events.jsonl").read_text().splitlines()[0])
    assert first["type"] == "start"
    return first["hparams"]


def _types(run_dir: Path) -> list[str]:
    return [json.loads(line)["type"] for line in (run_dir / "events.jsonl").read_text().splitlines() if line]


def test_popgym_suite_smoke(suite, tmp_path, capsys):
    out = tmp_path / "suite"
    assert suite.main(_args(out)) == 0

    data = json.loads((out / "suite.json").read_text())
    assert data["options"]["envs"] == [ENV] and data["options"]["population"] == 2 and data["options"]["seeds"] == 2
    assert set(data["versions"]) >= {"torch", "popgym", "gymnasium", "python"}
    env = data["envs"][ENV]
    assert env["env_id"] == "popgym-RepeatPreviousEasy-v0" and env["config"] == "configs/popgym/RepeatPreviousEasy.yaml"
    assert list(env["arms"]) == ["pbt", "random_search", "fixed"]
    for arm, arm_data in env["arms"].items():
        assert arm_data["seeds_asked"] == 2 and [r["seed"] for r in arm_data["runs"]] == [0, 1]
        for run in arm_data["runs"]:
            assert Path(run["run_dir"]) == out / ENV / arm / f"seed{run['seed']}"
            assert run["env_steps"] >= 320 and run["eval_episodes"] == 3 and run["wall_time_s"] > 0
            for key in ("mmer", "eval_return", "auc"):
                assert -1.0 <= run[key] <= 1.0, (arm, key, run[key])
            assert run["mmer"] >= run["auc"]  # the curve's last value is its maximum
            assert run["best_member"] in (0, 1)
            curve = run["curve"]
            assert len(curve["env_steps"]) == len(curve["best_so_far"]) == 10  # 320 / (2 envs x 16 steps) updates
            finite = [v for v in curve["best_so_far"] if v is not None]
            assert finite == sorted(finite) and finite[-1] == pytest.approx(run["mmer"])
        agg = arm_data["aggregate"]
        for key in ("mmer", "eval_return", "auc", "wall_time_s"):
            assert agg[key]["n"] == 2 and agg[key]["ci95"] is not None and agg[key]["ci95"] >= 0
            assert agg[key]["mean"] == pytest.approx(sum(agg[key]["values"]) / 2)
    assert Path(env["plot"]).is_file() and Path(env["plot"]).stat().st_size > 0

    table = (out / "suite.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(f"| {ENV} |")]
    assert [row.split("|")[2].strip() for row in rows] == ["pbt", "random_search", "fixed"]
    assert all(row.rstrip().endswith("| 2/2 |") and "±" in row for row in rows)
    assert "| environment | arm | MMER |" in capsys.readouterr().out

    # how each arm is built: the same prior for pbt and random search (same seed: the same draws), defaults for fixed,
    # exploits only in pbt
    for seed in (0, 1):
        pbt, rs, fixed = (out / ENV / arm / f"seed{seed}" for arm in ("pbt", "random_search", "fixed"))
        assert _start_hparams(pbt) == _start_hparams(rs)
        assert _start_hparams(rs)[0]["learning_rate"] != _start_hparams(rs)[1]["learning_rate"]
        for member in _start_hparams(fixed):
            assert (member["learning_rate"], member["ent_coef"], member["clip_range"], member["gae_lambda"]) == (
                1e-3, 0.01, 0.2, 0.95)
        assert "exploit" not in _types(rs) and "exploit" not in _types(fixed)
    assert any("exploit" in _types(out / ENV / "pbt" / f"seed{s}") for s in (0, 1))

    # a second run skips every finished run and reuses the evaluations
    assert suite.main(_args(out)) == 0
    again = json.loads((out / "suite.json").read_text())
    assert set(again["actions"].values()) == {"skipped (finished)"} and len(again["actions"]) == 6
    assert all(r["eval_time_s"] == 0 for a in again["envs"][ENV]["arms"].values() for r in a["runs"])

    # a run directory trained with another budget is refused, not mixed in
    assert suite.main(_args(out, steps=640)) == 2
    assert "run.total_env_steps" in capsys.readouterr().err


def test_train_seeds_trains_only_those_seeds_and_reports_every_seed(suite, tmp_path, capsys):
    out = tmp_path / "suite"
    assert suite.main(_args(out) + ["--arms", "fixed", "--train-seeds", "1"]) == 0
    data = json.loads((out / "suite.json").read_text())
    assert data["actions"] == {f"{ENV}/fixed/seed1": "trained"}
    fixed = data["envs"][ENV]["arms"]["fixed"]
    assert fixed["seeds_asked"] == 2 and [r["seed"] for r in fixed["runs"]] == [1]
    assert not (out / ENV / "fixed" / "seed0").exists()
    with pytest.raises(SystemExit) as caught:
        suite.main(_args(out) + ["--train-seeds", "0,2"])
    assert caught.value.code == 2 and "--train-seeds" in capsys.readouterr().err


def test_unknown_environment_is_refused(suite, tmp_path, capsys):
    assert suite.main(["--envs", "RepeatPreviousEasy,NoSuchEnvEasy", "--out", str(tmp_path)]) == 2
    assert "NoSuchEnvEasy" in capsys.readouterr().err
    assert not (tmp_path / "suite.json").exists()


def test_default_environment_set_is_registered(suite):
    suite.check_envs(suite.DEFAULT_ENVS)
    assert len(suite.DEFAULT_ENVS) == 11
