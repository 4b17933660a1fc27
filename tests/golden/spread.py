"""Measures what other CPUs do to the golden runs: every case rerun under each forced kernel setting of this machine.

torch and MKL choose their kernels by instruction set (and MKL by vendor), and honour variables that force a lower
one: ``ATEN_CPU_CAPABILITY`` (ATen), ``MKL_ENABLE_INSTRUCTIONS`` and ``MKL_CBWR`` (MKL), ``ONEDNN_MAX_CPU_ISA``
(oneDNN). Each setting runs the cases in a fresh process; the result is compared with the fixtures by
``tests/golden/compare.py`` and, per learner column, the relative tolerance that setting needed is printed beside the
one in force. Decisions and exact floats must not move at all. Writes a JSON with every figure when ``--json`` is
given. Exit status 1 when any setting fails the comparison.

    python tests/golden/spread.py [--json out.json] [--settings "ATEN_CPU_CAPABILITY=avx2" ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.golden.compare import column_scales, diff_runs, is_float, learner_column, leaves, lookup, tolerance  # noqa: E402


def available_settings() -> list[str]:
    """Forced settings at or below this machine's instruction set (native is run besides them)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    top = ["AVX512"] if " avx512f" in flags else []
    out = ["ATEN_CPU_CAPABILITY=default", "ATEN_CPU_CAPABILITY=avx2"]
    out += [f"MKL_ENABLE_INSTRUCTIONS={m}" for m in ["SSE4_2", "AVX", "AVX2"] + top]
    out += [f"MKL_CBWR={m}" for m in ["COMPATIBLE", "AVX2"] + top]
    out += ["ONEDNN_MAX_CPU_ISA=AVX2", "ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2",
            "ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE"]
    return out


def run_all(out: Path) -> None:
    """Run every case in this process and write {case: {'events', 'metrics'}} to ``out``."""
    import torch

    from tests.golden.record import CASES, run_case

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the tiny cases' configuration warnings, once per case and setting
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: run_case(name, Path(tmp)) for name in CASES}
    out.write_text(json.dumps({k: {"events": v["events"], "metrics": v["metrics"]} for k, v in runs.items()}))


def tolerance_used(expected: dict, actual: dict) -> dict[str, float]:
    """Per learner column, the largest |actual - expected| / tolerance over its values (below 1: within)."""
    scales = column_scales(expected)
    used: dict[str, float] = {}
    for path, e in leaves(expected):
        col = learner_column(path)
        a = lookup(actual, path)
        if col is None or not is_float(e) or not math.isfinite(e) or not isinstance(a, (int, float)):
            continue
        if abs(a - e) > 0:
            tol = tolerance(col, e, scales.get(col, 0.0))
            used[col] = max(used.get(col, 0.0), abs(a - e) / tol if tol > 0 else math.inf)
    return used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="*", help="settings to run (default: every one this machine has)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--run-into", type=Path, help=argparse.SUPPRESS)  # internal: one setting's child process
    args = parser.parse_args()
    if args.run_into:
        run_all(args.run_into)
        return 0

    from tests.golden.record import CASES

    fixtures = {}
    for case in CASES:
        f = json.loads((HERE / f"{case}.json").read_text())
        fixtures[case] = {"events": f["events"], "metrics": f["metrics"]}
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU")
    settings = ["native"] + (args.settings if args.settings is not None else available_settings())
    report: dict = {"cpu": cpu, "settings": {}}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for setting in settings:
            env = dict(os.environ)
            if setting != "native":
                env.update(kv.split("=", 1) for kv in setting.split())
            out = Path(tmp) / "run.json"
            subprocess.run([sys.executable, __file__, "--run-into", str(out)], env=env, check=True, cwd=ROOT)
            runs = json.loads(out.read_text())
            entry = {}
            for case, fixture in fixtures.items():
                diffs = diff_runs(fixture, runs[case])
                failed |= bool(diffs)
                entry[case] = {"differences": [m for _, m in diffs[:20]], "count": len(diffs),
                               "tolerance_used": tolerance_used(fixture, runs[case])}
            report["settings"][setting] = entry
            worst = max(((v, c) for e in entry.values() for c, v in e["tolerance_used"].items()), default=(0.0, "-"))
            n = sum(e["count"] for e in entry.values())
            print(f"{setting:55s} differences {n:4d}   largest share of a tolerance used {worst[0]:.3g} ({worst[1]})",
                  flush=True)
    print(f"\nper column, the largest share of its tolerance used over {len(settings)} settings on {cpu}:")
    cols: dict[str, float] = {}
    for entry in report["settings"].values():
        for e in entry.values():
            for c, v in e["tolerance_used"].items():
                cols[c] = max(cols.get(c, 0.0), v)
    for c, v in sorted(cols.items(), key=lambda kv: -kv[1]):
        print(f"  {c:45s} {v:9.3g}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
