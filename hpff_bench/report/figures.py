"""The report's figures, drawn on `matplotlib.figure.Figure` (no pyplot, no global state).

Each function takes the per-configuration frame (`tables.configs`) and returns a `Figure`, or a
string saying why there is nothing to draw. Figures are facets: one row of panels per setting
(network, data, batch), one column per method family (Greedy SL, DGL, InfoPro, ...), so no
panel holds more than a handful of series, whatever the size of the suite; BP and GC, which
every family is compared with, appear in every panel as reference lines or bars. A method has
one colour everywhere (`style.method_color`); variants of one family differ in shade and
marker. Sizes are fixed (no tight bounding box), so a figure is exactly `figsize * DPI` pixels
and never wider than two paper columns (7 in); tests/test_report_figures.py checks that no
text leaves the canvas and that every panel keeps a minimum plot size.
"""

from __future__ import annotations

import contextlib
import math
import re
import textwrap

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from hpff_bench.config import RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.method_registry import global_methods
from hpff_bench.report.style import (
    BREAKDOWN,
    BREAKDOWN_COLORS,
    BREAKDOWN_LABELS,
    SOURCES,
    family_of,
    memory_unit,
    method_color,
    method_marker,
    method_sort_key,
    order_methods,
)
from hpff_bench.report.tables import (
    NO_SIDE_BY_SIDE,
    PARITY_MISSING,
    flop_efficiency,
    k_text,
    main_variants,
    natural_key,
    noise_overlap,
)
from hpff_bench.speed_cases import CASES, OFFICIAL_CODE_CASES, speed_config

DPI = 200
COLUMN = 3.5  # inches: one column of a two-column paper
DOUBLE = 7.0
PANEL_H = 1.9
MAX_SERIES = 8  # per panel; tests hold every figure of the full suite to it
MAX_FAMILY_COLS = 4  # method-family panels side by side; more wrap onto another row


@contextlib.contextmanager
def style():
    rc = {
        "hatch.linewidth": 0.5,
        "legend.frameon": False,
        "figure.dpi": DPI,
        "axes.titlesize": "small",
    }
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=0.8), mpl.rc_context(rc):
        yield


def _facets(nrows: int, ncols: int, legend_rows: int, panel_h: float = PANEL_H, sharey: str | bool = False):
    """A grid of panels, one paper column wide for one panel, else two; room for the legend."""
    width = COLUMN if ncols == 1 else DOUBLE
    height = panel_h * nrows + 0.17 * legend_rows + 0.3
    fig = Figure(figsize=(width, height), layout="constrained", dpi=DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    return fig, axes


def _legend(fig: Figure, handles: list, ncols_fig: int) -> None:
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=_legend_cols(ncols_fig),
                   fontsize="small", handlelength=1.5, columnspacing=1.0)


def _legend_cols(ncols_fig: int) -> int:
    return 2 if ncols_fig == 1 else 3


def _legend_rows(n_handles: int, ncols_fig: int) -> int:
    return math.ceil(n_handles / _legend_cols(ncols_fig))


def _source_handles(sources) -> list:
    present = set(sources)
    return [
        Patch(facecolor="#dddddd", edgecolor="black", linewidth=0.3, hatch=SOURCES[s][0], label=SOURCES[s][1])
        for s in SOURCES if s in present
    ]


def _families(c: pd.DataFrame) -> list[str]:
    """The local method families present, in the one order (Greedy SL, DGL, InfoPro, PredSim)."""
    return order_methods({family_of(n) for n, m in zip(c["name"], c["method"]) if m not in global_methods()})


def _panels(values) -> list[str]:
    return sorted(dict.fromkeys(values), key=natural_key)


def _title(ax, family: str | None, setting: str) -> None:
    text = f"{family}\n{setting}" if family else setting
    if ax.get_subplotspec().get_gridspec().ncols >= MAX_FAMILY_COLS:
        # MAX_FAMILY_COLS family columns in two paper columns: a quarter of the width each, so
        # smaller text, a line per setting part, and long names cut
        lines = [part for line in text.split("\n") for part in (line.split(" · ") if len(line) > 22 else [line])]
        text = "\n".join(x if len(x) <= 22 else x[:21] + "…" for x in lines)
        ax.set_title(text, fontsize="x-small")
        return
    ax.set_title(text)


