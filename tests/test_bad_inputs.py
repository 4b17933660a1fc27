"""Every user error is one clear message: a table of bad inputs, each run through the command line.

Each case builds its input (a config value, an override, a YAML file, a trading CSV, a checkpoint, a run directory)
and runs ``rpbt ...`` in-process through :func:`rpbt.cli.main`. Each must end with exit status 2, exactly one
``rpbt: error`` line that names the culprit (the key, file or folder), no traceback, no new run directory, and no
change under an existing run directory (its whole tree is hashed before and after). A few cases also run as a real
subprocess, so the exit status and stderr are the ones a user sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

from rpbt.cli import main
from tests.conftest import TINY, tiny_config

REPO = Path(__file__).resolve().parents[1]
TRADING = str(REPO / "configs" / "trading_googl.yaml")


# ------------------------------------------------------------------------------------------------- helpers


def tree_hash(root: Path) -> dict[str, str]:
    """{relative path: sha256 of the content, or "<dir>"} of everything under ``root`` (hidden files too)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Evil:
    """Unpickling this runs a shell command: what a checkpoint must never be allowed to do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclass
class Ctx:
    """What a case may use: its own folder, the shared trained run (copy it before damaging it), data files."""

    tmp: Path
    base: Path
    data: Path
    foreign: Path  # a member checkpoint of another agent config
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def fresh(self) -> Path:
        """The run.dir a train case points at: it must not exist afterwards."""
        return self.tmp / "new_run"

    def copy(self) -> Path:
        run = self.tmp / "run"
        shutil.copytree(self.base, run)
        return run

    def latest(self, run: Path) -> Path:
        return run / "checkpoints" / json.loads((run / "checkpoints" / "runner.json").read_text())["checkpoint_dir"]


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], tuple[list[str], Optional[Path]]]  # -> (argv, run directory that must not change)
    culprit: tuple[str, ...]  # substrings the message must hold; "{run}" / "{tmp}" are filled in
    xfail: Optional[str] = None
    absent: tuple[str, ...] = ()  # substrings the message must not hold


def train(*items: str) -> Callable[[Ctx], tuple[list[str], None]]:
    return lambda c: (["train", *TINY, *[i.format(tmp=c.tmp, data=c.data) for i in items], f"run.dir={c.fresh}"],
                      None)


def trading(*items: str) -> Callable[[Ctx], tuple[list[str], None]]:
    return lambda c: (["train", TRADING, *TINY, *[i.format(tmp=c.tmp, data=c.data) for i in items],
                       f"run.dir={c.fresh}"], None)


def yaml_file(text: bytes, *items: str) -> Callable[[Ctx], tuple[list[str], None]]:
    def build(c: Ctx):
        path = c.tmp / "bad.yaml"
        path.write_bytes(text)
        return ["train", str(path), *TINY, *items, f"run.dir={c.fresh}"], None
    return build


def env_module(name: str, source: str) -> Callable[[Ctx], tuple[list[str], None]]:
    """``env.id: <name>:MyEnv-v0`` for a module ``name`` of ``source`` on ``sys.path`` (removed again after)."""
    def build(c: Ctx):
        folder = c.tmp / "modules"
        folder.mkdir()
        (folder / f"{name}.py").write_text(source)
        sys.path.insert(0, str(folder))
        c.cleanup.append(lambda: (sys.path.remove(str(folder)), sys.modules.pop(name, None)))
        return train(f"env.id={name}:MyEnv-v0")(c)
    return build


def member_file(write: Callable[[Path, Ctx], None], command: str = "evaluate"):
    """A run whose best member's checkpoint is replaced by ``write(path, ctx)`` in every kept round (the latest and
    the older ones evaluate and export fall back to), so none loads."""
    def build(c: Ctx):
        run = c.copy()
        paths = sorted(c.latest(run).parent.glob("round_*/member_0.pt"))
        assert c.latest(run) / "member_0.pt" in paths
        for path in paths:
            write(path, c)
        return [command, str(run), "--member", "0"], run
    return build


def run_dir_case(damage: Callable[[Path, Ctx], list[str]]):
    """A copy of the trained run, damaged; ``damage`` returns the argv."""
    def build(c: Ctx):
        run = c.copy()
        return damage(run, c), run
    return build


def _truncate(path: Path, c: Ctx) -> None:
    path.write_bytes(path.read_bytes()[:300])


def _locked(run: Path, c: Ctx) -> None:
    from rpbt.run.rundir import RunDirectory

    holder = RunDirectory(run, 4, tensorboard=False)
    holder.lock()
    c.cleanup.append(holder.close)


def _edit_runner_json(edit: Callable[[dict], object]):
    def damage(run: Path, c: Ctx) -> list[str]:
        path = run / "checkpoints" / "runner.json"
        state = json.loads(path.read_text())
        path.write_text(json.dumps(edit(state)))
        return ["resume", str(run)]
    return damage


def _half_made(run: Path, c: Ctx) -> list[str]:  # killed before its first commit
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").mkdir()
    (run / "summary.json").unlink()
    return ["resume", str(run)]


# ------------------------------------------------------------------------------------------------- the table

CASES = [
    # --- config values
    Case("population_size_1", train("pbt.population_size=1"), ("pbt.population_size",)),
    Case("single_value_categorical", train("pbt.search_space.gamma={{type: categorical, values: [0.99]}}"),
         ("gamma",)),
    Case("categorical_value_not_a_number",  # 1e-4 (a string to YAML 1.1) is a number; fast is not
         train("pbt.search_space.learning_rate={{type: categorical, values: [1e-4, fast]}}"),
         ("command line", "search space of learning_rate: 'fast' is not a number"), absent=("'1e-4'",)),
    Case("learning_rate_inf", train("agent.learning_rate=.inf"), ("agent.learning_rate",)),
    Case("override_named_as_command_line", train("agent.learning_rate=abc"),
         ("agent.learning_rate=abc", "command line")),
    Case("learning_rate_not_a_number", train("agent.learning_rate=abc"), ("agent.learning_rate", "'abc'")),
    Case("misspelled_key", train("agent.learnig_rate=1"), ("agent.learnig_rate", "unknown key")),
    Case("num_envs_0", train("env.num_envs=0"), ("env.num_envs",)),
    Case("num_envs_a_boolean", train("env.num_envs=true"), ("env.num_envs", "expected a number, not a boolean")),
    Case("encoder_size_a_boolean", train("agent.network.encoder_sizes=[64, true]"),
         ("agent.network.encoder_sizes", "expected a list of numbers; it holds a boolean")),
    Case("minibatches_do_not_divide_envs", train("agent.num_minibatches=3"), ("agent.num_minibatches",)),
    Case("unknown_hidden_state", train("pbt.hidden_state=sideways"), ("pbt.hidden_state", "sideways")),
    Case("total_env_steps_0", train("run.total_env_steps=0"), ("run.total_env_steps",)),
    Case("negative_seed", train("run.seed=-1"), ("run.seed=-1 (command line)", "greater than or equal to 0")),
    # configurations under which PBT could never act, and one that would exhaust memory
    Case("pb2_min_data_above_max_data", train("pbt.explore=pb2", "pbt.pb2.max_data=4", "pbt.pb2.min_data=10"),
         ("pbt.pb2.min_data (10) must be at most pbt.pb2.max_data (4)",)),
    Case("ttest_window_above_the_returns_kept", train("pbt.ttest=true", "pbt.ttest_window=200"),
         ("pbt.ttest_window=200", "only 100 returns a member keeps")),
    Case("ttest_window_above_the_trading_validation_returns", trading("pbt.ttest=true", "pbt.ttest_window=50"),
         ("pbt.ttest_window=50", "last 50 returns", "env.trading.eval_episodes validation returns")),
    Case("values_on_a_float_dimension",
         train("pbt.search_space={{learning_rate: {{low: 1e-4, high: 1e-3, scale: log, values: [1, 2]}}}}"),
         ("pbt.search_space.learning_rate", "'values' ([1, 2]) is for a categorical dimension")),
    Case("log_scale_on_a_categorical",
         train("pbt.search_space.gamma={{type: categorical, values: [0.9, 0.99], scale: log}}"),
         ("pbt.search_space.gamma.scale", "categorical")),
    Case("bounds_on_a_categorical",
         train("pbt.search_space.clip_range={{type: categorical, values: [0.1, 0.2], low: 0.1, high: 0.3}}"),
         ("pbt.search_space.clip_range.low", "pbt.search_space.clip_range.high", "categorical", "command line")),
    Case("dimension_type_changed_without_its_fields", train("pbt.search_space.learning_rate.type=categorical"),
         ("pbt.search_space.learning_rate.type=categorical (command line)", "at least two 'values'"),
         absent=("default.yaml", "scale")),
    Case("burn_in_history_beyond_memory", train("pbt.burn_in_max_steps=10000000000000"),
         ("pbt.burn_in_max_steps", "less than or equal to 100000")),
    Case("unknown_backend", train("backend.kind=cloud"), ("backend.kind", "cloud")),
    Case("section_is_a_number", train("agent=5"), ("agent",)),
    Case("unknown_env_id", train("env.id=NoSuchEnv-v0"), ("NoSuchEnv-v0",)),
    Case("env_id_module_not_found", train("env.id=rpbt_no_such_module:MyEnv-v0"),
         ("env.id 'rpbt_no_such_module:MyEnv-v0'", "module 'rpbt_no_such_module' is not found", "PYTHONPATH",
          "pip install")),
    Case("env_id_module_imports_a_missing_module", env_module("rpbt_env_with_a_missing_import",
                                                              "import rpbt_missing_dependency\n"),
         ("env.id 'rpbt_env_with_a_missing_import:MyEnv-v0'", "imports 'rpbt_missing_dependency', which is not "
          "installed"), absent=("PYTHONPATH",)),
    Case("env_id_of_two_colons", train("env.id=a:b:MyEnv-v0"), ("env.id 'a:b:MyEnv-v0'", "'module:EnvId'")),
    Case("env_id_without_module", train("env.id=:MyEnv-v0"), ("env.id ':MyEnv-v0'", "'module:EnvId'")),
    Case("env_entry_point_module_not_found", train("env.entry_point=rpbt_no_such_module:make_env"),
         ("env.entry_point 'rpbt_no_such_module:make_env'", "is not found", "PYTHONPATH")),
    Case("encoder_layer_of_zero_units", train("agent.network.encoder_sizes=[0]"), ("agent.network.encoder_sizes",)),
    Case("env_kwarg_the_env_does_not_take", train("env.id=MountainCar-v0", "env.kwargs.foo=1"),
         ("MountainCar-v0", "env.kwargs", "foo")),
    Case("bptt_length_does_not_divide_num_steps", train("agent.bptt_length=48"), ("agent.bptt_length",)),
    Case("split_of_two_fractions", trading("env.data.split=[0.5,0.5]"), ("env.data.split",)),
    Case("split_not_summing_to_1", trading("env.data.split=[0.7,0.2,0.2]"), ("env.data.split",)),
    # --- override syntax
    Case("override_empty_key", train("=1"), ("'=1'", "empty key")),
    Case("override_empty_segment", train("agent..learning_rate=1"), ("agent..learning_rate=1",)),
    Case("override_unclosed_list", train("agent.learning_rate=[1,"), ("agent.learning_rate",)),
    Case("override_value_with_a_comment", train("run.dir=runs/a #1"),  # YAML would read runs/a
         ("run.dir=runs/a #1", "command line", "comment", "run.dir='runs/a #1'")),
    Case("override_without_equals_sign", train("agent.learning_rate"), ("agent.learning_rate=VALUE",)),
    Case("two_config_files", lambda c: (["train", TRADING, TRADING, f"run.dir={c.fresh}"], None),
         ("unexpected argument",)),
    Case("unknown_option", train("--bogus"), ("--bogus",)),
    # --- YAML files
    Case("yaml_missing", lambda c: (["train", str(c.tmp / "nope.yaml"), f"run.dir={c.fresh}"], None),
         ("nope.yaml", "not found")),
    Case("yaml_invalid", yaml_file(b"agent: [1,\n"), ("bad.yaml", "not valid YAML")),
    Case("yaml_bad_indent_one_line", yaml_file(b"agent:\n learning_rate: 1\n  gamma: 2\n"),
         ("bad.yaml", "not valid YAML: mapping values are not allowed here at line 3, column 8"), absent=("\n  ",)),
    Case("yaml_section_twice", yaml_file(b"env:\n  num_envs: 4\nagent:\n  num_steps: 64\nenv:\n  id: CartPole-v1\n"),
         ("bad.yaml", "key 'env' is given twice", "line 1 and line 5")),
    Case("yaml_a_list", yaml_file(b"- env\n- agent\n"), ("bad.yaml", "expected a mapping")),
    Case("yaml_empty", yaml_file(b""), ("bad.yaml", "the file is empty", "give no file to run the default job")),
    Case("yaml_only_a_comment", yaml_file(b"# to do\n"), ("bad.yaml", "only comments", "give no file")),
    Case("yaml_only_null", yaml_file(b"~\n"), ("bad.yaml", "only null", "give no file")),
    Case("yaml_empty_mapping", yaml_file(b"{}\n"), ("bad.yaml: the file sets no key", "give no file")),
    Case("yaml_only_a_document_start", yaml_file(b"---\n"), ("bad.yaml: the file is empty;", "give no file"),
         absent=("comments",)),
    Case("yaml_false", yaml_file(b"false\n"), ("bad.yaml", "expected a mapping", "got bool")),
    Case("yaml_binary", yaml_file(b"\x00\xff\xfe\x81"), ("bad.yaml", "not a YAML text file")),
    Case("yaml_unknown_section", yaml_file(b"agnet:\n  learning_rate: 0.001\n"), ("agnet", "unknown key")),
    Case("yaml_wrong_type", yaml_file(b"agent:\n  ent_coef: lots\n"), ("bad.yaml", "agent.ent_coef", "lots")),
    Case("yaml_a_folder", lambda c: (["train", str(c.tmp), f"run.dir={c.fresh}"], None),
         ("{tmp}: a folder, not a config file",)),
    # --- trading CSVs
    Case("csv_without_volume_for_log_volume_change", trading("env.data.path={data}/no_volume.csv"),
         ("no_volume.csv", "volume", "log_volume_change")),
    Case("csv_of_5_rows", trading("env.data.path={data}/rows_5.csv"), ("rows_5.csv", "5 bars", "env.data.split")),
    Case("csv_of_150_rows", trading("env.data.path={data}/rows_150.csv"),
         ("rows_150.csv", "150 bars", "train part", "env.trading.episode_length")),
    Case("shipped_split_leaves_validation_short", trading("env.data.split=[0.9,0.05,0.05]"),
         ("googl", "env.data.split", "validation part gets 116 bars")),
    Case("csv_missing_close", trading("env.data.path={data}/no_close.csv"), ("no_close.csv", "close")),
    Case("csv_price_not_a_number", trading("env.data.path={data}/bad_price.csv"),
         ("bad_price.csv", "data row 3", "'Open'")),
    Case("csv_not_found", trading("env.data.path={data}/nope.csv"), ("nope.csv", "not found")),
    Case("csv_empty", trading("env.data.path={data}/empty.csv"), ("empty.csv", "empty")),
    Case("csv_dates_out_of_order", trading("env.data.path={data}/unsorted.csv"),
         ("unsorted.csv", "strictly increasing")),
    Case("trading_env_kwargs_unknown_key", trading("env.kwargs={{bogus: 1}}"),
         ("env.kwargs", "'bogus'", "does not take", "cost_bps")),
    Case("trading_env_kwargs_split", trading("env.kwargs={{split: test}}"), ("env.kwargs", "'split'")),
    Case("trading_env_kwargs_bad_value", trading("env.kwargs={{window: 0}}"),
         ("env.kwargs", "window must be >= 1")),
    Case("csv_semicolon_separated", trading("env.data.path={data}/semicolons.csv"),
         ("semicolons.csv", "missing required column", "seems to use ';' as its separator")),
    Case("csv_high_below_low", trading("env.data.path={data}/high_below_low.csv"),
         ("high_below_low.csv", "data row 4", "'High'", "below the row's low")),
    Case("csv_day_month_ambiguous", trading("env.data.path={data}/monthly_ddmm.csv"),
         ("monthly_ddmm.csv", "column 'Date'", "ambiguous", "env.data.date_format")),
    Case("date_format_for_shipped_data", trading("env.data.date_format=%d/%m/%Y"),
         ("env.data.date_format", "CSV")),
    # --- checkpoints (rpbt evaluate reads the member's file of the latest committed round)
    Case("checkpoint_pickled_code", member_file(lambda p, c: p.write_bytes(pickle.dumps(Evil(c.tmp / "pwned")))),
         ("member_0.pt", "pickled Python objects", "never code"), absent=("weights_only",)),
    Case("checkpoint_torch_saved_object", member_file(lambda p, c: torch.save({"x": Evil(c.tmp / "pwned")}, p)),
         ("member_0.pt", "refers to Python code (posix.system)", "never code"), absent=("weights_only",)),
    Case("checkpoint_truncated", member_file(_truncate), ("member_0.pt", "truncated")),
    Case("checkpoint_random_bytes", member_file(lambda p, c: p.write_bytes(os.urandom(512))),
         ("member_0.pt", "cannot read member state"), absent=("weights_only",)),
    Case("checkpoint_empty", member_file(lambda p, c: p.write_bytes(b"")), ("member_0.pt", "empty")),
    Case("checkpoint_foreign_tensors", member_file(lambda p, c: torch.save({"weight": torch.zeros(3)}, p)),
         ("member_0.pt", "not an rpbt member-state checkpoint")),
    Case("checkpoint_future_version",
         member_file(lambda p, c: torch.save({**torch.load(p, weights_only=True), "version": 99}, p)),
         ("member_0.pt", "version 99")),
    Case("checkpoint_of_another_config", member_file(lambda p, c: shutil.copy(c.foreign, p)),
         ("member_0.pt", "another config", "config.yaml")),
    Case("checkpoint_missing", member_file(lambda p, c: p.unlink()), ("member_0.pt", "not found")),
    Case("resume_with_every_kept_round_truncated",
         run_dir_case(lambda run, c: [_truncate(f / "member_1.pt", c) for f in (run / "checkpoints").glob("round_*")]
                      and ["resume", str(run)]),
         ("none of the kept rounds", "round_000003/member_1.pt", "round_000002/member_1.pt")),
    Case("resume_with_another_configs_checkpoints",
         run_dir_case(lambda run, c: [shutil.copy(c.foreign, f / "member_2.pt")
                                      for f in (run / "checkpoints").glob("round_*")] and ["resume", str(run)]),
         ("member_2.pt", "another config")),
    # --- run directories
    Case("evaluate_missing_run_dir", lambda c: (["evaluate", str(c.tmp / "nope")], None),
         ("no rpbt run directory at {tmp}/nope",)),
    Case("resume_missing_run_dir", lambda c: (["resume", str(c.tmp / "nope")], None),
         ("no rpbt run directory at {tmp}/nope",)),
    Case("report_missing_run_dir", lambda c: (["report", str(c.tmp / "nope")], None),
         ("no rpbt run directory at {tmp}/nope",)),
    Case("evaluate_a_file", run_dir_case(lambda run, c: ["evaluate", str(run / "summary.json")]),
         ("no rpbt run directory at", "summary.json", "a file")),
    Case("resume_a_folder_without_config", run_dir_case(lambda run, c: ["resume", str(run / "members")]),
         ("no rpbt run directory at", "members", "config.yaml")),
    Case("resume_locked", run_dir_case(lambda run, c: _locked(run, c) or ["resume", str(run)]),
         ("another rpbt process",)),
    Case("overwrite_locked", run_dir_case(lambda run, c: _locked(run, c) or
                                          ["train", *TINY, f"run.dir={run}", "--overwrite"]),
         ("another rpbt process",)),
    Case("overwrite_a_folder_that_is_not_a_run",
         run_dir_case(lambda run, c: ["train", *TINY, f"run.dir={run / 'members'}", "--overwrite"]),
         ("refusing to overwrite", "members")),
    Case("resume_half_made", run_dir_case(_half_made), ("runner.json", "no completed round")),
    Case("evaluate_half_made", run_dir_case(lambda run, c: _half_made(run, c) and ["evaluate", str(run)]),
         ("summary.json", "--member")),
    Case("train_run_dir_under_a_file", lambda c: ((c.tmp / "a_file").write_text("x") and None) or
         (["train", *TINY, f"run.dir={c.tmp / 'a_file' / 'sub'}"], None), ("{tmp}/a_file/sub", "Not a directory")),
    Case("report_where_a_file_named_report_stands",
         run_dir_case(lambda run, c: (run / "report").write_text("mine") and ["report", str(run)]),
         ("/run/report", "File exists")),
    Case("export_missing_run_dir", lambda c: (["export", str(c.tmp / "nope"), "--format", "onnx", "-o",
                                               str(c.tmp / "x.onnx")], None), ("no rpbt run directory at {tmp}/nope",)),
    Case("replay_missing_run_dir", lambda c: (["replay", str(c.tmp / "nope")], None),
         ("no rpbt run directory at {tmp}/nope",)),
    Case("replay_population_size_override",
         run_dir_case(lambda run, c: ["replay", str(run), "--out", str(c.fresh), "pbt.population_size=5"]),
         ("pbt.population_size cannot be overridden in a replay",)),
    Case("evaluate_attack_options_without_attack",
         run_dir_case(lambda run, c: ["evaluate", str(run), "--norm", "l2", "--attack-steps", "5"]),
         ("--attack and --epsilon go together", "--norm, --attack-steps")),
    Case("evaluate_summary_json_a_list",
         run_dir_case(lambda run, c: (run / "summary.json").write_text("[]") and ["evaluate", str(run)]),
         ("summary.json", "expected a JSON object, got list")),
    Case("evaluate_summary_json_best_member_not_an_id",
         run_dir_case(lambda run, c: (run / "summary.json").write_text('{"best_member": "x"}') and ["evaluate",
                                                                                                  str(run)]),
         ("summary.json", "best_member", "'x'", "integer")),
    Case("evaluate_without_runner_json",
         run_dir_case(lambda run, c: (run / "checkpoints" / "runner.json").unlink()
                      or ["evaluate", str(run), "--member", "1"]),
         ("runner.json", "no completed round to load member 1 from"), absent=("resume",)),
    Case("resume_runner_json_not_json",
         run_dir_case(lambda run, c: (run / "checkpoints" / "runner.json").write_text('{"round": 3,')
                      and ["resume", str(run)]), ("runner.json", "not valid JSON")),
    Case("resume_runner_json_escaping_folder",
         run_dir_case(_edit_runner_json(lambda s: {**s, "checkpoint_dir": "../../elsewhere"})),
         ("runner.json", "checkpoint_dir", "../../elsewhere")),
    Case("resume_runner_json_bad_round", run_dir_case(_edit_runner_json(lambda s: {**s, "round": "three"})),
         ("runner.json", "round", "three")),
    Case("resume_corrupt_config_yaml",
         run_dir_case(lambda run, c: (run / "config.yaml").write_text("agent: [") and ["resume", str(run)]),
         ("config.yaml", "not valid YAML")),
    Case("evaluate_member_out_of_range", run_dir_case(lambda run, c: ["evaluate", str(run), "--member", "99"]),
         ("member 99", "0..3")),
    Case("evaluate_zero_episodes",
         run_dir_case(lambda run, c: ["evaluate", str(run), "--member", "0", "--episodes", "0"]), ("--episodes",)),
]


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """One trained tiny run (3 rounds, 2 kept), a checkpoint of another agent config, and trading CSVs."""
    from rpbt.envs.market_data import _shipped_dir
    from rpbt.pbt.backends.local import LocalBackend

    root = tmp_path_factory.mktemp("bad_inputs")
    base = root / "base"
    assert main(["train", *TINY, "run.torch_threads=1", f"run.dir={base}"]) == 0
    foreign = root / "foreign.pt"
    backend = LocalBackend(tiny_config("agent.network.lstm_hidden_size=8"), [{}] * 4)
    backend.snapshot(0).save(foreign)
    backend.close()

    data = root / "data"
    data.mkdir()
    lines = (_shipped_dir() / "STOCKS_GOOGL.csv").read_text().splitlines()  # Date,Open,High,Low,Close,Adj Close,Volume
    head, rows = lines[0], lines[1:]
    (data / "no_volume.csv").write_text("\n".join(",".join(x.split(",")[:5]) for x in [head, *rows[:1000]]) + "\n")
    (data / "rows_5.csv").write_text("\n".join([head, *rows[:5]]) + "\n")
    (data / "rows_150.csv").write_text("\n".join([head, *rows[:150]]) + "\n")
    (data / "no_close.csv").write_text("\n".join(",".join(x.split(",")[:4]) for x in [head, *rows[:1000]]) + "\n")
    bad = [head, *rows[:1000]]
    bad[3] = bad[3].split(",", 2)[0] + ",n/a," + bad[3].split(",", 2)[2]
    (data / "bad_price.csv").write_text("\n".join(bad) + "\n")
    (data / "empty.csv").write_text("")
    monthly = [f"01/{m:02d}/{y}" for y in range(2000, 2100) for m in range(1, 13)]  # dd/mm/yyyy, 1200 months
    (data / "monthly_ddmm.csv").write_text("Date,Open,High,Low,Close\n" + "".join(f"{d},1,1,1,1\n" for d in monthly))
    (data / "semicolons.csv").write_text("\n".join(x.replace(",", ";") for x in [head, *rows[:1000]]) + "\n")
    swapped = [head, *rows[:1000]]
    f = swapped[4].split(",")  # data row 4: Date,Open,High,Low,... with High and Low swapped
    swapped[4] = ",".join([f[0], f[1], f[3], f[2], *f[4:]])
    (data / "high_below_low.csv").write_text("\n".join(swapped) + "\n")
    (data / "unsorted.csv").write_text("\n".join([head, *rows[:500], rows[10], *rows[500:1000]]) + "\n")
    return {"base": base, "data": data, "foreign": foreign}


def _run_main(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        rc = exit_.code if isinstance(exit_.code, int) else 1
    return rc, capsys.readouterr().err


def test_the_table_is_at_least_30_cases_with_unique_ids():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert len([c for c in CASES if c.xfail is None]) >= 30


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=False, reason=c.xfail)]
                                               if c.xfail else []) for c in CASES])
def test_bad_input_is_one_clear_message(case: Case, shared, tmp_path, capsys):
    ctx = Ctx(tmp=tmp_path, base=shared["base"], data=shared["data"], foreign=shared["foreign"])
    base_before = tree_hash(shared["base"])
    try:
        argv, watched = case.build(ctx)
        before = tree_hash(watched) if watched is not None else None
        rc, err = _run_main(argv, capsys)
    finally:
        for undo in ctx.cleanup:
            undo()
    assert rc == 2, f"exit status {rc}; stderr: {err}"
    assert "Traceback" not in err, err
    assert err.count("rpbt: error") == 1, err
    for part in case.culprit:
        part = part.format(tmp=tmp_path)
        assert part in err, f"{part!r} not in the message: {err}"
    for part in case.absent:
        assert part not in err, err
    assert not ctx.fresh.exists(), "a run directory was created"
    if watched is not None:
        assert tree_hash(watched) == before, "the existing run directory changed"
    assert tree_hash(shared["base"]) == base_before
    assert not (tmp_path / "pwned").exists(), "a checkpoint ran code"


SUBPROCESS_CASES = ["csv_of_150_rows", "checkpoint_pickled_code", "evaluate_missing_run_dir",
                    "env_id_module_not_found"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process(case_id, shared, tmp_path):
    """The same promise where a user sees it: the process's exit status and its whole stderr."""
    case = next(c for c in CASES if c.id == case_id)
    ctx = Ctx(tmp=tmp_path, base=shared["base"], data=shared["data"], foreign=shared["foreign"])
    argv, watched = case.build(ctx)
    before = tree_hash(watched) if watched is not None else None
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "rpbt.cli", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("rpbt: error") == 1, done.stderr
    assert done.stderr.strip().startswith("rpbt: error"), done.stderr
    assert done.stdout == "", done.stdout
    assert not ctx.fresh.exists()
    if watched is not None:
        assert tree_hash(watched) == before
    assert not (tmp_path / "pwned").exists()


