"""Command line: ``rpbt train | resume | replay | config | configs | report | evaluate | export | spike-study``, a thin
layer over the Python API (:mod:`rpbt.api`: ``train``, ``resume``, ``evaluate``, ``export``).

``rpbt train [CONFIG] [key.sub=value ...]`` runs the shipped default when no CONFIG is given; CONFIG is a YAML file
or, when no such file exists, the name of a shipped config (``rpbt configs`` lists them); overrides use dotted
keys as Hydra / OmegaConf users expect, and options such as ``--overwrite`` may stand anywhere on the line. Errors
in the command line, configs, run directories, checkpoints, data files, environments and missing optional extras
are printed as one clear message (exit status 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import yaml

if TYPE_CHECKING:
    from rpbt.config import Config


class UsageError(ValueError):
    """The command line itself is wrong (an extra argument); printed as one line, exit status 2."""


def _split_config_and_overrides(items: Sequence[str]) -> tuple[Optional[str], list[str]]:
    config, overrides = None, []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif config is None:
            config = item
        else:
            raise UsageError(f"unexpected argument {item!r} after the config file {config!r} (one CONFIG at most; "
                             "overrides look like key.sub=value)")
    if (config is not None and not Path(config).exists() and not config.endswith((".yaml", ".yml"))
            and re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+", config)):
        raise UsageError(f"{config!r} is neither a config file nor an override: an override needs a value, "
                         f"{config}=VALUE")
    return config, overrides


def _score(x: object) -> str:
    """A score as printed in summaries: three decimals (``0.9999999776482582`` -> ``1.000``), n/a for none."""
    return "n/a" if x is None else f"{float(x):.3f}"


def cmd_config(args: argparse.Namespace) -> int:
    from rpbt.config import load_config

    path, overrides = _split_config_and_overrides(args.items)
    cfg = load_config(path, overrides)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    """``rpbt configs``: the shipped configs, by name, with the environment each trains."""
    from rpbt.config import load_yaml, shipped_configs

    shipped = shipped_configs()
    width = max(map(len, shipped))
    for name, path in shipped.items():
        data = load_yaml(path.read_text())
        env = data.get("env") if isinstance(data, dict) else None
        env_id = env.get("id") if isinstance(env, dict) else None
        print(f"{name:<{width}}  {env_id or ''}".rstrip())
    print("rpbt train NAME [key.sub=value ...] trains one; rpbt config NAME prints it with every default filled in")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from rpbt.api import train
    from rpbt.config import load_config

    path, overrides = _split_config_and_overrides(args.items)
    run = train(load_config(path, overrides), overwrite=args.overwrite, announce=True,
                init_from=getattr(args, "init_from", None))
    _print_summary(run.dir, run.summary, run.config)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from rpbt.api import resume

    extra = [x for x in args.overrides if "=" not in x]
    if extra:
        raise UsageError(f"unexpected argument {extra[0]!r} after the run directory {args.run_dir!r} (overrides look "
                         "like run.total_env_steps=N)")
    run = resume(Path(args.run_dir), announce=True, overrides=list(args.overrides))
    _print_summary(run.dir, run.summary, run.config)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """``rpbt replay RUN_DIR [--member ID] [--seeds K] [--out DIR]``: see :mod:`rpbt.pbt.replay`."""
    from rpbt.pbt.replay import replay_run

    overrides = ["run.progress=false"] + list(args.overrides)
    out, summary = replay_run(Path(args.run_dir), None if args.out is None else Path(args.out), member=args.member,
                              seeds=args.seeds, overrides=overrides, overwrite=args.overwrite)
    info = summary["replay"]
    print(f"rpbt: replayed member {info['member']} of {args.run_dir} into {out}")
    print(f"final score: replay {info['mean_score']} (mean over {len(summary['scores'])} seed(s): "
          f"{summary['scores']}), original member {info['original_score']}")
    print(f"rpbt report {out}  draws the replay beside the original member")
    return 0


def _print_summary(run_dir: Path, summary: dict, cfg: Config) -> None:
    """The end of a run: every member's score, and the best member's hyperparameters in force (the SA-PPO ones only
    when ``agent.adversarial.enabled``; ``summary.json`` keeps them all)."""
    from rich.table import Table

    from rpbt.config import hparams_in_force
    from rpbt.run.output import console as make_console

    console = make_console()
    table = Table(title=f"rpbt run {run_dir}")
    table.add_column("member")
    table.add_column("score", justify="right")
    for m, s in enumerate(summary["scores"]):
        mark = " (best)" if m == summary["best_member"] else ""
        table.add_row(f"{m}{mark}", _score(s))
    console.print(table)
    hparams = {k: float(f"{v:.4g}") if isinstance(v, float) else v
               for k, v in hparams_in_force(cfg, summary["hparams"] or {}).items()}
    console.print(f"best member {summary['best_member']}  score {_score(summary['best_score'])}  "
                  f"hyperparameters {json.dumps(hparams)}")
    if summary.get("evaluation"):
        cost = summary["evaluation"]
        console.print(f"evaluation score: {cost['episodes']} held-out episodes, {cost['env_steps']:,} env steps, "
                      f"{cost['seconds']:.1f} s")
    if summary.get("stopped"):
        from rpbt.pbt.runner import resume_command

        command = resume_command(run_dir, cfg, summary["stopped"])
        console.print(f"stopped: {summary['stopped']}; continue with `{command}`")


def cmd_report(args: argparse.Namespace) -> int:
    from rpbt.report import write_report
    from rpbt.run.paths import require_run_dir

    require_run_dir(Path(args.run_dir))
    out = write_report(Path(args.run_dir), x=args.x, smooth_rounds=args.smooth)
    print(f"rpbt: report written to {out}")
    return 0


def cmd_spike_study(args: argparse.Namespace) -> int:
    """``rpbt spike-study [CONFIG] [key=value ...]``: see :mod:`rpbt.studies.spike`."""
    from rpbt.studies.spike import TABLE_NAME, load_study_config, run_study

    path, overrides = _split_config_and_overrides(args.items)
    cfg, settings = load_study_config(path, overrides)
    command = " ".join(["rpbt", "spike-study", *args.items])
    run_study(cfg, settings, command=command)
    out = Path(settings.out_dir)
    print((out / TABLE_NAME).read_text(), end="")
    print(f"rpbt: spike study written to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rpbt.evaluation.run import evaluate_run
    from rpbt.run.rundir import require_run_dir

    require_run_dir(Path(args.run_dir))
    attack_options = ("attack", "epsilon", "norm", "attack_steps")
    if any(getattr(args, name, None) is not None for name in attack_options):
        if getattr(args, "video", None) is not None:
            print("rpbt: error: --video records clean episodes; it does not go with --attack", file=sys.stderr)
            return 2
        return _cmd_evaluate_attack(args)
    try:
        report, json_path, png_path = evaluate_run(Path(args.run_dir), member=args.member, split=args.split,
                                                   episodes=args.episodes, video_dir=getattr(args, "video", None))
    except ValueError as err:  # bad arguments for this run, and config / checkpoint / data errors (ValueErrors)
        print(f"rpbt: error: {err}", file=sys.stderr)
        return 2
    _print_evaluation(report)
    print(f"rpbt: evaluation written to {json_path}" + (f" and {png_path}" if png_path else ""))
    if report.get("videos") is not None:
        print(f"rpbt: {len(report['videos'])} episode video(s) written to {args.video}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``rpbt export RUN_DIR [--member ID] --format onnx|torchscript -o FILE``: see :mod:`rpbt.actor_export`."""
    from rpbt.actor_export import input_names, output_names
    from rpbt.api import load_policy

    policy = load_policy(Path(args.run_dir), "best" if args.member is None else args.member)
    try:
        path = policy.export(args.output, args.format)
    except (ValueError, OSError) as err:  # a folder or an unwritable path given as -o
        print(f"rpbt: error: {err}", file=sys.stderr)
        return 2
    print(f"rpbt: member {policy.member}'s actor written to {path} ({args.format}); inputs "
          f"{', '.join(input_names(policy))}; outputs {', '.join(output_names(policy))}")
    return 0


