"""A killed run is proven to resume: the chaos benchmark's 3-kill version (``benchmarks/chaos_resume.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _chaos_module():
    spec = importlib.util.spec_from_file_location("chaos_resume", REPO / "benchmarks" / "chaos_resume.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILLs process groups (POSIX)")
def test_three_sigkills_of_train_and_resume_lose_nothing(tmp_path):
    chaos = _chaos_module()
    result = chaos.chaos(kills=3, seed=0, rounds=20, backend="local", min_delay=0.05, max_delay=1.0, keep=2,
                         workdir=tmp_path, verbose=False, startup_fraction=0.34, startup_max=4.0)
    assert result["clean_resumes"] == 3, result["records"]
    assert result["all_runs_passed"], result["runs"]
    assert [r["command"] for r in result["records"]][0] == "train"
    assert [r["delay_from"] for r in result["records"]] == ["training started"] * 2 + ["launch"]


def test_the_final_check_catches_a_duplicated_round_and_a_left_temp_file(tmp_path):
    """The checker itself: a finished run passes, the same run with a duplicated round line or a temp file fails."""
    import json
    import shutil

    from rpbt.cli import main
    from tests.conftest import TINY

    chaos = _chaos_module()
    run = tmp_path / "run"
    assert main(["train", *TINY, "run.torch_threads=1", f"run.dir={run}"]) == 0  # 3 rounds
    assert chaos.check_final(run, rounds=3, keep=2) == []
    assert chaos.check_killed(run) == (3, [])
    bad = tmp_path / "dup"
    shutil.copytree(run, bad)
    lines = (bad / "events.jsonl").read_text().splitlines()
    second = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == "round")
    lines.insert(second + 1, lines[second])
    (bad / "events.jsonl").write_text("\n".join(lines) + "\n")
    assert any("round lines" in p for p in chaos.check_final(bad, rounds=3, keep=2))
    assert chaos.check_killed(bad)[1]
    (run / "checkpoints" / ".runner.json.x1y2.tmp").write_text("{")
    assert any("temporary files" in p for p in chaos.check_final(run, rounds=3, keep=2))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a simulated Ray cluster (POSIX)")
def test_a_lost_ray_node_is_a_clean_recovery(tmp_path):
    """The benchmark's --ray-cluster mode, one node loss: the driver recovers by itself and the run passes."""
    import os

    if not os.environ.get("RPBT_REQUIRE_RAY"):
        pytest.importorskip("ray", reason="the optional 'ray' package is not installed (pip install 'rpbt[ray]')")
    chaos = _chaos_module()
    result = chaos.node_chaos(losses=1, seed=0, rounds=30, min_delay=0.5, max_delay=1.5, keep=2, workdir=tmp_path,
                              verbose=False)
    assert result["clean_recoveries"] == 1, result["records"]
    assert result["all_runs_passed"], result["runs"]
    assert result["records"][0]["committed_after"] > result["records"][0]["committed_before"]