def test_the_rpbt_command_finds_an_env_module_on_pythonpath_not_in_the_current_directory(tmp_path):
    """What the not-found message says: the ``rpbt`` console script (Python runs a file in the environment's bin/,
    so that folder, not the current directory, is first on sys.path) does not import ``mymodule.py`` from the
    directory it runs in, and does with ``PYTHONPATH=.``."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_rpbt_env.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('MyEnv-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv', max_episode_steps=20)\n")
    script = tmp_path / "bin" / "rpbt"  # what pip writes for [project.scripts] rpbt = "rpbt.cli:main"
    script.parent.mkdir()
    script.write_text("import sys\nfrom rpbt.cli import main\nsys.exit(main())\n")
    argv = [sys.executable, str(script), "train", *TINY, "run.torch_threads=1", "pbt.population_size=2",
            "run.total_env_steps=64", "env.id=my_rpbt_env:MyEnv-v0", f"run.dir={tmp_path / 'run'}"]
    src = str(REPO / "src")
    done = subprocess.run(argv, cwd=project, env={**os.environ, "PYTHONPATH": src}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("rpbt: error") and "Traceback" not in done.stderr, \
        done.stderr
    assert "env.id 'my_rpbt_env:MyEnv-v0'" in done.stderr and "PYTHONPATH=." in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()
    done = subprocess.run(argv, cwd=project, env={**os.environ, "PYTHONPATH": src + os.pathsep + "."},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