def _cmd_evaluate_attack(args: argparse.Namespace) -> int:
    """``rpbt evaluate RUN_DIR --attack pgd|fgsm --epsilon E``: clean and attacked returns (SA-PPO robustness)."""
    from rpbt.evaluation.attacks import evaluate_run_robustness

    if args.attack is None or args.epsilon is None:
        given = [f"--{n.replace('_', '-')}" for n in ("norm", "attack_steps") if getattr(args, n) is not None]
        print("rpbt: error: --attack and --epsilon go together" + (f" (and {', '.join(given)} needs them)"
                                                                   if given else ""), file=sys.stderr)
        return 2
    try:
        report, path = evaluate_run_robustness(Path(args.run_dir), args.attack, args.epsilon, member=args.member,
                                               split=args.split, episodes=args.episodes,
                                               norm=args.norm or "linf",
                                               steps=10 if args.attack_steps is None else args.attack_steps)
    except ValueError as err:
        print(f"rpbt: error: {err}", file=sys.stderr)
        return 2
    c, a = report["clean"], report["attacked"]
    print(f"member {report['member']}: clean mean return {c['mean_return']:.4f} (std {c['std_return']:.4f}), "
          f"{report['attack']} {report['norm']} eps {report['epsilon']:g}: {a['mean_return']:.4f} "
          f"(std {a['std_return']:.4f}) over {report['episodes']} episodes")
    print(f"rpbt: evaluation written to {path}")
    return 0


