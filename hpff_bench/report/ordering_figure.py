"""The accuracy figure of a seeded study: each configuration's test error over seeds, and the
papers' orderings drawn so that a reader sees which differences the error bars resolve.

Left, per setting: one row per configuration, sorted by mean test error: the mean with a bar of
+/- one standard deviation, every seed as a small dot, and the published error of the same
configuration (the papers' full schedule) written at the right. Right: one row per ordering
checked (report.orderings): the difference in error points (positive = the papers' order) with a
whisker of +/- (std + std); a whisker that does not cross zero is a resolved difference. Colour
says the verdict.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hpff_bench.report.figures import DOUBLE, DPI, style
from hpff_bench.report.orderings import (
    AS_PUBLISHED,
    NOT_RESOLVED,
    REVERSED,
    comparisons,
)
from hpff_bench.report.style import method_color, method_marker
from hpff_bench.report.tables import published_error

VERDICT_COLORS = {AS_PUBLISHED: "#2a7f3f", REVERSED: "#c0392b", NOT_RESOLVED: "#9a9a9a"}
ROW_H = 0.19  # inches per row of a panel


def accuracy_ordering(cfg: pd.DataFrame) -> Figure | str:
    c = cfg[cfg["error_mean"].notna()] if not cfg.empty else cfg
    if c.empty:
        return "no successful run has an accuracy (accuracy.test_error_pct or accuracy.top1)"
    if c["seeds"].max() < 2:
        return "every configuration has one seed: no error bars to resolve an ordering (run two or more seeds)"
    comp = comparisons(cfg)
    settings = list(dict.fromkeys(c["setting"]))
    heights = [max(len(c[c["setting"] == s]), len(comp[comp["setting"] == s]), 3) for s in settings]
    with style():
        fig = Figure(figsize=(DOUBLE, ROW_H * sum(heights) + 0.75 * len(settings) + 0.5), layout="constrained", dpi=DPI)
        axes = fig.subplots(len(settings), 2, squeeze=False, height_ratios=heights, width_ratios=[1.0, 1.0])
        for i, s in enumerate(settings):
            _errors_panel(axes[i, 0], c[c["setting"] == s].sort_values("error_mean"), s)
            _orderings_panel(axes[i, 1], comp[comp["setting"] == s])
        handles = [Line2D([], [], marker="o", color=v, ls="-", lw=1.2, label=k) for k, v in VERDICT_COLORS.items()]
        handles.append(Line2D([], [], marker="o", color="#555555", ls="", ms=2, label="one seed"))
        fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize="small", handlelength=1.5)
    return fig


def _errors_panel(ax, rows: pd.DataFrame, setting: str) -> None:
    y = np.arange(len(rows))
    for yi, (_, r) in zip(y, rows.iterrows()):
        col = method_color(r["name"])
        std = r["error_std"]
        ax.errorbar(r["error_mean"], yi, xerr=None if not math.isfinite(std) else std, fmt=method_marker(r["name"]),
                    color=col, ms=4, capsize=2, elinewidth=0.9, zorder=3)
        seeds = r["seed_errors"] if isinstance(r["seed_errors"], list) else []
        ax.plot(seeds, [yi] * len(seeds), "o", color="#555555", ms=1.8, zorder=4)
        p = published_error(r)[0]
        if math.isfinite(p):
            ax.annotate(f"paper {p:.2f}", (1.0, yi), xycoords=("axes fraction", "data"), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize="x-small", color="#555555")
    ax.set_yticks(y, [f"{n}, {int(s)} seed{'s' if s != 1 else ''}" for n, s in zip(rows["name"], rows["seeds"])],
                  fontsize="x-small")
    ax.invert_yaxis()
    ax.set_xlabel("test error (%): mean ± std")
    epochs = rows["epochs"].dropna()
    ax.set_title(f"{setting}" + (f", {int(epochs.max())} epochs" if not epochs.empty else ""), fontsize="small")


def _orderings_panel(ax, comp: pd.DataFrame) -> None:
    if comp.empty:
        ax.text(0.5, 0.5, "no published ordering\ncompares these runs", ha="center", va="center",
                transform=ax.transAxes, fontsize="small", color="#555555")
        ax.set_axis_off()
        return
    y = np.arange(len(comp))
    for yi, (_, r) in zip(y, comp.iterrows()):
        col = VERDICT_COLORS[r["verdict"]]
        ax.errorbar(r["difference"], yi, xerr=r["bound"] if math.isfinite(r["bound"]) else None, fmt="o",
                    color=col, ms=3.5, capsize=2, elinewidth=1.2, zorder=3)
    ax.axvline(0, color="#333333", lw=0.8, zorder=2)
    ax.set_yticks(y, [f"{r['better']} < {r['worse']}" for _, r in comp.iterrows()], fontsize="x-small")
    ax.invert_yaxis()
    ax.set_xlabel("Δ error, points (> 0: as published)")
    ax.set_title("the papers' orderings, ± (std + std)", fontsize="small")
