"""The cell-speed benchmark: a tiny run times both cells and reports their ratio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import cell_speed  # noqa: E402

from tests.conftest import TINY  # noqa: E402


def test_a_tiny_run_times_both_cells(capsys):
    result = cell_speed.main(["--updates", "2", *TINY])
    med = result["seconds_per_update_median"]
    assert set(med) == {"lstm", "gru"} and all(t > 0 for t in med.values())
    assert result["gru_over_lstm"] == pytest.approx(med["gru"] / med["lstm"])
    assert result["population"] == 4 and result["updates"] == 2
