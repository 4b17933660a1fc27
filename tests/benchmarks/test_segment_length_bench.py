"""The segment-length benchmark: a tiny run writes every arm with its ratio to whole-rollout replay; bad lengths
are refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import segment_length  # noqa: E402


def test_a_tiny_run_measures_each_length_against_whole_rollout_replay(tmp_path, capsys):
    out = tmp_path / "segment_length.json"
    assert segment_length.main(["--steps", "1024", "--lengths", "16", "--population", "2", "--no-single",
                                "--out", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {"P2_L16", "P2_Lwhole"}
    assert runs["P2_Lwhole"]["ratio_vs_whole"] == 1.0
    assert runs["P2_L16"]["ratio_vs_whole"] == runs["P2_L16"]["env_steps_per_s"] / runs["P2_Lwhole"]["env_steps_per_s"]
    assert runs["P2_L16"]["overrides"][-1] == "agent.bptt_length=16"
    assert runs["P2_Lwhole"]["overrides"][-1] == "agent.bptt_length=null"
    assert runs["P2_L16"]["steps_per_member"] == 1024


def test_a_length_that_does_not_divide_the_rollout_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        segment_length.main(["--lengths", "16", "48"])
    assert exit_info.value.code == 2
    assert "--lengths [48]" in capsys.readouterr().err
