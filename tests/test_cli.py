"""The command line: argument parsing, exit statuses, what each command prints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import rpbt
import rpbt.actor_export
from rpbt.cli import main
from rpbt.config import (
    Config,
)
from tests.conftest import TINY
from tests.test_api import _train


def test_rpbt_config_prints_the_same_job_for_the_shipped_default_and_a_file_naming_only_the_env(tmp_path, capsys):
    from rpbt.cli import main

    assert main(["config"]) == 0
    shipped = capsys.readouterr().out
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text("env: {id: popgym-PositionOnlyCartPoleEasy-v0}\n")
    assert main(["config", str(minimal)]) == 0
    assert capsys.readouterr().out == shipped
    assert yaml.safe_load(shipped) == Config().to_dict()
    assert yaml.safe_load(shipped)["agent"]["learning_rate"] == 1e-3


def test_the_cli_reports_a_config_error_in_one_line_with_exit_status_2(capsys):
    from rpbt.cli import main

    assert main(["config", "agent.learning_rate=abc"]) == 2
    err = capsys.readouterr().err
    assert "agent.learning_rate=abc (command line)" in err and "Traceback" not in err


def test_ctrl_c_during_rpbt_train_names_the_directory_to_resume_or_says_there_is_nothing(tmp_path, capsys,
                                                                                         monkeypatch):
    """Ctrl-C in ``rpbt train`` (exit 130): after a committed round the message is a command to paste; before the
    first commit it says there is nothing to resume. Python callers get rpbt.api.Interrupted, a KeyboardInterrupt."""
    from rpbt.api import Interrupted
    from rpbt.pbt.runner import PopulationRunner

    def interrupted_after(rounds):
        def run(self, *args, **kwargs):
            self.round = rounds
            raise KeyboardInterrupt
        return run

    for rounds, want in ((2, "continue with `rpbt resume {d}`"), (0, "nothing to resume in {d}")):
        monkeypatch.setattr(PopulationRunner, "run", interrupted_after(rounds))
        run_dir = tmp_path / f"r{rounds}"
        capsys.readouterr()
        assert main(["train", *TINY, f"run.dir={run_dir}"]) == 130
        assert want.format(d=run_dir) in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt) as caught:
        rpbt.train(overrides=TINY, **{"run.dir": str(tmp_path / "py")})
    assert isinstance(caught.value, Interrupted) and caught.value.run_dir == tmp_path / "py"
    # Ctrl-C while the command is still loading its modules: one line, exit 130, no directory made
    from rpbt import cli

    def loading(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", loading)
    capsys.readouterr()
    assert main(["train", *TINY, f"run.dir={tmp_path / 'early'}"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "rpbt: interrupted before the command started; nothing was written"
    assert not (tmp_path / "early").exists()


def test_ctrl_c_while_rpbt_train_starts_says_nothing_was_written(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the backend is being built (workers starting, Ray waiting for resources): no run directory
    exists yet, so the message must not send the user to `rpbt resume`."""
    from rpbt.api import Interrupted
    from rpbt.pbt import runner as runner_module

    def waiting(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_module, "make_backend", waiting)
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, f"run.dir={run_dir}"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == f"rpbt: interrupted before the run started: nothing was written to {run_dir}", err
    assert not run_dir.exists()
    with pytest.raises(Interrupted) as caught:
        rpbt.train(overrides=TINY, **{"run.dir": str(run_dir)})
    assert (caught.value.committed_rounds, caught.value.started) == (0, False) and not run_dir.exists()


@pytest.mark.parametrize("argv, said", [
    (["evaluate", "RUN"], "interrupted; `rpbt evaluate` did not finish"),
    (["report", "RUN"], "interrupted; `rpbt report` did not finish"),
    (["replay", "RUN", "--out", "OUT"], "interrupted; the replay is incomplete and cannot be resumed: run the same "
                                        "`rpbt replay` again with --overwrite"),
])
def test_ctrl_c_in_a_command_that_does_not_train_never_says_resume(argv, said, monkeypatch, capsys):
    from rpbt import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"cmd_{argv[0]}", interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.strip() == f"rpbt: {said}" and "resume" not in err.replace("cannot be resumed", "")


