"""The report's figures, drawn on `matplotlib.figure.Figure` (no pyplot, no global state).

Each function takes the per-configuration frame (`tables.configs`) and returns a `Figure`, or a
string saying why there is nothing to draw. Sizes are fixed (no tight bounding box), so a
figure is exactly `figsize * DPI` pixels: one paper column (3.5 in) wide, two (7 in) where it
has several panels or long labels.
"""

from __future__ import annotations

import contextlib
import math
import re

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from hpff_bench.report.style import (
    BREAKDOWN,
    BREAKDOWN_COLORS,
    BREAKDOWN_LABELS,
    SOURCES,
    memory_unit,
    method_color,
    method_marker,
    order_methods,
)
from hpff_bench.report.tables import GLOBAL_METHODS, PARITY_MISSING, natural_key

DPI = 200
COLUMN = 3.5  # inches: one column of a two-column paper
DOUBLE = 7.0
PANEL_H = 2.3


@contextlib.contextmanager
def style():
    rc = {
        "svg.hashsalt": "hpff-bench",  # deterministic SVG ids
        "hatch.linewidth": 0.5,
        "legend.frameon": False,
        "figure.dpi": DPI,
    }
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=0.85), mpl.rc_context(rc):
        yield


def _grid(n_panels: int, legend_rows: int, panel_h: float = PANEL_H, single_width: float = COLUMN):
    ncols = 1 if n_panels == 1 else 2
    nrows = math.ceil(n_panels / ncols)
    width = single_width if ncols == 1 else DOUBLE
    height = panel_h * nrows + 0.16 * legend_rows + 0.25
    fig = Figure(figsize=(width, height), layout="constrained", dpi=DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels], ncols


def _legend(fig: Figure, handles: list, ncols_fig: int) -> None:
    ncol = 2 if ncols_fig == 1 else 4
    fig.legend(handles=handles, loc="outside lower center", ncols=ncol, fontsize="small",
               handlelength=1.5, columnspacing=1.0)


def _legend_rows(n_handles: int, ncols_fig: int) -> int:
    return math.ceil(n_handles / (2 if ncols_fig == 1 else 4))


def _source_handles(sources) -> list:
    return [
        Patch(facecolor="#dddddd", edgecolor="black", linewidth=0.3, hatch=SOURCES[s][0], label=SOURCES[s][1])
        for s in SOURCES if s in set(sources)
    ]


def _x_groups(rows: pd.DataFrame) -> list[tuple[int, int | None]]:
    """x positions: one per K, split by real module count where runs at one K differ in it."""
    groups: list[tuple[int, int | None]] = []
    for k in sorted({int(k) for k in rows["k"]}):
        at_k = rows[(rows["k"] == k) & ~rows["method"].isin(GLOBAL_METHODS)]
        mods = sorted({int(m) for m in at_k["modules"].dropna()})
        groups += [(k, m) for m in mods] if mods else [(k, None)]
    return groups


def _group_of(r, groups) -> int:
    k = int(r["k"])
    m = r["modules"]
    if r["method"] not in GLOBAL_METHODS and m == m and m is not None and (k, int(m)) in groups:
        return groups.index((k, int(m)))
    same_k = [i for i, g in enumerate(groups) if g[0] == k]
    exact = [i for i in same_k if groups[i][1] in (k, None)]
    return (exact or same_k)[0]


def _tick(g: tuple[int, int | None]) -> str:
    k, m = g
    return f"K={k}" if m in (None, k) else f"K={k}\n({m} mod.)"


