"""The lean core install: what needs an extra, and the error a user without it gets.

Each check runs in a fresh interpreter. "Without the extra" is simulated by ``sys.modules[name] = None`` for the
extras' packages, which makes ``import name`` raise ``ModuleNotFoundError`` and ``importlib.util.find_spec(name)``
return None, as in a venv where ``pip install rpbt`` did not bring them (the fresh-venv measurement is in
CHANGELOG.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rpbt.extras import MissingExtraError, require
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
#: the packages each extra brings (pyproject.toml [project.optional-dependencies])
EXTRA_PACKAGES = ["pandas", "matplotlib", "gym_anytrading", "sklearn", "threadpoolctl"]


def _python(code: str, *argv: str, block: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (rpbt from this tree), the extras' packages hidden when ``block``."""
    hide = f"import sys\nfor m in {EXTRA_PACKAGES!r}: sys.modules[m] = None\n" if block else ""
    env_path = f"{REPO / 'src'}:{REPO}"
    return subprocess.run([sys.executable, "-c", hide + code, *argv], capture_output=True, text=True, timeout=300,
                          cwd=cwd or REPO, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin",
                                                "OMP_NUM_THREADS": "1"})


CLI = "import sys\nfrom rpbt.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def test_require_names_the_extra_and_returns_the_module():
    assert require("json", "report", "anything") is json
    with pytest.raises(MissingExtraError, match=r"frobnicating needs the Python package 'no_such_pkg_xyz'.*"
                                                r"pip install 'rpbt\[pb2\]'"):
        require("no_such_pkg_xyz", "pb2", "frobnicating")


def test_importing_rpbt_and_the_default_jobs_modules_loads_no_extra_nor_scipy():
    code = ("import sys, json, rpbt, rpbt.cli, rpbt.api, rpbt.pbt.runner, rpbt.pbt.scheduler, rpbt.report, "
            "rpbt.envs.factory, rpbt.envs.market_data, rpbt.evaluation\n"
            "from rpbt.report import ReportError\n"
            "print(json.dumps(sorted(m for m in ('pandas', 'matplotlib', 'gym_anytrading', 'sklearn', 'scipy') "
            "if m in sys.modules)))\n")
    out = _python(code, block=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_the_default_job_trains_and_reports_its_summary_without_any_extra(tmp_path):
    out = _python(CLI, "train", *TINY, f"run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run" / "summary.json").is_file()
    assert "best member" in out.stdout


@pytest.mark.parametrize("argv, extra", [
    (["train", "trading_googl"], "trading"),
    (["train", "env.id=trading", "env.data.source=csv", "env.data.path=tests/golden/none.csv"], "trading"),
    (["train", "pbt.explore=pb2"], "pb2"),
])
def test_a_feature_without_its_extra_exits_2_naming_it_before_writing_anything(tmp_path, argv, extra):
    run_dir = tmp_path / "run"
    out = _python(CLI, *argv, *TINY, f"run.dir={run_dir}")
    assert out.returncode == 2, out.stderr
    assert f"pip install 'rpbt[{extra}]'" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("rpbt: error: ") and out.stderr.count("\n") == 1
    assert not run_dir.exists()


def test_report_and_load_run_without_the_report_extra_name_it(tmp_path):
    out = _python(CLI, "train", *TINY, f"run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr
    report = _python(CLI, "report", str(tmp_path / "run"))
    assert report.returncode == 2 and "pip install 'rpbt[report]'" in report.stderr
    assert "Traceback" not in report.stderr
    assert not (tmp_path / "run" / "report").exists()
    frames = _python(f"import rpbt.report\nrpbt.report.load_run({str(tmp_path / 'run')!r})\n")
    assert frames.returncode == 1 and "MissingExtraError" in frames.stderr
    assert "pip install 'rpbt[report]'" in frames.stderr


def test_the_spike_study_refuses_to_start_without_matplotlib(tmp_path):
    out = _python(CLI, "spike-study", *TINY, f"spike_study.out_dir={tmp_path / 'study'}", "spike_study.seeds=1")
    assert out.returncode == 2 and "pip install 'rpbt[report]'" in out.stderr, out.stderr
    assert not (tmp_path / "study").exists()
