"""Same numbers: tiny runs reproduce the golden events and metrics recorded before the learner-core refactor.

``tests/golden/record.py`` wrote the fixtures; a change that alters what the learner computes (decisions, scores,
hyperparameters, exploit measurements or any per-update metric) fails here. Keys and columns added later are allowed.

The fixtures must hold on any x86-64 CPU that torch supports, and CPUs differ in the last bits of float32 kernels
(ATen's and MKL's code paths are chosen by instruction set and vendor). So each recorded value is compared by kind:

- **decisions**: every value that is not a float (members, donors, counts, strategy names) must be equal;
- **exact floats**: scores, returns, hyperparameters (in events and in force in metric rows) within 1e-6 relative:
  they come from the same actions and from float64 arithmetic on seeded draws;
- **learner values**: per-update losses and statistics (``train/*`` but the hyperparameters in force, ``sa_ppo/*``,
  ``vgs/*``) and exploit measurements: ``|actual - expected| <= 3e-4 |expected| + 1e-5 scale``, ``scale`` the
  largest magnitude in that column (or measurement key) of the case (the floor lets a value that crosses zero
  round); ``1e-2 (|expected| + scale)`` for the two columns that are differences of nearly equal terms on a fresh
  policy (``train/approx_kl``, mean((r - 1) - log r) with r = 1 +- 1e-4; ``train/policy_gradient_loss``, a mean of
  -A r over advantages normalized to mean 0); equal list lengths (no event or metric row more or less).

Why these: ``python tests/golden/spread.py`` reruns every case under each forced kernel setting this machine has
(``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``, ``MKL_CBWR``, ``ONEDNN_MAX_CPU_ISA``) and prints, per column,
the largest share of the tolerance a setting used (docs/reproducibility.md). Over 13 settings on an AMD EPYC no
decision or exact float changed, and the learner values used at most 13% of their tolerance. The tests below
pin what the tolerances still catch, whatever their constants become: a 1% change of any learner value that is at
least 1% of its column's scale (25% of any value at least a tenth of the scale in the two cancelling columns), and
three real changes of the size a bug makes (Adam's epsilon 10% off, one PGD step less, a shorter burn-in history).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.golden.compare import (
    CANCELLING,
    column_scales,
    diff_runs,
    is_float,
    learner_column,
    leaves,
    lookup,
    tolerance,
)
from tests.golden.record import CASES, run_case

GOLDEN = Path(__file__).parent / "golden"


def _record(run: dict) -> dict:
    return {"events": run["events"], "metrics": run["metrics"]}


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_reproduces_the_golden_numbers(case, tmp_path):
    expected = json.loads((GOLDEN / f"{case}.json").read_text())
    diffs = diff_runs(_record(expected), _record(run_case(case, tmp_path)))
    assert not diffs, f"{len(diffs)} differences, first: " + "; ".join(m for _, m in diffs[:8])


def test_the_comparison_catches_a_changed_number():
    golden = _record(json.loads((GOLDEN / "local_default.json").read_text()))
    changed = json.loads(json.dumps(golden))
    changed["events"][1]["scores"][0] += 1e-4
    assert [k for k, _ in diff_runs(golden, changed)] == ["exact"]
    assert not diff_runs(golden, json.loads(json.dumps(golden)))
    changed = json.loads(json.dumps(golden))
    changed["events"][2]["donor"] += 1
    assert [k for k, _ in diff_runs(golden, changed)] == ["decision"]


def _fixture(case: str) -> dict:
    return _record(json.loads((GOLDEN / f"{case}.json").read_text()))


def _bug_size(column: str) -> tuple[float, float]:
    """(relative change a bug makes, smallest |value| / scale it is required to be caught at) for a column."""
    return (0.25, 0.1) if column in CANCELLING else (0.01, 0.01)


def _learner_values(fixture: dict):
    """(path, column, value, scale) of every finite learner value of a fixture at or above its bug-size threshold."""
    scales = column_scales(fixture)
    for path, v in leaves(fixture):
        col = learner_column(path)
        if col is not None and is_float(v) and math.isfinite(v) and scales[col] > 0:
            if abs(v) >= _bug_size(col)[1] * scales[col]:
                yield path, col, v, scales[col]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bug_sized_change_of_any_learner_value_is_outside_its_tolerance(case):
    """Every learner value at least 1% of its column's scale: a 1% change is beyond its tolerance (25% of values at
    least a tenth of the scale in the cancelling columns); fails if the tolerances are loosened past that."""
    values = list(_learner_values(_fixture(case)))
    assert values
    loose = [(p, v) for p, col, v, scale in values if tolerance(col, v, scale) >= _bug_size(col)[0] * abs(v)]
    assert not loose, loose[:5]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_comparison_flags_a_changed_learner_value_of_each_column(case):
    """Through diff_runs, per column: the value of median magnitude moved by its bug size is flagged; moved by one
    part in 1e6 of itself it is not."""
    fixture = _fixture(case)
    by_column: dict[str, list] = {}
    for path, col, v, _ in _learner_values(fixture):
        by_column.setdefault(col, []).append((abs(v), path, v))
    assert by_column
    for col, entries in by_column.items():
        _, path, v = sorted(entries)[len(entries) // 2]
        for by, flagged in ((_bug_size(col)[0], True), (1e-6, False)):
            moved = json.loads(json.dumps(fixture))
            lookup(moved, path[:-1])[path[-1]] = v * (1 + by)
            kinds = [k for k, _ in diff_runs(fixture, moved)]
            assert kinds == (["learner"] if flagged else []), (col, path, by, kinds)


def test_the_comparison_flags_a_row_or_event_more_and_a_hyperparameter_off_by_half_a_percent():
    fixture = _fixture("local_default")
    longer = json.loads(json.dumps(fixture))
    longer["metrics"]["0"].append(dict(longer["metrics"]["0"][-1]))
    assert [k for k, _ in diff_runs(fixture, longer)] == ["decision"]
    longer = json.loads(json.dumps(fixture))
    longer["events"].append(dict(longer["events"][-1]))
    assert [k for k, _ in diff_runs(fixture, longer)] == ["decision"]
    hp = json.loads(json.dumps(fixture))
    start = next(e for e in hp["events"] if e["type"] == "start")
    start["hparams"][0]["ent_coef"] *= 1.005
    assert [k for k, _ in diff_runs(fixture, hp)] == ["exact"]


# Real changes of the size a bug makes, none of them a recorded hyperparameter's value: each must fail in the
# kind of value the loosened tolerance covers.
REAL_CHANGES = {
    "adam_eps_x1.1": ("local_default", ["agent.adam_eps=1.1e-5"]),
    "one_pgd_step_less": ("local_twin_categorical_vgs_sappo", ["agent.adversarial.steps=1"]),
    "shorter_burn_in_history": ("local_continuous_scalar", ["pbt.burn_in_max_steps=8"]),
}


@pytest.mark.parametrize("change", sorted(REAL_CHANGES))
def test_a_real_change_fails_in_the_loosened_values(change, tmp_path, monkeypatch):
    case, extra = REAL_CHANGES[change]
    backend, overrides = CASES[case]
    monkeypatch.setitem(CASES, change, (backend, overrides + extra))
    expected = _record(json.loads((GOLDEN / f"{case}.json").read_text()))
    kinds = {k for k, _ in diff_runs(expected, _record(run_case(change, tmp_path)))}
    assert "learner" in kinds
