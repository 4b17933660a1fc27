"""Same numbers: tiny runs reproduce the golden events and metrics recorded before the learner-core refactor.

``tests/golden/record.py`` wrote the fixtures on the commit before the refactor; a change that alters what the learner
computes (decisions, scores, hyperparameters, exploit measurements or any per-update metric) fails here. Keys and
columns added later are allowed; every recorded one must match within 1e-6 (relative or absolute).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.golden.record import CASES, run_case

GOLDEN = Path(__file__).parent / "golden"


def _diff(expected, actual, path="") -> list[str]:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected a mapping, got {actual!r}"]
        out = []
        for k, v in expected.items():
            if k not in actual:
                out.append(f"{path}.{k}: missing")
            else:
                out += _diff(v, actual[k], f"{path}.{k}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {len(expected)} items, got {actual!r:.200}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in _diff(e, a, f"{path}[{i}]")]
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        if math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-6):
            return []
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_reproduces_the_golden_numbers(case, tmp_path):
    expected = json.loads((GOLDEN / f"{case}.json").read_text())
    actual = run_case(case, tmp_path)
    diffs = _diff(expected["events"], actual["events"], "events") + _diff(expected["metrics"], actual["metrics"],
                                                                          "metrics")
    assert not diffs, f"{len(diffs)} differences, first: " + "; ".join(diffs[:8])


def test_the_comparison_catches_a_changed_number():
    golden = json.loads((GOLDEN / "local_default.json").read_text())
    changed = json.loads(json.dumps(golden))
    changed["events"][1]["scores"][0] += 1e-4
    assert _diff(golden["events"], changed["events"])
    assert not _diff(golden["events"], json.loads(json.dumps(golden["events"])))
