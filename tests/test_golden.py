"""Same numbers: tiny runs reproduce the golden events and metrics recorded before the learner-core refactor.

``tests/golden/record.py`` wrote the fixtures; a change that alters what the learner computes (decisions, scores,
hyperparameters, exploit measurements or any per-update metric) fails here. Keys and columns added later are allowed.

The fixtures must hold on any x86-64 CPU that torch supports, and CPUs differ in the last bits of float32 kernels
(ATen's and MKL's code paths are chosen by instruction set and vendor). So each recorded value is compared by kind:

- **decisions**: every value that is not a float (members, donors, counts, strategy names) must be equal;
- **exact floats**: scores, returns, hyperparameters (in events and in force in metric rows) within 1e-6 (relative
  or absolute): they come from the same actions and from float64 arithmetic on seeded draws;
- **learner values**: per-update losses and statistics (``train/*`` but the hyperparameters in force, ``sa_ppo/*``,
  ``vgs/*``) and exploit measurements: ``|actual - expected| <= rtol * (|expected| + scale)``, ``scale`` the largest
  magnitude in that column (or measurement key) of the case; ``rtol`` 1e-4, and 1e-2 for the two columns that are
  differences of nearly equal terms on a fresh policy (``train/approx_kl``, mean((r - 1) - log r) with r = 1 +- 1e-4;
  ``train/policy_gradient_loss``, a mean of -A r over advantages normalized to mean 0).

Why these: ``python tests/golden/spread.py`` reruns every case under each forced kernel setting this machine has
(``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``, ``MKL_CBWR``, ``ONEDNN_MAX_CPU_ISA``) and prints, per column,
the rtol each setting needed. Over 14 settings on an AMD EPYC the largest were 1.3e-3 (approx_kl), 7.4e-4
(policy_gradient_loss) and 4.7e-6 for every other column; no decision or exact float changed
(docs/reproducibility.md). A change of the size a bug makes is ten times a column's rtol or more: the tests below
check that such a change of any one value is caught, and that real changes (Adam's epsilon 10% off, one PGD step
less, a shorter burn-in history) fail in the learner values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.golden.compare import column_scales, diff_runs, is_float, learner_column, leaves, lookup, rtol_of
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


def _learner_cells() -> list[tuple[str, str]]:
    """(case, column) for every learner column with a nonzero value in a fixture."""
    cells = []
    for case in sorted(CASES):
        fixture = _record(json.loads((GOLDEN / f"{case}.json").read_text()))
        cells += [(case, col) for col, scale in sorted(column_scales(fixture).items()) if scale > 0]
    return cells


@pytest.mark.parametrize("case,column", _learner_cells())
def test_a_bug_sized_change_of_any_learner_value_is_caught(case, column):
    """Each loosened column: its largest value moved by ten times its rtol (of the column's scale) fails; by a
    tenth of it passes."""
    fixture = _record(json.loads((GOLDEN / f"{case}.json").read_text()))
    scale = column_scales(fixture)[column]
    target = next(p for p, v in leaves(fixture)
                  if learner_column(p) == column and is_float(v) and abs(v) == scale)

    def moved(by: float) -> dict:
        copy = json.loads(json.dumps(fixture))
        parent = lookup(copy, target[:-1])
        parent[target[-1]] += by * scale
        return copy

    assert [k for k, _ in diff_runs(fixture, moved(10 * rtol_of(column)))] == ["learner"]
    assert not diff_runs(fixture, moved(0.1 * rtol_of(column)))


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
