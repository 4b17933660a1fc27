"""The report's figures: member colours, each plot on a fabricated run, and the message figure a plot draws instead
when the run has nothing for it yet."""

from __future__ import annotations

import pytest

from rpbt.report import read_run
from rpbt.report.analysis import x_axis
from rpbt.report.lineage import derive_lineage
from rpbt.report.plots import member_colors, plot_lineage, plot_replay, plot_scores, plot_value_loss, replay_info
from tests.report.fabricate import PNG_MAGIC, _write_events, fabricate_run


@pytest.mark.parametrize("n", [1, 4, 10, 11, 20, 21, 40])
def test_member_colors_are_n_distinct_colours(n):
    colors = member_colors(n)
    assert len(colors) == n and len(set(colors)) == n
    assert all(len(c) == 4 and all(0.0 <= x <= 1.0 for x in c) for c in colors)


def test_member_colors_of_up_to_twenty_put_the_dark_half_first():
    # tab20 pairs a dark colour (even index) with its light one (odd index); 11-20 members take the ten dark first
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"]
    colors = member_colors(20)
    assert colors[:10] == [tab20(i) for i in range(0, 20, 2)]
    assert colors[10:] == [tab20(i) for i in range(1, 20, 2)]
    assert member_colors(12) == colors[:12]


def test_each_plot_of_a_fabricated_run_writes_a_png_without_warnings(tmp_path):
    fabricate_run(tmp_path / "run", population=4, rounds=4)
    run = read_run(tmp_path / "run")
    lineage = derive_lineage(run.events, run.population_size)
    assert lineage.exploits, "the fabricated run has exploits to draw"
    for name, draw in [("scores", lambda p: plot_scores(run, x_axis(run), p)),
                       ("lineage", lambda p: plot_lineage(run, lineage, p)),
                       ("value_loss", lambda p: plot_value_loss(run, p))]:
        path = tmp_path / f"{name}.png"
        assert draw(path) == [], name
        assert path.read_bytes().startswith(PNG_MAGIC), name
        assert not path.with_name(path.name + ".tmp").exists()


def test_a_run_with_nothing_to_draw_gets_a_message_figure_and_the_message_as_warning(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _write_events(run_dir, [{"type": "start", "round": 0, "time": 0, "population_size": 2, "hparams": [{}, {}],
                             "search_space": {}}])
    run = read_run(run_dir)
    assert replay_info(run) is None
    cases = [(plot_replay(run, tmp_path / "replay.png"), "replay.png", "Not a replay run"),
             (plot_value_loss(run, tmp_path / "vl.png"), "vl.png", "No exploits yet"),
             (plot_lineage(run, derive_lineage([], 2), tmp_path / "lin.png"), "lin.png", "No completed round yet")]
    for warnings, name, said in cases:
        assert len(warnings) >= 1 and said in warnings[0], (name, warnings)
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
