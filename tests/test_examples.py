"""The scripts in examples/ run as a user runs them (a fresh interpreter, the run directory as the argument)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))


def test_every_example_is_listed():
    assert EXAMPLES == ["custom_env.py", "export_onnx.py", "train_and_predict.py"]


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs(script, tmp_path):
    if script == "export_onnx.py" and importlib.util.find_spec("onnxruntime") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs rpbt[export]: onnxruntime must be importable")
        pytest.skip("needs the rpbt[export] extra (onnxruntime)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), str(tmp_path / "run")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (tmp_path / "run" / "summary.json").is_file()
    assert "Traceback" not in proc.stderr