def compact_settings(c: pd.DataFrame, column: str = "setting") -> pd.DataFrame:
    """Drop the parts every setting shares but the network (e.g. ' · cifar10'): short titles."""
    parts = [str(s).split(" · ") for s in c[column]]
    common = set.intersection(*(set(p[1:]) for p in parts)) if parts else set()
    if not common:
        return c
    return c.assign(**{column: [" · ".join(x for i, x in enumerate(p) if i == 0 or x not in common) for p in parts]})


def _hide_empty(axes, zero_floor: bool = True) -> None:
    """Switch off panels without data; y from 0 to the largest value of the (shared) row."""
    for ax in axes.ravel():
        if not ax.has_data():
            ax.set_axis_off()
            ax.set_title("")
        elif zero_floor:
            ax.relim()
            ax.autoscale_view(scalex=False)  # over every panel sharing this y axis
    if zero_floor:
        for ax in axes.ravel():
            if ax.has_data():
                ax.set_ylim(bottom=0)


def _x_groups(rows: pd.DataFrame) -> list[tuple[int, int | None]]:
    """x positions: one per (K, real module count) of the rows' local methods."""
    local = rows[~rows["method"].isin(global_methods())]
    pairs = {(int(k), None if m != m or m is None else int(m)) for k, m in zip(local["k"], local["modules"])}
    if not pairs:
        pairs = {(int(k), None) for k in rows["k"]}
    return sorted(pairs, key=lambda g: (g[0], g[1] if g[1] is not None else -1))


def _cut_modules(r) -> int | None:
    """The modules a row's cuts make: gc records count one gradient-isolated module, but its
    checkpoint segments are cut as the split's K modules, so its bar belongs to that group
    (e.g. InfoPro's 16 at K=16, not HPFF's 15)."""
    m = r["modules"]
    if r["method"] != "gc" or str(r.get("split")) == "balanced":  # balanced: a search, not a table
        return None if m != m or m is None else int(m)
    from hpff_bench.errors import ConfigError
    from hpff_bench.networks.splits import resolve_cuts

    try:
        split = resolve_cuts(str(r["network"]), str(r.get("split") or "auto"), int(r["k"]), str(r["dataset"]))
    except (ConfigError, KeyError):
        return None
    return split.modules


def _group_of(r, groups) -> int | None:
    k = int(r["k"])
    exact = (k, _cut_modules(r))
    if exact in groups:
        return groups.index(exact)
    same_k = [i for i, g in enumerate(groups) if g[0] == k]
    return same_k[0] if same_k else None


