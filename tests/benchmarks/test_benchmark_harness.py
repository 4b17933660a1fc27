"""The learner-throughput benchmark's harness: every arm runs in its own process, which may start processes."""

from __future__ import annotations

import multiprocessing as mp
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import learner_throughput  # noqa: E402


def _start_a_child_process() -> int:
    proc = mp.get_context("spawn").Process(target=int)
    proc.start()
    proc.join()
    return proc.exitcode


def _fail() -> None:
    raise ValueError("the arm failed on purpose")


def test_an_arm_may_start_processes_of_its_own_and_a_failure_comes_back_with_its_traceback():
    # The process-backend arm starts worker processes: a daemonic pool worker may not (it raised before).
    assert learner_throughput._in_fresh_process(_start_a_child_process) == 0
    with pytest.raises(RuntimeError, match="the arm failed on purpose"):
        learner_throughput._in_fresh_process(_fail)
