"""Does HPFF save memory? Base method -> + HiLo -> + PFF, one step at a time, per PFF execution.

Why: the HPFF paper claims memory for PFF; whether a step saves anything, and in which term, is
what this project measures. Each step is compared with the one before it (PFF with HiLo, HiLo
with the plain method; the official execution's PFF with its own HiLo) in three quantities: the
allocated peak (live tensors and their blocks), the reserved peak (+ the allocator's cache) and
the device total (+ the CUDA context). A step that moves the reserve but not the allocated
peak changed only what the allocator keeps cached, not what the step needs.

Rows come from the records (measured on a GPU where a profile exists, else predicted):
DGL, InfoPro and PredSim, InfoPro only on HPFF's loss settings (2c2f, cross-entropy), so that
only the step changes; suites/cifar10.toml's "decomposition" grids run them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hpff_bench.report.figures import (
    _facets,
    _legend,
    _legend_rows,
    _method_patches,
    compact_settings,
    style,
)
from hpff_bench.report.style import MIB, family_of, method_color
from hpff_bench.report.tables import Table, memory_value, natural_key, ok_rows

METHODS = ("dgl", "infopro", "predsim")
# step -> (label, the step it is compared with)
STEPS = {
    "base": ("base method", None),
    "hilo": ("+ HiLo", "base"),
    "pff-batched": ("+ PFF, batched patches", "hilo"),
    "pff-streamed": ("+ PFF, streamed patches", "hilo"),
    "official-hilo": ("+ HiLo, official execution", "base"),
    "official-pff": ("+ PFF, official quadrant decoders", "official-hilo"),
}
SHORT = {"base": "base", "hilo": "+HiLo", "pff-batched": "+PFF batched", "pff-streamed": "+PFF streamed",
         "official-hilo": "+HiLo official", "official-pff": "+PFF official"}
QUANTITIES = ("allocated", "least_device", "reserved", "device")
COLUMN = {"allocated": "allocated", "least_device": "least device", "reserved": "reserved", "device": "device"}
WHY = ("no configuration has a plain method and its HiLo step at one setting and module count "
       "(DGL / InfoPro on HPFF's loss settings / PredSim; suites/cifar10.toml, grids "
       "\"decomposition\" and \"decomposition-official\")")


def step_of(r) -> str | None:
    """A record's step in the decomposition, or None where it is not one."""
    if r["method"] not in METHODS:
        return None
    if r["method"] == "infopro" and (r.get("aux") != "2c2f" or r.get("local_loss") != "ce"):
        return None
    if r.get("variant") == "official":
        return "official-pff" if int(r["pff_grid"]) == 2 else "official-hilo"
    if not bool(r["independent"]) or (r.get("pff_on") not in (None, "both") and r["pff_on"] == r["pff_on"]):
        return None
    if not r["hilo"]:
        return "base" if int(r["pff_grid"]) == 1 else None
    if int(r["pff_grid"]) == 1:
        return "hilo"
    if int(r["pff_grid"]) == 2:
        return f"pff-{r['pff_exec'] or 'batched'}"
    return None


def decomposition(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, method, modules, step): the three quantities and each step's change."""
    ok = ok_rows(df) if not df.empty else df
    if ok.empty:
        return pd.DataFrame()
    ok = ok.assign(step=[step_of(r) for _, r in ok.iterrows()])
    ok = ok[ok["step"].notna()]
    rows = []
    for (setting, _method, modules), g in ok.groupby(["setting", "method", ok["modules"].fillna(-1)], sort=False):
        have = {}
        for step in STEPS:
            runs = g[g["step"] == step]
            if not runs.empty:
                have[step] = (runs, {q: memory_value(runs, q) for q in QUANTITIES})
        if not {"base", "hilo"} <= set(have):
            continue
        for step, (runs, values) in have.items():
            label, prev = STEPS[step]
            row = {"setting": setting, "method": family_of(str(runs["label"].iloc[0])),
                   "modules": None if modules == -1 else int(modules), "step": label, "step_key": step,
                   "name": str(runs["name"].iloc[0]), "from": values["allocated"][1],
                   "compared with": STEPS[prev][0] if prev in have else None}
            for q in QUANTITIES:
                row[f"{COLUMN[q]} (MiB)"] = values[q][0] / MIB
            for q in QUANTITIES:
                row[f"change in {COLUMN[q]} (MiB)"] = (
                    (values[q][0] - have[prev][1][q][0]) / MIB if prev in have else np.nan)
            row["what moves"] = _what_moves(row) if prev in have else None
            rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = list(STEPS)
    out["_o"] = [(natural_key(s), METHODS.index(m.lower()) if m.lower() in METHODS else 9, order.index(k))
                 for s, m, k in zip(out["setting"], out["method"], out["step_key"])]
    return out.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)