def _bars(ax, sub: pd.DataFrame, value: str, scale: float, *, source: str | None = None,
          err: tuple[str, str] | None = None, noise_ref: dict | None = None) -> list[str]:
    """Bars per method at each (K, modules) of one panel; BP (K=1) as a dashed reference line.

    err: (low, high) columns drawn as an error bar (the IQR); noise_ref: {(k, modules): row} of
    the plain method each bar is compared with, a bar whose IQR overlaps it is marked 'n.r.' (not
    resolved: the difference is inside the noise)."""
    bp = sub[sub["method"] == "bp"]
    others = sub[sub["method"] != "bp"]
    drawn: list[str] = []
    if others.empty:
        return drawn
    groups = _x_groups(others)
    members: dict[int, list] = {i: [] for i in range(len(groups))}
    for _, r in others.iterrows():
        gi = _group_of(r, groups)
        if gi is not None:
            members[gi].append(r)
    order = {m: i for i, m in enumerate(order_methods(others["name"]))}
    widest = max(len(v) for v in members.values()) or 1
    width = min(0.8 / widest, 0.3)
    for xi, rows in members.items():
        rows = sorted(rows, key=lambda r: order.get(r["name"], len(order)))
        for j, r in enumerate(rows):
            x = xi + (j - (len(rows) - 1) / 2) * width
            v = r[value] / scale
            ax.bar(x, v, width, color=method_color(r["name"]), edgecolor="black", linewidth=0.3,
                   hatch=SOURCES.get(r[source], ("xx", ""))[0] if source else None)
            if err and r[err[0]] == r[err[0]] and r[err[1]] == r[err[1]]:
                lo, hi = r[err[0]] / scale, r[err[1]] / scale
                ax.errorbar(x, v, yerr=[[max(v - lo, 0)], [max(hi - v, 0)]], fmt="none",
                            color="black", ecolor="black", elinewidth=0.6, capsize=1.5)
            if noise_ref is not None:
                ref = noise_ref.get((int(r["k"]), r["modules"]))
                if ref is not None and ref["name"] != r["name"] and noise_overlap(r, ref) is True:
                    ax.annotate("n.r.", (x, v), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize="small", fontweight="bold")
            drawn.append(r["name"])
    if not bp.empty:
        r = bp.iloc[0]
        measured = source is None or r[source] != "predicted"
        ax.axhline(r[value] / scale, color=method_color("BP"), lw=1.0, ls="--" if measured else ":", zorder=3)
    ax.set_xticks(range(len(groups)), [k_text(k, m) for k, m in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.grid(axis="x", visible=False)
    return drawn


def _bp_handles(c: pd.DataFrame, source: str | None) -> list:
    bp = c[c["method"] == "bp"]
    if bp.empty:
        return []
    srcs = set(bp[source]) if source else {"measured"}
    out = []
    if srcs - {"predicted"}:
        out.append(Line2D([], [], color=method_color("BP"), ls="--", label="BP (K=1)"))
    if "predicted" in srcs:
        out.append(Line2D([], [], color=method_color("BP"), ls=":", label="BP (K=1), predicted"))
    return out


def _method_patches(names) -> list:
    return [Patch(facecolor=method_color(m), edgecolor="black", linewidth=0.3, label=m) for m in order_methods(names)]


def _family_grid(c: pd.DataFrame, row_key: str):
    """(row values, families): the facet rows (settings) and columns (method families)."""
    rows = _panels(c[row_key])
    fams = _families(c) or [None]
    return rows, fams


def _wrap(rows: list, fams: list) -> tuple[list[tuple], int]:
    """([(row value, its families)], columns): a row of panels holds at most MAX_FAMILY_COLS
    families; more (MAN, AugLocal beside the four) continue on the next row of the same setting,
    so no panel is narrower than a quarter of two paper columns."""
    n = min(len(fams), MAX_FAMILY_COLS)
    chunks = [fams[i:i + n] for i in range(0, len(fams), n)]
    return [(r, chunk) for r in rows for chunk in chunks], n


def _panel_rows(c: pd.DataFrame, row_key: str, row: str, family: str | None) -> pd.DataFrame:
    sub = c[c[row_key] == row]
    if family is None:
        return sub
    return sub[sub["method"].isin(global_methods()) | (sub["name"].map(family_of) == family)]


# ----- the figures -------------------------------------------------------------------------------
def memory_vs_k(cfg: pd.DataFrame) -> Figure | str:
    c = main_variants(cfg[cfg["shown_bytes"].notna()]) if not cfg.empty else cfg
    if c.empty:
        return "no successful run has a measured or predicted peak memory"
    c = compact_settings(c)
    grid, ncols = _wrap(*_family_grid(c, "setting"))
    handles_n = c["name"].nunique() + 2 + c["shown_source"].nunique()
    with style():
        fig, axes = _facets(len(grid), ncols, _legend_rows(handles_n, ncols), sharey="row")
        drawn: set[str] = set()
        for i, (s, fams) in enumerate(grid):
            unit, scale = memory_unit(float(c.loc[c["setting"] == s, "shown_bytes"].max()))
            for j, fam in enumerate(fams):
                ax = axes[i, j]
                drawn |= set(_bars(ax, _panel_rows(c, "setting", s, fam), "shown_bytes", scale, source="shown_source"))
                _title(ax, fam, s)
                ax.set_ylabel(f"peak memory ({unit})")
        _hide_empty(axes)
        _legend(fig, _method_patches(drawn) + _bp_handles(c, "shown_source") + _source_handles(c["shown_source"]), ncols)
    return fig


def breakdown(cfg: pd.DataFrame) -> Figure | str:
    c = cfg[cfg["breakdown_source"].notna()] if not cfg.empty else cfg
    c = main_variants(c) if not c.empty else c
    if c.empty:
        return "no successful run has a memory breakdown (memory.breakdown_bytes or predicted.breakdown_bytes)"
    # per setting: BP and, for every other method, its run with the most modules (the headline)
    keep = []
    for _, g in c.groupby("setting", sort=False):
        for _, h in g.groupby("name", sort=False):
            keep.append(h.sort_values(["modules", "k"], na_position="first").index[-1])
    c = compact_settings(c.loc[sorted(keep)])
    settings = _panels(c["setting"])
    cols = [f"breakdown.{b}" for b in BREAKDOWN]
    n_bars = max(int((c["setting"] == s).sum()) for s in settings)
    ncols = 1 if len(settings) == 1 else 2
    nrows = math.ceil(len(settings) / ncols)
    with style():
        fig, axes = _facets(nrows, ncols, _legend_rows(len(BREAKDOWN), ncols), panel_h=0.75 + 0.22 * n_bars)  # room for two-line labels
        for ax, s in zip(axes.ravel(), settings):
            sub = c[c["setting"] == s]
            order = sorted(range(len(sub)), key=lambda i: _order_key(sub.iloc[i]))
            sub = sub.iloc[order[::-1]]  # first method on top
            unit, scale = memory_unit(float(sub[cols].sum(axis=1).max()))
            y = np.arange(len(sub))
            left = np.zeros(len(sub))
            for b in BREAKDOWN:
                v = sub[f"breakdown.{b}"].fillna(0).to_numpy() / scale
                ax.barh(y, v, left=left, color=BREAKDOWN_COLORS[b], edgecolor="white", linewidth=0.3, height=0.75)
                left += v
            # one source in the panel: said once in the title, else per bar
            mixed = sub["breakdown_source"].nunique() > 1
            labels = [
                r["name"] + ("" if r["method"] == "bp" else
                             f", K={r['k']}" if r["method"] in global_methods() else
                             f", {k_text(r['k'], r['modules'], sep=' ')}")
                + (" (pred.)" if mixed and r["breakdown_source"] == "predicted" else "")
                for _, r in sub.iterrows()
            ]
            ax.set_yticks(y, [textwrap.fill(t, 34) for t in labels])  # long labels squeeze the panel
            ax.set_xlabel(f"live at the peak ({unit})")
            only = sub["breakdown_source"].iloc[0]
            ax.set_title(s + ("" if mixed else f" ({'predicted' if only == 'predicted' else 'measured'})"))
            ax.grid(axis="y", visible=False)
        _hide_empty(axes, zero_floor=False)
        handles = [Patch(facecolor=BREAKDOWN_COLORS[b], label=BREAKDOWN_LABELS[b]) for b in BREAKDOWN]
        fig.legend(handles=handles, loc="outside lower center", ncols=4 if ncols > 1 else 2, fontsize="small")
    return fig


def _order_key(r) -> tuple:
    return (method_sort_key(r["name"]), r["k"])


def pff(cfg: pd.DataFrame) -> Figure | str:
    """PFF: one aux step's activations and the whole-step peak by patch grid n and execution."""
    if cfg.empty:
        return "no successful runs"
    local = cfg[~cfg["method"].isin(global_methods()) & cfg["aux_step_bytes"].notna()]
    groups = [g for _, g in local.groupby(["setting", "method", "variant", "k", local["modules"].fillna(-1), "hilo"], sort=False)
              if g["pff_grid"].nunique() > 1]
    if not groups:
        return ("no configuration has an aux-step peak (memory/predicted.aux_scope_peak_bytes) at more than "
                "one PFF patch grid n (--pff-grid 1/2/4)")
    c = compact_settings(pd.concat(groups))
    c = c.assign(row=[f"{s} · {k_text(k, m, sep=' ')}" for s, k, m in zip(c["setting"], c["k"], c["modules"])])
    rows, fams = _panels(c["row"]), _families(c)
    quantities = (("aux_step_bytes", "one aux step"), ("shown_bytes", "whole step (peak)"))
    n_exec = c["pff_exec"].nunique()
    with style():
        fig, axes = _facets(len(rows) * 2, len(fams), _legend_rows(len(fams) * n_exec + 2, len(fams)), panel_h=1.6)
        used: dict[tuple[str, str], None] = {}
        for i, row in enumerate(rows):
            for q, (col, what) in enumerate(quantities):
                sub_row = c[c["row"] == row]
                unit, scale = memory_unit(float(sub_row[col].max()))
                for j, fam in enumerate(fams):
                    ax = axes[2 * i + q, j]
                    sub = sub_row[sub_row["name"].map(family_of) == fam]
                    for hilo, ex in sorted({(h, e) for h, e in zip(sub["hilo"], sub["pff_exec"])}):
                        line = sub[(sub["hilo"] == hilo) & ((sub["pff_exec"] == ex) | (sub["pff_grid"] == 1))]
                        line = line.drop_duplicates("pff_grid").sort_values("pff_grid")
                        if len(line) < 1:
                            continue
                        colour = method_color(f"{fam}+HPFF (n=2)" if hilo else f"{fam}+PFF (n=2)")
                        ax.plot(line["pff_grid"], line[col] / scale, color=colour,
                                ls="-" if ex == "batched" else "--", marker="o" if ex == "batched" else "s",
                                ms=3.5, lw=1.0, mfc=colour if ex == "batched" else "white")
                        used[(fam, f"{'HiLo + ' if hilo else ''}PFF, {ex} patches")] = None
                    ax.set_xscale("log", base=2)
                    ax.set_xticks([1, 2, 4], ["n=1", "n=2", "n=4"])
                    ax.minorticks_off()
                    ax.set_ylim(bottom=0)
                    ax.set_title(f"{fam}: {what}\n{row}")
                    ax.set_ylabel(unit)
        _hide_empty(axes)
        handles = [
            Line2D([], [], color=method_color(f"{fam}+HPFF (n=2)" if "HiLo" in text else f"{fam}+PFF (n=2)"),
                   ls="-" if "batched" in text else "--", marker="o" if "batched" in text else "s", ms=3.5,
                   mfc="white" if "streamed" in text else None, label=f"{fam}: {text}")
            for fam, text in used
        ]
        _legend(fig, handles, len(fams))
    return fig


def accuracy_vs_memory(cfg: pd.DataFrame, pareto: pd.Series) -> Figure | str:
    c = cfg[cfg["error_mean"].notna() & cfg["acc_memory_bytes"].notna()] if not cfg.empty else cfg
    if c.empty:
        has_acc = not cfg.empty and cfg["error_mean"].notna().any()
        return ("runs with an accuracy have no peak memory (measured or predicted) for the same configuration"
                if has_acc else "no successful run has an accuracy (accuracy.test_error_pct or accuracy.top1)")
    # a panel says which batch its memory is at where that is not the training batch
    c = c.copy()
    epochs = [f"{int(e)} epoch{'s' if e != 1 else ''}" if e == e else "epochs ?" for e in c["epochs"]]
    mem = ["" if mb == b else f", memory at batch {int(mb)}" for mb, b in zip(c["acc_memory_batch"], c["batch_size"])]
    c["setting"] = [f"{s}\n{e}{m}" for s, e, m in zip(c["setting"], epochs, mem)]
    grid, ncols = _wrap(*_family_grid(c, "setting"))
    any_predicted = (c["acc_memory_source"] == "predicted").any()
    names = order_methods(c["name"])
    with style():
        fig, axes = _facets(len(grid), ncols, _legend_rows(len(names) + 1 + any_predicted, ncols),
                            panel_h=2.1, sharey="row")
        for i, (s, fams) in enumerate(grid):
            unit, scale = memory_unit(float(c.loc[c["setting"] == s, "acc_memory_bytes"].max()))
            for j, fam in enumerate(fams):
                ax = axes[i, j]
                sub = _panel_rows(c, "setting", s, fam)
                for _, r in sub.iterrows():
                    col = method_color(r["name"])
                    ax.errorbar(
                        r["acc_memory_bytes"] / scale, r["error_mean"],
                        yerr=None if np.isnan(r["error_std"]) else r["error_std"],
                        fmt=method_marker(r["name"]), color=col,
                        mfc="white" if r["acc_memory_source"] == "predicted" else col,
                        ms=4, capsize=2, elinewidth=0.8, zorder=3,
                    )
                front = sub[pareto.reindex(sub.index).fillna(False).astype(bool)].sort_values("acc_memory_bytes")
                if len(front) >= 1:
                    ax.step(front["acc_memory_bytes"] / scale, front["error_mean"], where="post",
                            color="#555555", ls="--", lw=0.8, zorder=2)
                ax.set_xlabel(f"peak memory ({unit})")
                ax.set_ylabel("test error (%)")
                _title(ax, fam, s)
        _hide_empty(axes, zero_floor=False)
        handles = [Line2D([], [], marker=method_marker(m), color=method_color(m), ls="", label=m) for m in names]
        handles.append(Line2D([], [], color="#555555", ls="--", lw=0.8, label="Pareto front"))
        if any_predicted:
            handles.append(Line2D([], [], marker="o", color="#555555", mfc="white", ls="", label="memory predicted"))
        _legend(fig, handles, ncols)
    return fig


def parity(cfg: pd.DataFrame) -> Figure | str:
    """One panel per family (BP and GC together): each point one configuration, in the family's
    colour; which point is which is in the prediction_error table (a legend of 30 shades is not)."""
    c = cfg[cfg["measured_bytes"].notna() & cfg["comparable_bytes"].notna()] if not cfg.empty else cfg
    if c.empty:
        return PARITY_MISSING
    unit, scale = memory_unit(float(max(c["measured_bytes"].max(), c["comparable_bytes"].max())))
    fams = (["BP / GC"] if c["method"].isin(global_methods()).any() else []) + _families(c)
    sources = [s for s in ("cuda-allocator", "tensor-tracker") if s in set(c["measured_source"])]
    markers = {"cuda-allocator": "o", "tensor-tracker": "s"}
    source_text = {
        "cuda-allocator": "CUDA allocator vs predicted allocator peak (filled)",
        "tensor-tracker": "live-tensor tracker vs predicted live tensors (hollow)",
    }
    x_all = c["measured_bytes"].to_numpy() / scale
    y_all = c["comparable_bytes"].to_numpy() / scale
    lo, hi = float(min(x_all.min(), y_all.min())), float(max(x_all.max(), y_all.max()))
    log = hi / max(lo, 1e-12) > 20
    lo, hi = (lo / 1.5, hi * 1.5) if log else (0.0, hi * 1.1)
    ncols = min(len(fams), 4)
    nrows = math.ceil(len(fams) / ncols)
    colour = {f: method_color("GC" if f == "BP / GC" else f) for f in fams}
    with style():
        side = (DOUBLE - 0.8) / ncols if ncols > 1 else COLUMN * 0.75
        fig, axes = _facets(nrows, ncols, math.ceil((len(fams) + len(sources) + 1) / 2), panel_h=side + 0.45)
        for ax, fam in zip(axes.ravel(), fams):
            sub = c[c["method"].isin(global_methods())] if fam == "BP / GC" else c[c["name"].map(family_of) == fam]
            line = np.linspace(max(lo, 1e-12), hi, 200)
            ax.plot(line, line, color="#444444", lw=0.8)
            ax.fill_between(line, line * 0.9, line * 1.1, color="#999999", alpha=0.2, lw=0)
            for src, g in sub.groupby("measured_source"):
                ax.plot(g["measured_bytes"] / scale, g["comparable_bytes"] / scale, marker=markers.get(src, "D"),
                        color=colour[fam], ls="", mfc=colour[fam] if src == "cuda-allocator" else "white", ms=3.5)
            if log:
                ax.set_xscale("log")
                ax.set_yscale("log")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlabel(f"measured ({unit})")
            ax.set_ylabel(f"predicted ({unit})")
            ax.set_title(f"{fam} ({len(sub)} runs)")
        _hide_empty(axes, zero_floor=False)
        handles = [Line2D([], [], color=colour[f], marker="o", ls="", label=f) for f in fams]
        handles.append(Line2D([], [], color="#444444", lw=0.8, label="predicted = measured (band ±10 %)"))
        handles += [Line2D([], [], marker=markers[s], color="#555555", ls="",
                           mfc="#555555" if s == "cuda-allocator" else "white", label=source_text[s]) for s in sources]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    return fig


def _short_device(d: str | None) -> str:
    if not d:
        return ""
    d = re.sub(r"\((R|TM)\)|NVIDIA |Processor|CPU", "", str(d))
    d = re.sub(r"\s+", " ", d).strip()
    return d if len(d) <= 30 else d[:29] + "…"


def speed(cfg: pd.DataFrame) -> Figure | str:
    c = cfg[cfg["step_seconds"].notna()] if not cfg.empty else cfg
    c = main_variants(c) if not c.empty else c
    if c.empty:
        return "no run has timings (timing.step_seconds)"
    if "speed_shared" in c:  # timed while another run shared the machine: not a result
        c = c[~c["speed_shared"].fillna(False).astype(bool)]
        if c.empty:
            return ("every timed run shared the machine with another run (their records overlap in time "
                    "on one host; see the speed table): run the profiles one at a time (sweep --jobs 1)")
    c = compact_settings(c)
    c = c.assign(panel=[
        f"{s}\n{_short_device(d)}" if isinstance(d, str) and d else s for s, d in zip(c["setting"], c["speed_device"])
    ], step_ms=c["step_seconds"] * 1000, q1_ms=c["step_q1"] * 1000, q3_ms=c["step_q3"] * 1000)
    c = c.assign(flop_eff=flop_efficiency(c))
    panels, all_fams = _family_grid(c, "panel")
    # per setting the step time, and under it, where the records have FLOPs, the FLOP efficiency
    rows = [(p, "step_ms") for p in panels]
    rows += [(p, "flop_eff") for p in panels if c.loc[c["panel"] == p, "flop_eff"].notna().any()]
    rows.sort(key=lambda r: panels.index(r[0]))
    grid, ncols = _wrap(rows, all_fams)
    with style():
        fig, axes = _facets(len(grid), ncols, _legend_rows(c["name"].nunique() + 2, ncols), sharey="row")
        drawn: set[str] = set()
        for i, ((p, value), fams) in enumerate(grid):
            for j, fam in enumerate(fams):
                ax = axes[i, j]
                sub = _panel_rows(c, "panel", p, fam)
                if value == "step_ms":
                    plain = {(int(r["k"]), r["modules"]): r for _, r in sub.iterrows()
                             if r["method"] not in global_methods() and r["name"] == fam}
                    drawn |= set(_bars(ax, sub, "step_ms", 1.0, err=("q1_ms", "q3_ms"), noise_ref=plain))
                    _title(ax, fam, p)
                else:
                    drawn |= set(_bars(ax, sub[sub["flop_eff"].notna()], "flop_eff", 1.0))
                    _title(ax, fam, f"{p.splitlines()[0]}: per FLOP")
                ax.set_ylabel("step time (ms)" if value == "step_ms" else "time ÷ FLOP ratio\nvs BP (x)")
        _hide_empty(axes)
        handles = _method_patches(drawn) + _bp_handles(c, None)
        handles.append(Line2D([], [], color="black", lw=0.6, marker="_", label="interquartile range"))
        handles.append(Line2D([], [], ls="none", marker="$n.r.$", markersize=12, color="black",
                              label="not resolved: IQR overlaps the plain method's"))
        _legend(fig, handles, ncols)
    return fig


def _case_color(row) -> str:
    """A speed case's method colour; the official code's steps take the colour of our case that
    computes the same step."""
    case = OFFICIAL_CODE_CASES.get(row["configuration"], row["configuration"])
    if case not in CASES:
        return "#8c8c8c"
    try:
        base = RunConfig(network=row["network"], k=int(row["k"]), batch_size=int(row["batch_size"]))
        return method_color(speed_config(case, base).label)
    except ConfigError:
        return "#8c8c8c"


# the cases as their options read (hpff_bench/speed_cases.py)
_CASE_NAMES = {"infopro+hpff reference": "infopro+hpff --hilo-exec reference",
               "infopro+hpff official": "infopro+hpff --variant official",
               "official code bp": "HPFF's official code: its E2E path",
               "official code infopro+hpff": "HPFF's official code: infopro+hpff",
               "official infopro code infopro": "InfoPro's official code: infopro"}


def side_by_side(sb: pd.DataFrame) -> Figure | str:
    """One row per run: step ÷ BP's per configuration (median, the range of one round, FLOPs ÷
    BP's as a diamond), and beside it the FLOP efficiency (time ratio ÷ FLOP ratio)."""
    if sb.empty:
        return NO_SIDE_BY_SIDE
    runs = list(dict.fromkeys(sb["run"]))
    heights = [0.17 * (sb["run"] == r).sum() + 0.45 for r in runs]
    with style():
        fig = Figure(figsize=(DOUBLE, sum(heights) + 0.55), layout="constrained", dpi=DPI)
        axes = fig.subplots(len(runs), 2, squeeze=False, sharey="row",
                            gridspec_kw={"width_ratios": [3, 2], "height_ratios": heights})
        for i, run in enumerate(runs):
            rows = sb[sb["run"] == run].reset_index(drop=True)
            y = np.arange(len(rows))
            colors = [_case_color(r) for _, r in rows.iterrows()]
            hatches = ["////" if c == "official" else "" for c in rows["code"]]
            left, right = axes[i]
            left.barh(y, rows["step_vs_bp"], color=colors, hatch=hatches, edgecolor="white", linewidth=0.3)
            have = rows["round_low"].notna() & rows["round_high"].notna()
            left.errorbar(rows.loc[have, "step_vs_bp"], y[have],
                          xerr=[rows.loc[have, "step_vs_bp"] - rows.loc[have, "round_low"],
                                rows.loc[have, "round_high"] - rows.loc[have, "step_vs_bp"]],
                          fmt="none", ecolor="black", elinewidth=0.6, capsize=1.5)
            flops = rows["flops_vs_bp"].notna()
            left.scatter(rows.loc[flops, "flops_vs_bp"], y[flops], marker="D", s=9, color="white",
                         edgecolors="black", linewidths=0.6, zorder=3)
            # the label right of whatever the row draws furthest out (bar, whisker, diamond), a fixed
            # distance in points: at BP's row the diamond sits on the bar's end
            ends = rows[["step_vs_bp", "round_high", "flops_vs_bp"]].max(axis=1)
            for yy, v, end in zip(y, rows["step_vs_bp"], ends):
                left.annotate(f"{v:.2f}", (end, yy), xytext=(4, 0), textcoords="offset points",
                              va="center", fontsize="x-small")
            left.set_xlim(0, ends.max() * 1.15)
            left.axvline(1, color="black", lw=0.6, ls="--")
            left.set_yticks(y, [_CASE_NAMES.get(c, c) for c in rows["configuration"]])
            left.invert_yaxis()
            setting, _, where = run.partition(", ")
            left.set_title(f"{setting}\n{where}", loc="left")
            left.set_xlabel("step time ÷ BP's (x)")
            eff = rows["flop_efficiency"]
            right.barh(y[eff.notna()], eff[eff.notna()], color=[c for c, e in zip(colors, eff) if e == e],
                       hatch=[h for h, e in zip(hatches, eff) if e == e], edgecolor="white", linewidth=0.3)
            for yy, v in zip(y[eff.notna()], eff[eff.notna()]):
                right.text(v * 1.01 + 0.02, yy, f"{v:.2f}", va="center", fontsize="x-small")
            right.axvline(1, color="black", lw=0.6, ls="--")
            right.set_xlim(0, max(eff.max() if eff.notna().any() else 1, 1) * 1.2)
            right.set_xlabel("time ratio ÷ FLOP ratio (x, 1 = BP's rate)")
            right.set_title("per FLOP", loc="left")
            right.tick_params(labelleft=False)
        handles = [
            Patch(facecolor="#bbbbbb", label="median over the rounds"),
            Line2D([], [], color="black", lw=0.6, marker="|", label="lowest / highest of one round"),
            Line2D([], [], ls="none", marker="D", markersize=3, markerfacecolor="white",
                   markeredgecolor="black", label="FLOPs ÷ BP's"),
            Line2D([], [], color="black", lw=0.6, ls="--", label="BP"),
        ]
        if (sb["code"] == "official").any():
            handles.append(Patch(facecolor="#bbbbbb", hatch="////", edgecolor="white",
                                 label="the official code's own step"))
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small",
                   handlelength=1.5, columnspacing=1.0)
    return fig


FIGURES = ("memory_vs_k", "breakdown", "pff", "accuracy_vs_memory", "prediction_parity", "speed")
# drawn from suites/test_method_speed.py's runs (Loaded.side_by_side), not from records
SIDE_BY_SIDE = "side_by_side"


def all_figures(cfg: pd.DataFrame, pareto: pd.Series) -> dict[str, Figure | str]:
    """Every figure of the report by name (a string where there is nothing to draw)."""
    return {
        "memory_vs_k": memory_vs_k(cfg),
        "breakdown": breakdown(cfg),
        "pff": pff(cfg),
        "accuracy_vs_memory": accuracy_vs_memory(cfg, pareto),
        "prediction_parity": parity(cfg),
        "speed": speed(cfg),
    }


def save(fig: Figure, stem) -> dict:
    """Write stem.png and stem.svg; return the PNG's size in pixels."""
    png, svg = f"{stem}.png", f"{stem}.svg"
    fig.savefig(png, dpi=DPI, metadata={"Software": None})
    # the salt is read when the SVG is written, so it is set here (not in style(), which a figure
    # has left by then): without it every render names its clip paths anew (uuid4), and each
    # re-rendered report rewrote every SVG
    with mpl.rc_context({"svg.hashsalt": "hpff-bench"}):
        fig.savefig(svg, metadata={"Date": None, "Creator": None})
    w, h = fig.get_size_inches()
    return {"png": png, "svg": svg, "width_px": round(w * DPI), "height_px": round(h * DPI)}