def _grouped_bars(ax, sub: pd.DataFrame, value: str, source: str | None, scale: float, methods: list[str]):
    """Bars per method at each K (present methods only, centred); BP (K=1) as a reference line."""
    others = sub[sub["method"] != "bp"]
    bp = sub[sub["method"] == "bp"]
    if others.empty:  # only BP here: draw it as a bar so the panel is not empty
        others, bp = bp, bp.iloc[0:0]
    groups = _x_groups(others)
    members: dict[int, list] = {i: [] for i in range(len(groups))}
    for _, r in others.iterrows():
        members[_group_of(r, groups)].append(r)
    order = {m: i for i, m in enumerate(methods)}
    widest = max(len(v) for v in members.values())
    width = min(0.8 / widest, 0.3)
    present = set()
    for xi, rows in members.items():
        rows = sorted(rows, key=lambda r: order.get(r["name"], len(order)))
        for j, r in enumerate(rows):
            src = r[source] if source else None
            ax.bar(
                xi + (j - (len(rows) - 1) / 2) * width, r[value] / scale, width,
                color=method_color(r["name"]), edgecolor="black", linewidth=0.3,
                hatch=SOURCES.get(src, ("xx", ""))[0] if source else None,
            )
            present.add(r["name"])
    if not bp.empty:
        r = bp.iloc[0]
        measured = source is None or r[source] != "predicted"
        ax.axhline(r[value] / scale, color=method_color("BP"), lw=1.0, ls="--" if measured else ":", zorder=3)
    ax.set_xticks(range(len(groups)), [_tick(g) for g in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(bottom=0)
    ax.grid(axis="x", visible=False)
    return present


def _panels(values) -> list[str]:
    return sorted(dict.fromkeys(values), key=natural_key)


def _short_device(d: str | None) -> str:
    if not d:
        return ""
    d = re.sub(r"\((R|TM)\)|NVIDIA |Processor|CPU", "", str(d))
    return _short(re.sub(r"\s+", " ", d).strip(), 34)


def memory_vs_k(cfg: pd.DataFrame) -> Figure | str:
    c = cfg[cfg["shown_bytes"].notna()] if not cfg.empty else cfg
    if c.empty:
        return "no successful run has a measured or predicted peak memory"
    settings = _panels(c["setting"])
    methods = order_methods(c.loc[c["method"] != "bp", "name"]) or order_methods(c["name"])
    has_bp = (c["method"] == "bp").any() and (c["method"] != "bp").any()
    n_handles = len(methods) + 2 * int(has_bp) + c["shown_source"].nunique()
    with style():
        fig, axes, ncols = _grid(len(settings), _legend_rows(n_handles, 1 if len(settings) == 1 else 2))
        used = set()
        for ax, s in zip(axes, settings):
            sub = c[c["setting"] == s]
            unit, scale = memory_unit(float(sub["shown_bytes"].max()))
            used |= set(_grouped_bars(ax, sub, "shown_bytes", "shown_source", scale, methods))
            ax.set_title(s)
            ax.set_ylabel(f"peak memory ({unit})")
        handles = [Patch(facecolor=method_color(m), edgecolor="black", linewidth=0.3, label=m) for m in methods if m in used]
        if has_bp:
            bp_src = set(c.loc[c["method"] == "bp", "shown_source"])
            if bp_src - {"predicted"}:
                handles.append(Line2D([], [], color=method_color("BP"), ls="--", label="BP (K=1)"))
            if "predicted" in bp_src:
                handles.append(Line2D([], [], color=method_color("BP"), ls=":", label="BP (K=1), predicted"))
        handles += _source_handles(c["shown_source"])
        _legend(fig, handles, ncols)
    return fig


def breakdown(cfg: pd.DataFrame) -> Figure | str:
    c = cfg[cfg["breakdown_source"].notna()] if not cfg.empty else cfg
    if c.empty:
        return "no successful run has a memory breakdown (memory.breakdown_bytes or predicted.breakdown_bytes)"
    cols = [f"breakdown.{b}" for b in BREAKDOWN]
    totals = c[cols].sum(axis=1, min_count=1)
    settings = _panels(c["setting"])
    labels = {
        i: f"{r['name']}, K={r['k']}" + (" (pred.)" if r["breakdown_source"] == "predicted" else "")
        for i, r in c.iterrows()
    }
    longest = max(len(v) for v in labels.values())
    n_bars = max(int((c["setting"] == s).sum()) for s in settings)
    with style():
        panel_h = 0.55 + 0.17 * n_bars
        ncols_probe = 1 if len(settings) == 1 else 2
        fig, axes, ncols = _grid(
            len(settings), _legend_rows(len(BREAKDOWN), ncols_probe), panel_h,
            single_width=COLUMN if longest <= 30 else DOUBLE,
        )
        for ax, s in zip(axes, settings):
            sub = c[c["setting"] == s].iloc[::-1]  # first method on top
            unit, scale = memory_unit(float(totals[sub.index].max()))
            y = np.arange(len(sub))
            left = np.zeros(len(sub))
            for b in BREAKDOWN:
                v = sub[f"breakdown.{b}"].fillna(0).to_numpy() / scale
                ax.barh(y, v, left=left, color=BREAKDOWN_COLORS[b], edgecolor="white", linewidth=0.3, height=0.75)
                left += v
            ax.set_yticks(y, [labels[i] for i in sub.index])
            ax.set_xlabel(f"memory at the peak ({unit})")
            ax.set_title(s)
            ax.grid(axis="y", visible=False)
        handles = [Patch(facecolor=BREAKDOWN_COLORS[b], label=BREAKDOWN_LABELS[b]) for b in BREAKDOWN]
        _legend(fig, handles, ncols)
    return fig


def accuracy_vs_memory(cfg: pd.DataFrame, pareto: pd.Series) -> Figure | str:
    c = cfg[cfg["error_mean"].notna() & cfg["shown_bytes"].notna()] if not cfg.empty else cfg
    if c.empty:
        has_acc = not cfg.empty and cfg["error_mean"].notna().any()
        return ("runs with an accuracy have no peak memory (measured or predicted) for the same configuration"
                if has_acc else "no successful run has an accuracy (accuracy.test_error_pct or accuracy.top1)")
    settings = _panels(c["setting"])
    methods = order_methods(c["name"])
    any_predicted = (c["shown_source"] == "predicted").any()
    n_handles = len(methods) + 1 + int(any_predicted)
    with style():
        fig, axes, ncols = _grid(len(settings), _legend_rows(n_handles, 1 if len(settings) == 1 else 2), 2.6)
        for ax, s in zip(axes, settings):
            sub = c[c["setting"] == s]
            unit, scale = memory_unit(float(sub["shown_bytes"].max()))
            for _, r in sub.iterrows():
                col = method_color(r["name"])
                predicted = r["shown_source"] == "predicted"
                ax.errorbar(
                    r["shown_bytes"] / scale, r["error_mean"],
                    yerr=None if np.isnan(r["error_std"]) else r["error_std"],
                    fmt=method_marker(r["name"]), color=col, mfc="white" if predicted else col,
                    ms=5, capsize=2, elinewidth=0.8, zorder=3,
                )
                if r["method"] != "bp":
                    ax.annotate(f"K{r['k']}", (r["shown_bytes"] / scale, r["error_mean"]), fontsize=5,
                                xytext=(3, 3), textcoords="offset points")
            front = sub[pareto.reindex(sub.index).fillna(False).astype(bool)].sort_values("shown_bytes")
            if len(front) >= 1:
                ax.step(front["shown_bytes"] / scale, front["error_mean"], where="post",
                        color="#555555", ls="--", lw=0.8, zorder=2)
            ax.set_xlabel(f"peak memory ({unit})")
            ax.set_ylabel("test error (%)")
            ax.set_title(s)
        handles = [
            Line2D([], [], marker=method_marker(m), color=method_color(m), ls="", label=m) for m in methods
        ]
        handles.append(Line2D([], [], color="#555555", ls="--", lw=0.8, label="Pareto front"))
        if any_predicted:
            handles.append(Line2D([], [], marker="o", color="#555555", mfc="white", ls="", label="memory predicted"))
        _legend(fig, handles, ncols)
    return fig


def parity(cfg: pd.DataFrame) -> Figure | str:
    c = cfg[cfg["measured_bytes"].notna() & cfg["comparable_bytes"].notna()] if not cfg.empty else cfg
    if c.empty:
        return PARITY_MISSING
    unit, scale = memory_unit(float(max(c["measured_bytes"].max(), c["comparable_bytes"].max())))
    methods = order_methods(c["name"])
    sources = [s for s in ("cuda-allocator", "tensor-tracker") if s in set(c["measured_source"])]
    markers = {"cuda-allocator": "o", "tensor-tracker": "s"}
    source_text = {
        "cuda-allocator": "CUDA allocator vs predicted allocator peak",
        "tensor-tracker": "tensor tracker (CPU) vs predicted live tensors",
    }
    with style():
        n_handles = len(methods) + len(sources)
        fig, axes, ncols = _grid(1, _legend_rows(n_handles, 1) + len(sources), panel_h=COLUMN * 0.85)
        ax = axes[0]
        x = c["measured_bytes"].to_numpy() / scale
        y = c["comparable_bytes"].to_numpy() / scale
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        log = hi / max(lo, 1e-12) > 20
        lo, hi = (lo / 1.5, hi * 1.5) if log else (0.0, hi * 1.1)
        line = np.linspace(max(lo, 1e-12), hi, 200)
        ax.plot(line, line, color="#444444", lw=0.8)
        ax.fill_between(line, line * 0.9, line * 1.1, color="#999999", alpha=0.2, lw=0)
        for (_, r), xi, yi in zip(c.iterrows(), x, y):
            src = r["measured_source"]
            ax.plot(xi, yi, marker=markers.get(src, "D"), color=method_color(r["name"]), ls="",
                    mfc=method_color(r["name"]) if src == "cuda-allocator" else "white", ms=5)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(f"measured peak ({unit})")
        ax.set_ylabel(f"predicted peak ({unit})")
        ax.set_title("predicted vs measured (band: ±10 %)")
        handles = [Line2D([], [], marker="o", color=method_color(m), ls="", label=m) for m in methods]
        _legend(fig, handles, ncols)
        src_handles = [
            Line2D([], [], marker=markers[s], color="#555555", ls="",
                   mfc="#555555" if s == "cuda-allocator" else "white", label=source_text[s])
            for s in sources
        ]
        ax.legend(handles=src_handles, loc="upper left", fontsize="x-small")
    return fig


def speed(cfg: pd.DataFrame) -> Figure | str:
    c = cfg[cfg["images_per_second"].notna()] if not cfg.empty else cfg
    if c.empty:
        return "no run has timings (timing.images_per_second)"
    c = c.assign(panel=[
        f"{s}\n{_short_device(d)}" if isinstance(d, str) and d else s for s, d in zip(c["setting"], c["speed_device"])
    ])
    panels = _panels(c["panel"])
    methods = order_methods(c.loc[c["method"] != "bp", "name"]) or order_methods(c["name"])
    has_bp = (c["method"] == "bp").any() and (c["method"] != "bp").any()
    with style():
        fig, axes, ncols = _grid(len(panels), _legend_rows(len(methods) + int(has_bp), 1 if len(panels) == 1 else 2))
        used = set()
        for ax, p in zip(axes, panels):
            sub = c[c["panel"] == p]
            used |= set(_grouped_bars(ax, sub, "images_per_second", None, 1.0, methods))
            ax.set_ylabel("images / s")
            ax.set_title(p)
        handles = [Patch(facecolor=method_color(m), edgecolor="black", linewidth=0.3, label=m) for m in methods if m in used]
        if has_bp:
            handles.append(Line2D([], [], color=method_color("BP"), ls="--", label="BP (K=1)"))
        _legend(fig, handles, ncols)
    return fig


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def save(fig: Figure, stem) -> dict:
    """Write stem.png and stem.svg; return the PNG's size in pixels."""
    png, svg = f"{stem}.png", f"{stem}.svg"
    fig.savefig(png, dpi=DPI, metadata={"Software": None})
    fig.savefig(svg, metadata={"Date": None, "Creator": None})
    w, h = fig.get_size_inches()
    return {"png": png, "svg": svg, "width_px": round(w * DPI), "height_px": round(h * DPI)}
