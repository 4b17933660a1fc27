"""Smoke run of benchmarks/gpu_scaling.py on the CPU with a tiny config (seconds): it runs and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests.conftest import TINY

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_scaling.py"


def test_gpu_scaling_script_runs_on_the_cpu_and_writes_its_fields(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "g.json"
    tiny = [o for o in TINY if o.startswith(("env.", "agent."))]
    args = ["--device", "cpu", "--sizes", "1", "2", "--updates", "1", "--out", str(out)]
    for o in tiny:
        args += ["--override", o]
    assert module.main(args) == 0
    data = json.loads(out.read_text())
    assert [r["population"] for r in data["results"]] == [1, 2]
    for r in data["results"]:
        assert r["envs"] == 2 * r["population"] and r["env_steps_per_s"] > 0 and r["learner_samples_per_s"] > 0
    assert module.main(["--device", "cuda:7", "--sizes", "1", "--out", str(out)]) in (0, 2)
