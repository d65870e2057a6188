"""Every figure of the report, drawn at the size of the full `suites/cifar10.toml`, stays readable.

The records come from tests/fixtures/full_suite.py: the suite's real task list (both presets,
every network, K, method, variant, patch grid and execution, with the real module counts),
with plausible made-up numbers, so nothing heavy runs; and, as a second case, the committed
records of a real quick-preset run (results/cifar10-sample). The side-by-side speed figure is
drawn from the committed full-size runs of suites/test_method_speed.py (results/benchmarks,
13 configurations in each of 2 runs), in both cases. For each figure the test draws the
canvas and checks what a reader would see: no text (title, tick label, axis label, legend)
outside the saved canvas, every panel's plot area at least MIN_W x MIN_H inches, at most
MAX_SERIES series of local methods per panel, and every drawn series findable in the legend
(same colour, and the same marker for points).
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.colors as mcolors
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from hpff_bench.report import decomposition as D
from hpff_bench.report import figures as F
from hpff_bench.report import tables as T
from hpff_bench.report.load import read_results
from hpff_bench.report.style import BREAKDOWN_COLORS, method_color
from hpff_bench.runner.store import dumps
from tests.fixtures.full_suite import full_suite_records

MIN_W, MIN_H = 1.0, 0.6  # inches of plot area per panel
# colours that are references or decoration, not series: BP, GC, diagonal/Pareto/error bars
_NOT_SERIES = {mcolors.to_hex(c) for c in (method_color("BP"), method_color("GC"), "black", "#444444", "#555555",
                                           "#999999", "white", "#dddddd")}


SAMPLE = Path(__file__).resolve().parents[1] / "results" / "cifar10-sample"  # real quick-preset records
SPEED_RUNS = sorted((Path(__file__).resolve().parents[1] / "results" / "benchmarks").glob("method-speed-*.json"))
ALL_FIGURES = (*F.FIGURES, F.SIDE_BY_SIDE, "decomposition")


@pytest.fixture(scope="module", params=["full-suite fixture", "sample results"])
def drawn(request, tmp_path_factory):
    if request.param == "sample results":
        path = SAMPLE
    else:
        path = tmp_path_factory.mktemp("full") / "cifar10.jsonl"
        path.write_text("".join(dumps(r) + "\n" for r in full_suite_records()), encoding="utf-8")
    df = T.add_method_names(read_results([path]).frame)
    cfg = T.configs(df)
    figs = F.all_figures(cfg, T.pareto_mask(cfg))
    assert len(SPEED_RUNS) >= 2
    figs[F.SIDE_BY_SIDE] = F.side_by_side(read_results(SPEED_RUNS).side_by_side)
    figs["decomposition"] = D.decomposition_figure(df)
    out = {}
    for name, fig in figs.items():
        assert isinstance(fig, Figure), f"{name} not drawn from the full-suite fixture: {fig}"
        out[name] = _draw(fig)
    return out


def _draw(fig):
    """Draw the canvas, recording every text artist that is really drawn (ticks outside the
    view, switched-off panels and empty strings draw nothing)."""
    seen: list[Text] = []
    original = Text.draw

    def draw(self, renderer):
        if self.get_visible() and self.get_text().strip():
            seen.append(self)
        return original(self, renderer)

    canvas = FigureCanvasAgg(fig)
    Text.draw = draw
    try:
        canvas.draw()
    finally:
        Text.draw = original
    return fig, canvas.get_renderer(), seen


def test_fixture_is_the_full_suite(drawn):
    records = full_suite_records()
    assert len(records) > 300  # 73 quick + 282 paper tasks
    kinds = {r["kind"] for r in records}
    assert kinds == {"estimate", "profile", "train"}
    assert {r["modules"] for r in records} >= {1, 2, 4, 8, 15, 16, 54}


def _shown_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison]


@pytest.mark.parametrize("name", ALL_FIGURES)
def test_no_text_leaves_the_canvas(drawn, name):
    fig, renderer, texts = drawn[name]
    w, h = fig.bbox.width, fig.bbox.height
    assert len(texts) > 10, f"{name}: only {len(texts)} texts drawn"
    outside = []
    for t in texts:
        bb = t.get_window_extent(renderer)
        if bb.x0 < -0.5 or bb.y0 < -0.5 or bb.x1 > w + 0.5 or bb.y1 > h + 0.5:
            outside.append(f"{t.get_text()!r} at x {bb.x0:.0f}..{bb.x1:.0f}, y {bb.y0:.0f}..{bb.y1:.0f}")
    assert not outside, f"{name} ({w:.0f} x {h:.0f} px): text outside the canvas: " + "; ".join(outside[:8])


@pytest.mark.parametrize("name", ALL_FIGURES)
def test_no_text_overlaps_another_panel_title(drawn, name):
    """Titles of neighbouring panels must not run into each other (a long title would)."""
    fig, renderer, _ = drawn[name]
    titles = [ax.title for ax in _shown_axes(fig) if ax.title.get_text()]
    boxes = [t.get_window_extent(renderer) for t in titles]
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            assert not a.overlaps(boxes[j]), f"{name}: titles {titles[i].get_text()!r} and {titles[j].get_text()!r} overlap"


@pytest.mark.parametrize("name", ALL_FIGURES)
def test_every_panel_keeps_a_minimum_plot_size(drawn, name):
    fig, _, _ = drawn[name]
    fw, fh = fig.get_size_inches()
    assert fw <= F.DOUBLE + 1e-9, f"{name} is {fw} in wide: wider than two paper columns"
    for ax in _shown_axes(fig):
        pos = ax.get_position()
        pw, ph = pos.width * fw, pos.height * fh
        assert pw >= MIN_W and ph >= MIN_H, f"{name}: panel {ax.get_title()!r} is {pw:.2f} x {ph:.2f} in"


_UNIT = re.compile(r"MiB|GiB|\(ms\)|\(%\)|\(x\b")


@pytest.mark.parametrize("name", ALL_FIGURES)
def test_every_panel_names_the_unit_of_its_values(drawn, name):
    """Not only the first column of a row: a panel read alone must say what its numbers are."""
    fig, _, _ = drawn[name]
    horizontal = name in ("breakdown", F.SIDE_BY_SIDE)  # values on x, methods on y
    for ax in _shown_axes(fig):
        label = ax.get_xlabel() if horizontal else ax.get_ylabel()
        assert _UNIT.search(label), f"{name}: panel {ax.get_title()!r} has value axis label {label!r}"


def _series(ax) -> set[str]:
    colours = {mcolors.to_hex(p.get_facecolor()) for p in ax.patches if isinstance(p, Rectangle) and p.get_height()}
    colours |= {mcolors.to_hex(ln.get_color()) for ln in ax.lines if len(ln.get_xdata())}
    return colours - _NOT_SERIES


# the side-by-side figure names every bar on its axis (one configuration per bar), so its
# colours are no series a legend must key; its own test checks the bars against the data
@pytest.mark.parametrize("name", (*F.FIGURES, "decomposition"))
def test_at_most_a_handful_of_series_per_panel(drawn, name):
    fig, _, _ = drawn[name]
    limit = len(BREAKDOWN_COLORS) if name == "breakdown" else F.MAX_SERIES
    for ax in _shown_axes(fig):
        n = len(_series(ax))
        assert n <= limit, f"{name}: panel {ax.get_title()!r} has {n} series (at most {limit})"


@pytest.mark.parametrize("name", (*F.FIGURES, "decomposition"))
def test_every_series_is_in_the_legend(drawn, name):
    fig, _, _ = drawn[name]
    assert fig.legends, f"{name} has no legend"
    handles = [h for lg in fig.legends for h in lg.legend_handles]
    labels = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert len(labels) == len(set(labels)), f"{name}: a legend label appears twice: {labels}"
    legend_colours = set()
    legend_points = set()
    for h in handles:
        if isinstance(h, Line2D):
            legend_colours.add(mcolors.to_hex(h.get_color()))
            legend_points.add((mcolors.to_hex(h.get_color()), h.get_marker()))
        else:
            legend_colours.add(mcolors.to_hex(h.get_facecolor()))
    for ax in _shown_axes(fig):
        missing = _series(ax) - legend_colours
        assert not missing, f"{name}: panel {ax.get_title()!r} draws colours {missing} that no legend entry has"
        for ln in ax.lines:
            m = ln.get_marker()
            c = mcolors.to_hex(ln.get_color())
            if m not in (None, "None", "", " ") and c not in _NOT_SERIES and len(ln.get_xdata()):
                # the marker in this colour, or the colour plus a marker a grey key explains
                keyed = c in legend_colours and ("#555555", m) in legend_points
                assert (c, m) in legend_points or keyed, f"{name}: marker {m!r} in {c} is in no legend entry"


def test_flop_efficiency_is_time_ratio_over_flop_ratio_within_a_setting():
    import numpy as np
    import pandas as pd

    c = pd.DataFrame({
        "setting": ["a", "a", "a", "b"], "speed_device": ["cpu"] * 4,
        "method": ["bp", "dgl", "infopro", "dgl"],
        "step_seconds": [0.4, 0.5, 1.2, 0.5],
        "flops": [50e9, 40e9, np.nan, 40e9],
    })
    eff = T.flop_efficiency(c)
    assert eff[0] == 1.0 and eff[1] == (0.5 / 0.4) / (40 / 50)  # 1.5625: slower per FLOP than BP
    assert np.isnan(eff[2]) and np.isnan(eff[3])  # no FLOPs; no BP in its setting


def test_the_speed_figure_draws_each_bar_s_flop_efficiency_under_its_step_time(tmp_path):
    path = tmp_path / "cifar10.jsonl"
    path.write_text("".join(dumps(r) + "\n" for r in full_suite_records()), encoding="utf-8")
    cfg = T.configs(T.add_method_names(read_results([path]).frame))
    fig = F.speed(cfg)
    per_flop = [ax for ax in fig.axes if ax.get_title().endswith(": per FLOP")]
    assert per_flop, [ax.get_title() for ax in fig.axes]
    # the CPU setting's DGL panel: its bars are (step / BP's step) / (FLOPs / BP's FLOPs)
    # (with five family columns a title puts each setting part on a line of its own)
    ax = next(a for a in per_flop if a.get_title().replace(" · ", "\n").startswith("DGL\nresnet32\nbatch 16:"))
    cpu = F.main_variants(cfg[(cfg["setting"] == "resnet32 · cifar10 · batch 16") & cfg["step_seconds"].notna()])
    bp = cpu[cpu["method"] == "bp"].iloc[0]
    want = sorted((r["step_seconds"] / bp["step_seconds"]) / (r["flops"] / bp["flops"])
                  for _, r in cpu.iterrows() if r["method"] in ("gc", "dgl"))
    assert len(want) == 3  # GC, DGL, DGL+HPFF
    got = sorted(p.get_height() for p in ax.patches if p.get_height())
    assert got == pytest.approx(want)
    assert [ln.get_ydata()[0] for ln in ax.lines] == [1.0]  # BP's own efficiency, the reference