def _what_moves(row) -> str:
    """The term a step moves most: live tensors (the allocated peak) or only the allocator's
    cache (reserved - allocated); the CUDA context is the same assumption for every step."""
    alloc = row["change in allocated (MiB)"]
    cache = row["change in reserved (MiB)"] - alloc
    if max(abs(alloc), abs(cache)) < 1.0:
        return "nothing (< 1 MiB)"
    term = "live tensors" if abs(alloc) >= abs(cache) else "allocator cache only"
    delta = alloc if abs(alloc) >= abs(cache) else cache
    return f"{term} ({'+' if delta > 0 else '-'}{abs(delta):,.0f} MiB)"


def decomposition_table(df: pd.DataFrame) -> Table | str:
    d = decomposition(df)
    if d.empty:
        return WHY
    data = d.drop(columns=["step_key", "name"])
    return Table(
        "hpff_decomposition", "Does HPFF save memory? Each step's change", data,
        "Each step is compared with the one it adds to: + HiLo with the base method, + PFF with + HiLo "
        "(batched patches: all patches folded into the batch; streamed: one patch at a time), the "
        "official execution's PFF (InfoPro's quadrant decoders) with its own HiLo (InfoPro's whole-map "
        "decoder swapped in: the official code has no HiLo-only path; DGL and PredSim have no official "
        "PFF). allocated = the allocator's allocated peak (live tensors and their blocks); least device "
        "= the least device memory the step runs in, the allocator giving its cache back on an "
        "out-of-memory, + the CUDA context (predicted only); reserved = + the allocator's cache a GPU "
        "with room keeps; device = reserved + the CUDA context (an assumption in predictions). 'what "
        "moves': the larger of the change in the allocated peak and the change in the cache alone.",
        {"modules": 0} | {c: 0 for c in data.columns if c.endswith("(MiB)")},
    )


def decomposition_figure(df: pd.DataFrame) -> Figure | str:
    d = decomposition(df)
    if d.empty:
        return WHY
    d = compact_settings(d)  # drop what every panel shares (e.g. ' · cifar10'): short titles
    d = d.assign(panel=[f"{s}\n{m} modules" for s, m in zip(d["setting"], d["modules"])])
    settings = sorted(dict.fromkeys(d["panel"]), key=natural_key)
    fams = [f for f in ("DGL", "InfoPro", "PredSim") if f in set(d["method"])]
    names = set(d["name"])
    with style():
        fig, axes = _facets(len(settings), len(fams), _legend_rows(3 + len(names), len(fams)), panel_h=2.4)
        for i, s in enumerate(settings):
            for j, fam in enumerate(fams):
                ax = axes[i, j]
                sub = d[(d["panel"] == s) & (d["method"] == fam)]
                if sub.empty:
                    ax.set_axis_off()
                    continue
                x = np.arange(len(sub))
                alloc = sub["allocated (MiB)"].to_numpy()
                cache = (sub["reserved (MiB)"] - sub["allocated (MiB)"]).to_numpy()
                context = (sub["device (MiB)"] - sub["reserved (MiB)"]).to_numpy()
                colours = [method_color(n) for n in sub["name"]]
                ax.bar(x, alloc, 0.7, color=colours, edgecolor="black", linewidth=0.3)
                ax.bar(x, cache, 0.7, bottom=alloc, color=colours, alpha=0.45, hatch="////",
                       edgecolor="black", linewidth=0.3)
                ax.bar(x, context, 0.7, bottom=alloc + cache, color="white", edgecolor="#777777", linewidth=0.5)
                # slanted: six steps side by side in a third of the width would run into each other
                ax.set_xticks(x, [SHORT[k] for k in sub["step_key"]], fontsize="small", rotation=35,
                              ha="right", rotation_mode="anchor")
                ax.set_title(f"{fam}\n{s}")
                ax.set_ylabel("MiB")
                ax.grid(axis="x", visible=False)
        handles = _method_patches(names) + [
            Patch(facecolor="#999999", edgecolor="black", linewidth=0.3, label="allocated peak"),
            Patch(facecolor="#999999", alpha=0.45, hatch="////", edgecolor="black", linewidth=0.3,
                  label="allocator cache (reserved - allocated)"),
            Patch(facecolor="white", edgecolor="#777777", label="CUDA context (device total - reserved)"),
        ]
        _legend(fig, handles, len(fams))
    return fig