def _print_evaluation(report: dict) -> None:
    from rich.table import Table

    from rpbt.run.output import console as make_console

    console = make_console()
    if "policy" not in report:
        console.print(f"member {report['member']}: mean return {report['mean_return']:.4f} "
                      f"(std {report['std_return']:.4f}) over {report['episodes']} deterministic episodes")
        return

    def fmt(x: object, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    table = Table(title=f"member {report['member']}, {report['split']} split: {report['start_date'][:10]} to "
                        f"{report['end_date'][:10]} ({report['policy']['bars']} bars, cost {report['cost_bps']:g} bp)")
    for col in ["", "total log return", "Sharpe (ann.)", "max drawdown", "turnover"]:
        table.add_column(col, justify="right" if col else "left")
    for key, label in [("policy", "policy"), ("buy_and_hold", "buy and hold"), ("flat", "flat")]:
        m = report[key]
        table.add_row(label, fmt(m["total_log_return"], "+.4f"), fmt(m["sharpe"], ".3f"),
                      fmt(m["max_drawdown"], ".2%"), fmt(m["turnover"], ".1f"))
    console.print(table)


def _version() -> str:
    """The installed distribution's version (the package's ``__version__`` when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rpbt")
    except PackageNotFoundError:
        from rpbt import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``rpbt`` command line: the global options, then one subcommand per ``_add_<command>``, in help order."""
    parser = argparse.ArgumentParser(prog="rpbt", description="Population-Based Training for recurrent PPO agents")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--version", action="version", version=f"rpbt {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_resume(sub)
    _add_replay(sub)
    _add_config(sub)
    _add_configs(sub)
    _add_report(sub)
    _add_evaluate(sub)
    _add_export(sub)
    _add_spike_study(sub)
    return parser


def _add_train(sub: argparse._SubParsersAction) -> None:
    """The ``rpbt train`` subcommand and its arguments."""
    p = sub.add_parser("train", help="train a population (default config when CONFIG is omitted; CONFIG is a YAML "
                                     "file or the name of a shipped config, see rpbt configs)")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key.sub=value ...]")
    p.add_argument("--overwrite", action="store_true",
                   help="replace run.dir (only an rpbt run directory no process is using) instead of numbering "
                        "a new one")
    p.add_argument("--init-from", metavar="RUN[:MEMBER]", default=None,
                   help="start every member from a trained member's weights and normalizers (default member: the "
                        "run's best); hyperparameters are drawn as usual, the optimizer starts afresh")
    p.set_defaults(func=cmd_train)


def _member_arg(text: str) -> Optional[int]:
    """``--member``: a member id, or ``best`` (None: summary.json's best member, as --init-from RUN:best)."""
    if text == "best":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a member id (an integer) or 'best', got {text!r}") from None


def _add_resume(sub: argparse._SubParsersAction) -> None:
    """The ``rpbt resume`` subcommand and its arguments."""
    p = sub.add_parser("resume", help="continue an interrupted, stopped or finished run from its last completed round")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="budget changes only: run.total_env_steps=N extends the run, run.stop_at_score=X|null sets "
                        "or lifts the early stop (run.progress too); any other key is refused")
    p.set_defaults(func=cmd_resume)


