"""The command line: argument parsing, exit statuses, what each command prints."""

from __future__ import annotations

import yaml

from rpbt.config import (
    Config,
)


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
