"""``rpbt report RUN_DIR``: write RUN_DIR/report/ with report.md, a self-contained report.html and the PNGs.

The report is built once as a list of blocks (headings, paragraphs, lists, tables, images) and rendered twice:
to Markdown (images referenced by file name, next to it) and to HTML (images embedded as base64 data URIs, so the
one file can be mailed or attached). Text may hold `code spans`.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from rpbt.report.analysis import (
    X_CHOICES,
    XAxis,
    current_hparams,
    value_loss_windows,
    x_axis,
)
from rpbt.report.curves import plot_training_curves
from rpbt.report.lineage import Lineage, derive_lineage
from rpbt.report.plots import (
    PNG_NAMES,
    REPLAY_PNG,
    plot_hparams,
    plot_lineage,
    plot_replay,
    plot_scores,
    plot_value_loss,
    replay_info,
)
from rpbt.report.population import plot_hparam_scores, plot_population, plot_round_times
from rpbt.report.reader import RunData, num_or_none, read_run
from rpbt.report.style import message_figure

__all__ = ["ReportResult", "build_report", "write_report"]

log = logging.getLogger("rpbt.report")

MEASUREMENT_KEYS = ("pbt/hidden_state_drift", "pbt/policy_kl_at_exploit", "pbt/value_gap_at_exploit",
                    "pbt/burn_in_truncated", "pbt/stale_state_drift", "pbt/stale_policy_kl_at_exploit",
                    "pbt/stale_value_gap_at_exploit")
#: the measurements that compare the state a strategy leaves with the burned-in one: 0 under burn_in
LEFT_VS_BURNED = MEASUREMENT_KEYS[:3]


@dataclass
class ReportResult:
    out_dir: Path
    markdown: Path
    html: Path
    images: dict[str, Path]
    warnings: list[str] = field(default_factory=list)
    lineage: Optional[Lineage] = None


# --------------------------------------------------------------------------------------------------- blocks


@dataclass
class _Doc:
    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", list(headers), [list(r) for r in rows]))

    def figure(self, path: Path, alt: str, notes: list[str]) -> None:
        """An image followed by its notes (a bullet list)."""
        self.img(path, alt)
        self.ul(notes)

    def img(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", path, alt))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _to_markdown(doc: _Doc) -> str:
    out: list[str] = []
    for b in doc.blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out.append("\n".join(f"- {item}" for item in b[1]))
        elif b[0] == "table":
            headers, rows = b[1], b[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
                     "|" + "|".join("---" for _ in headers) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out.append("\n".join(lines))
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1].name})")
    return "\n\n".join(out) + "\n"


_CODE = re.compile(r"`([^`]+)`")


def _inline_html(text: str) -> str:
    parts = _CODE.split(text)
    return "".join(f"<code>{html.escape(p)}</code>" if k % 2 else html.escape(p) for k, p in enumerate(parts))


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .15em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 90%; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f2f2f2; padding: 0 .25em; border-radius: 3px; font-size: 92%; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def _to_html(doc: _Doc, title: str) -> str:
    out = ["<!DOCTYPE html>", "<html lang=\"en\">", "<head>", "<meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for b in doc.blocks:
        if b[0] == "h":
            out.append(f"<h{b[1]}>{_inline_html(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            out.append(f"<p>{_inline_html(b[1])}</p>")
        elif b[0] == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b[1]) + "</ul>")
        elif b[0] == "table":
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>" for r in b[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode(b[1].read_bytes()).decode("ascii")
            out.append(f"<p><img alt=\"{html.escape(b[2])}\" src=\"data:image/png;base64,{data}\"></p>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------- formatting


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    x = num_or_none(value)
    if x is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{x:.4g}"


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _mean(values: list[Optional[float]]) -> Optional[float]:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def _geomean(values: list[float]) -> Optional[float]:
    xs = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    return math.exp(sum(math.log(v) for v in xs) / len(xs)) if xs else None


# --------------------------------------------------------------------------------------------------- sections


def _overview(doc: _Doc, run: RunData, lineage: Lineage) -> None:
    last = run.rounds[-1] if run.rounds else None
    items = []
    if run.end is not None:
        items.append(f"status: finished (\"end\" event at round {run.end.get('round')})")
    elif run.events:
        items.append("status: in progress or interrupted (no \"end\" event yet)")
    else:
        items.append("status: no events yet")
    items.append(f"population: {run.population_size} members; completed rounds: {run.last_round}")
    if last is not None:
        steps = last.get("env_steps")
        steps = steps if not isinstance(steps, list) else f"{min(steps)}..{max(steps)}"
        items.append(f"env steps per member: {steps}; updates per member: {_fmt(last.get('updates'))}")
    env_id = _get(run.config, "env", "id")
    if env_id is not None:
        items.append(f"environment: `{env_id}`")
    pbt = _get(run.config, "pbt") or {}
    if isinstance(pbt, dict) and pbt:
        parts = [f"{k}: `{pbt[k]}`" for k in ("exploit", "hidden_state", "perturbation_interval") if k in pbt]
        if parts:
            items.append("PBT: " + ", ".join(parts))
    items.append(f"exploits: {len(run.exploits)}")
    timing = _timing(run)
    if timing:
        items.append(timing)
    if run.resumes:
        items.append(f"resumed {len(run.resumes)} time(s), at round(s) "
                     + ", ".join(str(e.get("round")) for e in run.resumes))
    if run.failures:
        items.append(f"failures: {len(run.failures)} (see below)")
    where = ""
    if run.checkpoint_dir is not None:
        folder = run.checkpoint_dir
        if isinstance(folder, Path):  # else the URL of run.storage
            folder = (folder.relative_to(run.run_dir) if folder.is_relative_to(run.run_dir) else folder).as_posix()
        at_round = f", round {run.checkpoint_round}" if run.checkpoint_round is not None else ""
        where = f" (`{folder}`{at_round})"
    items.append(f"checkpoints present: {run.checkpoints_present}/{run.population_size}{where}")
    if lineage.best_member is not None:
        items.append(f"best member: {lineage.best_member} "
                     f"(latest score {_fmt(lineage.scores[lineage.best_member])})")
    doc.ul(items)


def _timing(run: RunData) -> Optional[str]:
    """Where the wall time went, from the rounds' ``train_s`` and the exploits' ``transfer_s`` (None for a run
    written before they were recorded)."""
    train = [float(e["train_s"]) for e in run.rounds if isinstance(e.get("train_s"), (int, float))]
    if not train:
        return None
    transfer = {e.get("round"): float(e["transfer_s"]) for e in run.exploits
                if isinstance(e.get("transfer_s"), (int, float))}
    total = sum(train) + sum(transfer.values())
    share = f" ({100 * sum(transfer.values()) / total:.2f}% of the two)" if total > 0 else ""
    return (f"wall time: training {sum(train):.1f} s over {len(train)} rounds, exploits (snapshots, transfers, "
            f"burn-in) {sum(transfer.values()):.2f} s{share}")


def _lineage_text(doc: _Doc, run: RunData, lineage: Lineage) -> None:
    best = lineage.best_member
    if best is None:
        doc.p("No scores yet, so no best member.")
        return
    doc.p(f"Ancestry of the best member ({best}, latest score {_fmt(lineage.scores[best])}), oldest first: "
          + lineage.describe(best) + ".")
    if lineage.best_ancestry:
        members = [d for _, d in lineage.best_ancestry] + [best]
        rows = [[str(j + 1), str(r), str(members[j]), str(members[j + 1])]
                for j, (r, _d) in enumerate(lineage.best_ancestry)]
        doc.table(["step", "round", "donor", "recipient"], rows)
    summary_lineage = _get(run.summary, "lineage")
    if isinstance(summary_lineage, list):
        theirs = [(e.get("round"), e.get("member")) for e in summary_lineage if isinstance(e, dict)]
        if theirs != list(lineage.best_ancestry) and _get(run.summary, "best_member") == best:
            doc.p("Note: `summary.json` gives a different ancestry for this member: "
                  + ", ".join(f"round {r}: member {m}" for r, m in theirs) + ".")


def _value_loss_table(doc: _Doc, run: RunData) -> None:
    windows, window, _ = value_loss_windows(run)
    strategies = sorted({(e.get("hidden_state") if isinstance(e.get("hidden_state"), str) else "unknown")
                         for e in run.exploits})
    rows = []
    for s in strategies:
        exs = [e for e in run.exploits if (e.get("hidden_state") if isinstance(e.get("hidden_state"), str)
                                            else "unknown") == s]
        ws = [w for w in windows if w.strategy == s]
        k0 = int(np.flatnonzero(ws[0].offsets == 0)[0]) if ws else None
        before = _geomean([w.relative[k0] for w in ws if w.relative is not None]) if ws else None
        after = _geomean([w.relative[k0 + 1] for w in ws if w.relative is not None and k0 + 1 < len(w.offsets)]
                         ) if ws else None
        meas = [_mean([num_or_none(_get(e, "measurements", key)) for e in exs]) for key in MEASUREMENT_KEYS]
        cells = [_fmt(m) + (" (by construction)" if s == "burn_in" and key in LEFT_VS_BURNED and m == 0 else "")
                 for key, m in zip(MEASUREMENT_KEYS, meas)]
        rows.append([f"`{s}`", str(len(exs)), str(len(ws)), _fmt(before), _fmt(after)] + cells)
    doc.table(
        ["hidden state", "exploits", "with value-loss data", "recipient/donor VL, last update before",
         "recipient/donor VL, first update after"] + [f"mean `{k}`" for k in MEASUREMENT_KEYS],
        rows,
    )
    doc.p("How to read the measurements: `hidden_state_drift`, `policy_kl_at_exploit` and `value_gap_at_exploit` "
          "compare the carried LSTM state the hidden-state strategy leaves the recipient with the state burned in "
          "under the donor's weights (the reference), and the policy and value at that state.")
    if "burn_in" in strategies:
        doc.ul(["Under `burn_in` those three are 0 by construction: the state left *is* the burned-in one. Read "
                "the stale-state measurements instead, `pbt/stale_state_drift`, `pbt/stale_policy_kl_at_exploit` "
                "and `pbt/stale_value_gap_at_exploit`: how far the recipient's own pre-exploit state (what `keep` "
                "would have left) was from the burned-in one, and how much that moved the policy and value: what "
                "burn-in corrected. "
                "`pbt/burn_in_truncated` counts environments whose episode was longer than the burn-in window."])


def _members_table(doc: _Doc, run: RunData, lineage: Lineage) -> None:
    hps = current_hparams(run)
    donated = {i: 0 for i in range(run.population_size)}
    for ex in lineage.exploits:
        donated[ex.donor] += 1
    order = sorted(range(run.population_size),
                   key=lambda i: (lineage.scores.get(i) is None, -(lineage.scores.get(i) or 0.0), i))
    headers = ["rank", "member", "latest score", "exploited (as recipient)", "donated", "carries weights of"]
    headers += [f"`{n}`" for n in run.hparam_names]
    rows = []
    for rank, i in enumerate(order, start=1):
        score = lineage.scores.get(i)
        mark = " (best)" if i == lineage.best_member else ""
        rows.append([str(rank) if score is not None else "-", f"{i}{mark}", _fmt(score),
                     str(len(lineage.received.get(i, []))), str(donated[i]), f"member {lineage.origin.get(i, i)}"]
                    + [_fmt(hps.get(i, {}).get(n)) for n in run.hparam_names])
    doc.table(headers, rows)


def _replay_section(doc: _Doc, run: RunData, info: dict, image: Path, notes: list[str]) -> None:
    member, source = info.get("member"), info.get("source")
    doc.h(2, "Replay")
    lineage = info.get("lineage") or []
    chain = " -> ".join([f"member {info.get('origin')}"] + [f"(round {link.get('round')}) member {m}" for link, m in
                                                            zip(lineage, [x.get("member") for x in lineage[1:]]
                                                                + [member])])
    doc.p(f"This run replays the hyperparameter schedule of member {member} of `{source}` (lineage: {chain}) on "
          f"fresh weights, {run.population_size} seed(s), no exploit. Replay seed 0 starts from the lineage's "
          "initial weights (member "
          f"{info.get('origin')}'s). Black: the original member's score (the score of whichever member trained "
          "its weights in each round) and its schedule; colors: the replay.")
    doc.figure(image, "replay beside the original member", notes)
    orig = [num_or_none(s) for s in info.get("scores") or []]
    last = run.rounds[-1] if run.rounds else None
    if last is not None:
        r = int(last["round"])
        replay_scores = [num_or_none(s) for s in last.get("scores") or []]
        original = orig[r - 1] if 0 < r <= len(orig) else None
        mean = _mean(replay_scores)
        ratio = (mean / original) if (mean is not None and original not in (None, 0.0)) else None
        doc.table(["round", "original member's score", "replay scores", "replay mean", "replay / original"],
                  [[str(r), _fmt(original), ", ".join(_fmt(s) for s in replay_scores), _fmt(mean), _fmt(ratio)]])


# --------------------------------------------------------------------------------------------------- main


def _draw(name: str, fn: Callable[[], list[str]], path: Path, warnings: list[str]) -> list[str]:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one bad figure must not cost the whole report
        log.debug("figure %s failed:\n%s", name, traceback.format_exc())
        msg = f"could not draw {path.name}: {type(exc).__name__}: {exc}"
        warnings.append(msg)
        try:
            message_figure(path, name, msg)
        except Exception:  # noqa: BLE001
            pass
        return [msg]


def build_report(run_dir: Path | str, out_dir: Path | str | None = None, x: str = "steps",
                 smooth_rounds: int = 1) -> ReportResult:
    """Write the report and return what was written, with the warnings (partial problems of the run directory).

    ``x``: the x-axis of the time series, one of ``"steps"`` (env steps per member), ``"rounds"``, ``"time"``
    (the run's clock, seconds); ``smooth_rounds``: the trailing mean over that many rounds drawn over the raw
    scores and training curves (1: none). Raises :class:`ReportError` naming the path when the run directory or
    its events.jsonl is missing or unusable; ``ValueError`` for an unknown ``x`` or a ``smooth_rounds`` below 1.
    """
    if x not in X_CHOICES:
        raise ValueError(f"x={x!r}: expected one of {', '.join(X_CHOICES)}")
    if isinstance(smooth_rounds, bool) or not isinstance(smooth_rounds, int) or smooth_rounds < 1:
        raise ValueError(f"smooth_rounds={smooth_rounds!r}: expected a whole number of rounds >= 1")
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    warnings = list(run.warnings)
    lineage = derive_lineage(run.events, population_size=run.population_size)
    axis: XAxis = x_axis(run, x)
    if axis.kind != x:
        warnings.append(f"x-axis {x!r} asked for, but the round events lack it: rounds on x")
    images = {key: out / name for key, name in PNG_NAMES.items()}
    notes = _draw_figures(run, lineage, axis, images, warnings, smooth_rounds)

    title = f"rpbt report: {run_dir.resolve().name}"
    doc = _Doc()
    _head_section(doc, title, run_dir, run, lineage, warnings)
    _scores_section(doc, axis, images, notes)
    _hparams_section(doc, axis, images, notes)
    _lineage_section(doc, run, lineage, images, notes)
    _training_section(doc, axis, images, notes)
    _value_loss_section(doc, run, images, notes)
    _time_section(doc, images, notes)
    info = replay_info(run)
    if info is not None:
        images["replay"] = out / REPLAY_PNG
        notes["replay"] = _draw("Replay", lambda: plot_replay(run, images["replay"]), images["replay"], warnings)
        _replay_section(doc, run, info, images["replay"], notes["replay"])
    _members_section(doc, run, lineage)

    md_path, html_path = out / "report.md", out / "report.html"
    _write_atomic(md_path, _to_markdown(doc))
    _write_atomic(html_path, _to_html(doc, title))
    return ReportResult(out_dir=out, markdown=md_path, html=html_path, images=images, warnings=warnings,
                        lineage=lineage)


def _draw_figures(run: RunData, lineage: Lineage, axis: XAxis, images: dict[str, Path], warnings: list[str],
                  smooth_rounds: int = 1) -> dict[str, list[str]]:
    """Draw the figures every report has (:data:`PNG_NAMES`) into ``images``; returns each figure's notes (a
    failed figure's message among them, also appended to ``warnings``)."""
    draws: dict[str, tuple[str, Callable[[Path], list[str]]]] = {
        "scores": ("Scores", lambda p: plot_scores(run, axis, p, smooth_rounds)),
        "population": ("Population", lambda p: plot_population(run, axis, p, smooth_rounds)),
        "hparams": ("Hyperparameters", lambda p: plot_hparams(run, axis, p)),
        "hparam_scores": ("Score against each hyperparameter", lambda p: plot_hparam_scores(run, lineage, p)),
        "lineage": ("Lineage", lambda p: plot_lineage(run, lineage, p)),
        "training": ("Training curves", lambda p: plot_training_curves(run, axis, p, smooth_rounds)),
        "value_loss": ("Value loss around exploits", lambda p: plot_value_loss(run, p)),
        "time": ("Time per round", lambda p: plot_round_times(run, p)),
    }
    return {key: _draw(title, lambda fn=fn, key=key: fn(images[key]), images[key], warnings)
            for key, (title, fn) in draws.items()}


def _head_section(doc: _Doc, title: str, run_dir: Path, run: RunData, lineage: Lineage,
                  warnings: list[str]) -> None:
    """Title, run directory and time, the overview, then the warnings and failures when there are any."""
    doc.h(1, title)
    doc.p(f"Run directory: `{run_dir}`. Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.")
    _overview(doc, run, lineage)
    if warnings:
        doc.h(2, "Warnings")
        doc.ul(warnings)
    if run.failures:
        doc.h(2, "Failures")
        doc.table(["round", "shard", "members", "failure no.", "action", "cause"],
                  [[_fmt(f.get("round")), _fmt(f.get("shard")), _fmt(f.get("members")), _fmt(f.get("failures")),
                    str(f.get("action", "")), str(f.get("cause", ""))]
                   for f in run.failures])


def _scores_section(doc: _Doc, axis: XAxis, images: dict[str, Path], notes: dict[str, list[str]]) -> None:
    doc.h(2, "1. Scores")
    doc.p(f"Top: score (`pbt/score`) of every member over {axis.label}. An arrow marks an exploit, from the "
          "donor's score to the recipient's (x) at the exploit, colored by the donor. Bottom: each member's gap to "
          "the round's best score, members as rows and rounds as columns, on a log colour scale (green: the "
          "round's best): once the task is solved and every line lies near the top, this still tells the members "
          "apart. `rpbt report RUN_DIR --x rounds|steps|time --smooth K` changes the x-axis and draws a trailing "
          "mean over K rounds.")
    doc.figure(images["scores"], "scores", notes["scores"])
    doc.h(3, "Population")
    doc.p("Best, mean and median score per round with the 25-75% and min-max bands of the population; below, "
          "the exploits of each round.")
    doc.figure(images["population"], "population score per round", notes["population"])


def _hparams_section(doc: _Doc, axis: XAxis, images: dict[str, Path], notes: dict[str, list[str]]) -> None:
    doc.h(2, "2. Hyperparameters")
    doc.p(f"Each searched hyperparameter over {axis.label}, one line per member (the value in force from that "
          "point on); log axis for log-scale dimensions; x: a recipient's new value after an exploit.")
    doc.figure(images["hparams"], "hyperparameters", notes["hparams"])
    doc.h(3, "Which values won")
    doc.p("The score of every member in every round against the hyperparameter values it trained with in that "
          "round (colour: the round). Black rings: a member and round on a path that today's weights descend "
          "from (the lineage's survivors); large markers: the last round; star: the best member now.")
    doc.figure(images["hparam_scores"], "score against each hyperparameter", notes["hparam_scores"])


def _lineage_section(doc: _Doc, run: RunData, lineage: Lineage, images: dict[str, Path],
                     notes: dict[str, list[str]]) -> None:
    doc.h(2, "3. Lineage")
    doc.p("Members as lanes, rounds on x. Strong lanes carry weights that some member still carries after the "
          "last round (or its ancestors'), colored by the member whose initial weights they are; light lanes "
          "carry weights that died out. An arrow goes from the donor's lane to the recipient's at each exploit "
          "whose copy survives (the donor's state at the end of that round's training); the other exploits are "
          "faint lines. Black: the ancestry of the best member.")
    doc.figure(images["lineage"], "lineage", notes["lineage"])
    _lineage_text(doc, run, lineage)
    if lineage.population_size:
        surviving = sorted(set(lineage.origin.values()))
        doc.p(f"Initial weights still carried: member(s) {', '.join(map(str, surviving))} "
              f"({len(surviving)} of {lineage.population_size}).")


def _training_section(doc: _Doc, axis: XAxis, images: dict[str, Path], notes: dict[str, list[str]]) -> None:
    doc.h(2, "4. Training curves")
    doc.p(f"Per member and update, from `members/<i>/metrics.csv`, over {axis.label}: the episode return "
          "(`rollout/ep_rew_mean`), `train/value_loss`, `train/approx_kl` and `train/entropy_loss` (minus the "
          "policy's entropy, Stable-Baselines3's sign). A recipient's line jumps at an exploit: from then on it "
          "trains the donor's weights.")
    doc.figure(images["training"], "training curves", notes["training"])


def _value_loss_section(doc: _Doc, run: RunData, images: dict[str, Path], notes: dict[str, list[str]]) -> None:
    doc.h(2, "5. Value loss around exploits")
    doc.p("`train/value_loss` of the recipient in the updates around each exploit, per hidden-state strategy, "
          "aligned on the exploit: offset 0 is the recipient's last update of the exploit's round (the exploit "
          "follows it), offset 1 its first update with the donor's weights. Top: absolute. Bottom: relative to "
          "the donor's value loss at its last update before the exploit (1 = as good as the donor was). "
          "Bold: geometric mean over exploits (arithmetic if some value is not positive); faint: each exploit.")
    doc.figure(images["value_loss"], "value loss around exploits", notes["value_loss"])
    if run.exploits:
        _value_loss_table(doc, run)


def _time_section(doc: _Doc, images: dict[str, Path], notes: dict[str, list[str]]) -> None:
    doc.h(2, "6. Time per round")
    doc.p("Seconds per round on the run's clock: training (`train_s` of the round event), exploits "
          "(`transfer_s`: snapshots, transfers, burn-in) and the rest (scoring, decisions, checkpoint commits, "
          "records; after a resume also the restart).")
    doc.figure(images["time"], "time per round", notes["time"])


def _members_section(doc: _Doc, run: RunData, lineage: Lineage) -> None:
    doc.h(2, "7. Members")
    doc.p("Ranked by latest score; hyperparameters in force now (after the last round's exploits).")
    _members_table(doc, run, lineage)
    if lineage.best_member is not None:
        doc.p(f"Ancestry of the best member, oldest first: {lineage.describe(lineage.best_member)}.")


def write_report(run_dir: Path | str, out_dir: Path | str | None = None, x: str = "steps",
                 smooth_rounds: int = 1) -> Path:
    """Write RUN_DIR/report/ (or ``out_dir``): report.md, self-contained report.html and the PNGs.

    Returns the report directory. Warnings (partial problems: a cut last line of events.jsonl, a missing
    metrics.csv, ...) are shown in report.md and logged on the ``rpbt.report`` logger (printed to stderr when
    logging is not configured); :func:`build_report` returns them as a list. Raises :class:`ReportError` naming the
    path when the run directory or its events.jsonl is missing or unusable.
    """
    result = build_report(run_dir, out_dir, x=x, smooth_rounds=smooth_rounds)
    for w in result.warnings:
        log.warning("rpbt report: %s", w)
    return result.out_dir