def _add_replay(sub: argparse._SubParsersAction) -> None:
    """The ``rpbt replay`` subcommand and its arguments."""
    p = sub.add_parser(
        "replay", help="train fresh members along the hyperparameter schedule of a member's lineage",
        description=(
            "Train from scratch along the hyperparameter schedule PBT found for one member: the hyperparameters\n"
            "in force in each round of its lineage (the ancestors its weights were copied from), with the source\n"
            "run's environment, agent and budget, no exploit. Written as a run directory whose report draws the\n"
            "replay beside the original member. See rpbt.pbt.replay."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="the PBT run directory to replay (its committed rounds)")
    p.add_argument("--member", type=_member_arg, default=None,
                   help="member id or 'best' (default: summary.json's best_member)")
    p.add_argument("--seeds", type=int, default=1,
                   help="independent replay members, trained side by side (default 1; member 0 starts from the "
                        "lineage's initial weights)")
    p.add_argument("--out", default=None, help="replay run directory (default: RUN_DIR_replay_m<ID>, numbered)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is an idle rpbt run directory")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides (e.g. agent.device=cpu); keep env, agent and budget for a faithful replay")
    p.set_defaults(func=cmd_replay)


def _add_config(sub: argparse._SubParsersAction) -> None:
    """The ``rpbt config`` subcommand and its arguments."""
    p = sub.add_parser("config", help="print the resolved config with every default filled in")
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key.sub=value ...]")
    p.set_defaults(func=cmd_config)


