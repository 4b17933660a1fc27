"""The built wheel: what it ships (configs, py.typed), what it declares (lean core, extras), and that a shipped
config runs by name from the installed package, away from the repository's ``configs/``.

The wheel is built offline from a copy of the tree (``pip wheel --no-build-isolation``: setuptools and wheel come
with the ``test`` extra) and installed with ``--target`` into a temporary folder, without dependencies (they are
this venv's).
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["default", "trading_googl", "minigrid_memory",
           *(f"popgym/{p.stem}" for p in sorted((REPO / "configs" / "popgym").glob("*.yaml")))]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools", minversion="77")
    pytest.importorskip("wheel")
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(tree)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("rpbt-*.whl")
    return path


def test_the_wheel_ships_every_config_of_the_repository_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "rpbt/py.typed" in names
    for name in SHIPPED:
        assert f"rpbt/configs/{name}.yaml" in names, name
    assert len(SHIPPED) >= 13


def test_the_wheel_declares_a_lean_core_and_the_extras(wheel):
    with zipfile.ZipFile(wheel) as z:
        meta = email.message_from_bytes(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))))
    requires = meta.get_all("Requires-Dist")
    core = {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in requires if "extra ==" not in r}
    assert not core & {"pandas", "matplotlib", "gym-anytrading", "scikit-learn", "threadpoolctl"}, core
    assert {"torch", "gymnasium", "popgym", "scipy"} <= core

    def extra(name: str) -> set[str]:
        return {r.split(";")[0].split(">")[0].strip().lower() for r in requires if f"extra == \"{name}\"" in r}

    assert extra("trading") >= {"gym-anytrading", "pandas"}
    assert extra("pb2") >= {"scikit-learn"}
    assert extra("report") >= {"matplotlib", "pandas"}
    (everything,) = extra("all")
    assert set(everything.removeprefix("rpbt[").removesuffix("]").split(",")) == {"trading", "pb2", "report"}


def test_a_shipped_config_runs_by_name_from_the_installed_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                           str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    work = tmp_path / "elsewhere"  # no configs/ folder here: the name can only resolve inside the package
    work.mkdir()

    def rpbt(*argv: str) -> subprocess.CompletedProcess:
        code = "import sys\nfrom rpbt.cli import main\nsys.exit(main(sys.argv[1:]))\n"
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300,
                              cwd=work, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})

    listed = rpbt("configs")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[:-1]] == sorted(SHIPPED)
    trained = rpbt("train", "popgym/RepeatFirstEasy", *TINY, "run.dir=run")
    assert trained.returncode == 0, trained.stderr
    config = (work / "run" / "config.yaml").read_text()
    assert "popgym-RepeatFirstEasy-v0" in config and str(target) not in trained.stderr
    unknown = rpbt("train", "popgym/NoSuchTask")
    assert unknown.returncode == 2 and "popgym/RepeatFirstEasy" in unknown.stderr and "Traceback" not in unknown.stderr