def test_a_reader_that_goes_away_does_not_stop_training(tmp_path):
    """`rpbt train ... | head -1`: the first line is read, the pipe closes; the run still trains to its end."""
    run_dir = tmp_path / "piped"
    proc = subprocess.Popen([sys.executable, "-m", "rpbt.cli", "train", *TINY, "backend.kind=local",
                             f"run.dir={run_dir}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith(f"rpbt: run directory {run_dir}")
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 192 and summary["round"] == summary["rounds_total"]


def test_without_a_terminal_progress_is_one_plain_line_per_round_and_no_bar(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rpbt.cli", "train", *TINY, "backend.kind=local", "run.progress=true",
                           f"run.dir={tmp_path / 'r'}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rounds = [line for line in done.stdout.splitlines() if line.startswith("round ")]
    assert [line.split()[1] for line in rounds] == ["1/3", "2/3", "3/3"], done.stdout
    assert "env steps per member" not in done.stdout and "\r" not in done.stdout  # the bar's text


@pytest.mark.parametrize("sappo", [False, True])
def test_the_end_of_run_summary_prints_only_the_hyperparameters_in_force(sappo, tmp_path, capsys):
    """SA-PPO's hyperparameters are every member's (they are carried and explored alike), but they act only with
    ``agent.adversarial.enabled``; summary.json keeps them all."""
    run = _train(tmp_path, **{"run.total_env_steps": 64, "agent.adversarial.enabled": sappo})
    capsys.readouterr()
    from rpbt.cli import _print_summary

    _print_summary(run.dir, run.summary, run.config)
    out = capsys.readouterr().out
    printed = json.loads(out.partition("hyperparameters ")[2])  # rich wraps the line between JSON tokens
    adversarial = {"adversarial.epsilon", "adversarial.robust_kl_coef", "adversarial.ratio"}
    assert set(run.summary["hparams"]) >= adversarial
    assert set(printed) == set(run.summary["hparams"]) - (set() if sappo else adversarial)
    assert printed["learning_rate"] == float(f"{run.summary['hparams']['learning_rate']:.4g}")


def test_rpbt_version_prints_the_installed_version_and_the_package_says_it_is_typed(capsys):
    from importlib.metadata import version
    from importlib.resources import files

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"rpbt {version('rpbt')}" == f"rpbt {rpbt.__version__}"
    assert files("rpbt").joinpath("py.typed").is_file()


def test_rpbt_configs_lists_every_shipped_config_with_its_environment(capsys):
    from rpbt.config import shipped_configs

    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == list(shipped_configs())
    rows = dict(line.split() for line in lines[:-1])
    assert rows["popgym/RepeatFirstEasy"] == "popgym-RepeatFirstEasy-v0" and rows["trading_googl"] == "trading"
    assert rows["default"] == "popgym-PositionOnlyCartPoleEasy-v0"
    assert lines[-1].startswith("rpbt train NAME")


def test_rpbt_report_loads_neither_torch_nor_the_config_schema(tmp_path):
    """The report only reads files: in a fresh interpreter `rpbt report` writes it without importing torch or
    pydantic (they cost seconds), and a bad run directory is still the one-line error with exit status 2."""
    import subprocess
    import sys

    from tests.report.fabricate import fabricate_run

    fabricate_run(tmp_path / "run", population=4, rounds=3)
    code = ("import sys, rpbt.cli; rc = rpbt.cli.main(['report', sys.argv[1]]); "
            "bad = rpbt.cli.main(['report', sys.argv[1] + '/nothing']); "
            "print(rc, bad, 'torch' in sys.modules, 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split()[-4:] == ["0", "2", "False", "False"], out.stdout + out.stderr
    assert "no rpbt run directory at" in out.stderr and "Traceback" not in out.stderr


def test_member_best_is_the_default_member_on_the_command_line(tmp_path, capsys):
    """`--member best` (as the API's member="best" and --init-from RUN:best) is summary.json's best member."""
    run = tmp_path / "run"
    assert main(["train", *TINY, f"run.dir={run}"]) == 0
    best = json.loads((run / "summary.json").read_text())["best_member"]
    capsys.readouterr()
    assert main(["export", str(run), "--member", "best", "--format", "torchscript", "-o", str(tmp_path / "a.pt")]) == 0
    assert f"member {best}'s actor" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), "--member", "top", "--format", "torchscript", "-o", str(tmp_path / "b.pt")])
    assert exit_.value.code == 2 and "expected a member id (an integer) or 'best', got 'top'" in capsys.readouterr().err