def _add_configs(sub: argparse._SubParsersAction) -> None:
    """The ``rpbt configs`` subcommand."""
    p = sub.add_parser("configs", help="list the configs shipped with rpbt (rpbt train NAME runs one)")
    p.set_defaults(func=cmd_configs)


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (anything else is a usage error naming the option, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of rounds >= 1, got {text!r}")
    return value


def _add_report(sub: argparse._SubParsersAction) -> None:
    """The ``rpbt report`` subcommand and its arguments."""
    p = sub.add_parser("report", help="draw a run's history into RUN_DIR/report/")
    p.add_argument("run_dir")
    p.add_argument("--x", choices=("steps", "rounds", "time"), default="steps",
                   help="x-axis of the scores, population and training curves: env steps per member (default), "
                        "round, or the run's clock in seconds")
    p.add_argument("--smooth", type=_positive_int, default=1, metavar="K",
                   help="draw the trailing mean over K rounds over the raw scores and training curves (default 1: "
                        "none)")
    p.set_defaults(func=cmd_report)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    """The ``rpbt evaluate`` subcommand and its arguments."""
    p = sub.add_parser("evaluate", help="run a member's policy deterministically and write RUN_DIR/evaluation/")
    p.add_argument("run_dir")
    p.add_argument("--member", type=_member_arg, default=None,
                   help="member id or 'best' (default: summary.json's best_member)")
    p.add_argument("--split", choices=["test", "validation", "train"], default="test",
                   help="trading: the walk-forward split, evaluated as one episode over all of it (default test)")
    p.add_argument("--episodes", type=int, default=None,
                   help="non-trading envs: number of deterministic episodes (default 10)")
    p.add_argument("--attack", choices=["pgd", "fgsm"], default=None,
                   help="also evaluate under an observation attack (SA-PPO, Zhang et al. 2020); needs --epsilon")
    p.add_argument("--epsilon", type=float, default=None, help="attack radius in normalized observation units")
    p.add_argument("--norm", choices=["linf", "l2"], default=None, help="attack ball (default linf; with --attack)")
    p.add_argument("--attack-steps", type=int, default=None, help="PGD steps (default 10; with --attack)")
    p.add_argument("--video", metavar="DIR", default=None,
                   help="also record every episode as an MP4 in DIR (environments that render rgb_array frames; "
                        "needs pip install 'rpbt[video]')")
    p.set_defaults(func=cmd_evaluate)


def _add_export(sub: argparse._SubParsersAction) -> None:
    """The ``rpbt export`` subcommand and its arguments."""
    p = sub.add_parser("export", help="write a member's actor as ONNX or TorchScript (raw observation and (h, c) "
                                      "in, the action distribution's parameters and the new (h, c) out)")
    p.add_argument("run_dir")
    p.add_argument("--member", type=_member_arg, default=None,
                   help="member id or 'best' (default: summary.json's best_member)")
    p.add_argument("--format", choices=["onnx", "torchscript"], required=True,
                   help="onnx (needs pip install 'rpbt[export]') or torchscript (torch.jit.load)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    p.set_defaults(func=cmd_export)


def _add_spike_study(sub: argparse._SubParsersAction) -> None:
    """The ``rpbt spike-study`` subcommand and its arguments."""
    p = sub.add_parser(
        "spike-study", help="measure the value-loss spike of each hidden-state strategy at exploits",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Measure what each hidden-state strategy (keep, zero, reset_episodes, burn_in; see pbt.hidden_state)\n"
            "does to the value loss right after an exploit. Each seed trains a population with the real round\n"
            "loop on the local backend (backend.kind is ignored). At every exploit the recipient is cloned once\n"
            "per strategy; each clone gets the same transfer (donor weights, new hyperparameters) with its\n"
            "strategy and trains updates_after more PPO updates, and its train/value_loss is compared with the\n"
            "donor's last value loss and with the burn_in clone's. Results are averaged per seed, then over seeds\n"
            "(geometric means, 95% Student-t intervals); the real run itself uses pbt.hidden_state unchanged.\n"
            "\n"
            "CONFIG is a run config (the shipped default when omitted) with an optional spike_study section\n"
            "(defaults in parentheses):\n"
            "  seeds                  independent population runs, run seeds run.seed .. run.seed+seeds-1 (5)\n"
            "  updates_after          PPO updates each clone trains after the exploit, K (5)\n"
            "  max_exploits_per_seed  stop a seed's run after this many studied exploits (null: train to\n"
            "                         run.total_env_steps)\n"
            "  strategies             strategies to clone, no repeats (all four)\n"
            "  control                also continue a clone of the donor without a transfer (true)\n"
            "  out_dir                results folder (runs/spike_study)\n"
            "key.sub=value overrides reach both the run config and the spike_study section.\n"
            "\n"
            "example:\n"
            "  rpbt spike-study configs/spike_study.yaml spike_study.seeds=2\n"
            "\n"
            "outputs, in spike_study.out_dir (relative to the working directory):\n"
            "  spike_study.md     tables (also printed when the study ends)\n"
            "  spike_study.json   settings, resolved config, command, every exploit record, summary\n"
            "  spike_study.png    value loss relative to the donor's against updates after the exploit\n"
            "  runs/seed_<s>/     run directory of seed s, replaced on every study (run.dir is not used)"))
    p.add_argument("items", nargs="*", metavar="[CONFIG] [key.sub=value ...]")
    p.set_defaults(func=cmd_spike_study)


def _interrupted_message(args: argparse.Namespace, err: KeyboardInterrupt) -> str:
    """What Ctrl-C during a command leaves behind, and what to do next: only a training run is resumed."""
    from rpbt.api import Interrupted

    if args.command == "replay":
        return ("interrupted; the replay is incomplete and cannot be resumed: run the same `rpbt replay` again "
                "with --overwrite")
    if args.command not in ("train", "resume"):
        return f"interrupted; `rpbt {args.command}` did not finish"
    if isinstance(err, Interrupted) and not err.started:
        return f"interrupted before the run started: nothing was written to {err.run_dir}"
    if isinstance(err, Interrupted) and err.committed_rounds == 0:
        return (f"interrupted before the first round was committed: nothing to resume in {err.run_dir}; train "
                f"again (add --overwrite to reuse the directory)")
    where = err.run_dir if isinstance(err, Interrupted) else getattr(args, "run_dir", None)
    return f"interrupted; continue with `rpbt resume {where or 'RUN_DIR'}`"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``rpbt`` command. Returns the exit status: 0, 2 for a known error (one line on stderr, no traceback),
    130 when interrupted (Ctrl-C), also while the modules are still loading."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the command started (parsing, imports): nothing was written
        print("rpbt: interrupted before the command started; nothing was written", file=sys.stderr)
        return 130


#: The errors printed as one line with exit status 2, as (defining module, class name). They are looked up when an
#: error reaches the command line, among the modules already imported (a class is imported before it is raised),
#: so that a command imports only what it uses: `rpbt report` loads no torch.
KNOWN_ERRORS = (
    ("rpbt.cli", "UsageError"),
    ("rpbt.config.schema", "ConfigError"),
    ("rpbt.checkpoint", "CheckpointError"),
    ("rpbt.run.paths", "RunDirError"),
    ("rpbt.extras", "MissingExtraError"),
    ("rpbt.envs.errors", "EnvError"),
    ("rpbt.envs.market_data", "MarketDataError"),
    ("rpbt.pbt.faults", "MemberFaultError"),
    ("rpbt.pbt.backends.errors", "BackendError"),
    ("rpbt.report.reader", "ReportError"),
    ("rpbt.pbt.replay", "ReplayError"),
)


def is_known_error(err: BaseException) -> bool:
    """Whether ``err`` is one of :data:`KNOWN_ERRORS` (or a subclass)."""
    for module, name in KNOWN_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return True
    return False


def _main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Options may stand anywhere: `rpbt train a=1 --overwrite b=2` leaves b=2 unparsed; it belongs to the items
    # (to the overrides of `rpbt replay RUN --out DIR a=1`).
    rest = "items" if hasattr(args, "items") else "overrides" if hasattr(args, "overrides") else None
    if extra and rest is not None and not any(x.startswith("-") for x in extra):
        setattr(args, rest, [*getattr(args, rest), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    import warnings

    shown = warnings.showwarning

    def show_rpbt_warning(message, category, filename, lineno, file=None, line=None):
        """rpbt's own warnings (a skipped checkpoint round, ...) as one line, like its errors."""
        if category.__module__.split(".")[0] == "rpbt":
            print(f"rpbt: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show_rpbt_warning
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        if is_known_error(err):
            print(f"rpbt: error: {err}", file=sys.stderr)
            return 2
        if isinstance(err, OSError):  # a path that is a file where a folder is needed, no permission, a full disk
            where = f"{err.filename}: " if err.filename is not None else ""
            print(f"rpbt: error: {where}{err.strerror or err}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt as err:
        print(f"rpbt: {_interrupted_message(args, err)}", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
