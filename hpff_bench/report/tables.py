"""The report's tables, computed from the flat frame of `load.read_results`.

Every table is a `Table`: `data` holds the raw numbers (written to CSV unrounded, memory in the
unit named in the column header), `render()` gives the rounded strings used for LaTeX,
Markdown and HTML. A table with no rows is not produced; `why` says what data it needs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hpff_bench.config import HPFF_INFOPRO_LAMBDAS, RunConfig
from hpff_bench.method_registry import global_methods
from hpff_bench.recipes import infopro_recipe
from hpff_bench.report import published as pub
from hpff_bench.report.style import (
    BREAKDOWN,
    BREAKDOWN_LABELS,
    family_of,
    memory_unit,
    method_sort_key,
)

MEASURED_PREFERENCE = ("cuda-allocator", "tensor-tracker")
# config fields that are the axes of a report, never part of a method's name
_AXIS_FIELDS = {
    "network", "dataset", "batch_size", "image_size", "num_classes", "k", "split", "seed",
    "steps", "warmup", "device", "lr", "momentum", "weight_decay",  # the recipe, not the method
}


@dataclass
class Table:
    name: str  # file stem
    title: str
    data: pd.DataFrame
    caption: str = ""
    decimals: dict[str, int] = field(default_factory=dict)  # per column; default 2 for floats

    def render(self) -> pd.DataFrame:
        """Strings for display: rounded numbers, '—' for missing values."""
        out = pd.DataFrame(index=self.data.index)
        for c in self.data.columns:
            nd = self.decimals.get(c, 2)
            out[c] = [_fmt(v, nd) for v in self.data[c]]
        return out


def _fmt(v, decimals: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "✓" if v else ""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if float(v).is_integer() and decimals == 0:
            return str(int(v))
        return f"{float(v):.{decimals}f}"
    return str(v)


# ----- shared aggregation ------------------------------------------------------------------
def add_method_names(df: pd.DataFrame) -> pd.DataFrame:
    """Column `name`: the label, plus a short `[...]` where runs with one label differ otherwise.

    E.g. two `DGL+HPFF (n=2)` configurations that differ only in pff_exec become
    `DGL+HPFF (n=2)` and `DGL+HPFF (n=2) [streamed]`: a value equal to the default says
    nothing, the others are written as short phrases (`_phrase`). K, batch, network and the
    like are the report's axes and never part of a name. The fields that tell a label's
    configurations apart are found over the whole report, not per setting, so one
    configuration has one name (and so one colour) in every figure and table.
    """
    df = df.copy()
    df["name"] = df["label"].astype(str)
    keys = df["config_key"].astype(str)
    for _, idx in df.groupby("label").groups.items():
        label = df.loc[idx[0], "label"]
        sub = keys.loc[idx]
        if sub.nunique() <= 1:
            continue
        fields = [_recipe_lambdas(dict(kv.split("=", 1) for kv in _pairs(k)), df.loc[i]) for i, k in zip(idx, sub)]
        names = sorted({f for d in fields for f in d})
        varying = [
            f for f in names
            if f.split(".")[0] not in _AXIS_FIELDS and len({d.get(f) for d in fields}) > 1
        ]
        for i, d in zip(idx, fields):
            phrases = list(dict.fromkeys(p for p in (_phrase(f, d) for f in varying) if p))
            df.loc[i, "name"] = f"{label} [{', '.join(phrases)}]" if phrases else label
    return df


def _recipe_lambdas(fields: dict, row) -> dict:
    """λ equal to the paper's recipe for the row's dataset / network / K (hpff_bench/recipes.toml)
    become one value, "recipe": the recipe changes λ with K, and K is an axis, not a name."""
    if row["method"] != "infopro":
        return fields
    r = infopro_recipe(str(row["dataset"]), str(row["network"]), int(row["k"]), bool(row["hilo"]))
    if r is not None and all(_same_number(fields.get(f"lambdas.{k}"), v) for k, v in vars(r.lambdas).items()):
        fields = {**fields, **{f"lambdas.{k}": "recipe" for k in vars(r.lambdas)}}
    return fields


def _same_number(text: str | None, value: float) -> bool:
    try:
        return float(text) == float(value)
    except (TypeError, ValueError):
        return False


_DEFAULTS = RunConfig(network="resnet32", method="dgl").to_dict()
_HPFF_LAMBDAS = {f"lambdas.{k}": str(v) for k, v in vars(HPFF_INFOPRO_LAMBDAS).items()}


def _phrase(field: str, d: dict) -> str | None:
    """A config value as a few words, or None where it is the default (it tells nothing)."""
    v = d.get(field)
    top = field.split(".")[0]
    if top == "lambdas":  # one phrase for the four λ fields
        if v == "recipe":
            return "paper's λ"
        if all(d.get(k) == x for k, x in _HPFF_LAMBDAS.items()):
            return "HPFF's λ"
        if all(d.get(k) == str(_DEFAULTS.get("lambdas", {}).get(k.split(".")[1])) for k in _HPFF_LAMBDAS):
            return None
        return "λ " + "/".join(d.get(k, "?") for k in sorted(_HPFF_LAMBDAS))
    if str(_DEFAULTS.get(field)) == v:
        return None
    return {
        "pff_exec": f"{v} patches", "aux": f"aux {v}", "pff_on": f"PFF on {v}",
        "local_loss": {"ce": "softmax", "supcon": "contrast"}.get(v, f"loss {v}"),
        "hilo_exec": f"{v} HiLo", "cascade_span": f"span {v}", "precision": v,
    }.get(field, f"{field} {v}")


def _pairs(config_key: str) -> list[str]:
    return [p for p in config_key.split("|") if "=" in p]


def natural_key(s) -> tuple:
    """'resnet32 · batch 64' before 'resnet110 · batch 1024', 'batch 8' before 'batch 16'."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(s)))


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def configs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, method name, K, modules): memory, breakdown, accuracy, speed."""
    ok = ok_rows(df)
    if ok.empty:
        return pd.DataFrame()
    rows = []
    for (setting, name, k, modules), g in ok.groupby(
        ["setting", "name", "k", ok["modules"].fillna(-1)], sort=False, dropna=False
    ):
        first = g.iloc[0]
        row = {
            "setting": setting, "network": first["network"], "dataset": first["dataset"],
            "batch_size": first["batch_size"], "name": name, "label": first["label"],
            "method": first["method"], "k": int(k), "modules": None if modules == -1 else int(modules),
            "hilo": bool(first["hilo"]), "independent": bool(first["independent"]),
            "pff_grid": int(first["pff_grid"]), "pff_on": first["pff_on"], "pff_exec": first["pff_exec"],
            "variant": first.get("variant", "ours"), "local_loss": first["local_loss"], "ablation": first["ablation"], "split": first["split"],
            "method_key": _method_key(first["config_key"]),
        }
        # measured memory: the best source available (allocator over tracker), median over runs
        row["measured_bytes"], row["measured_source"] = np.nan, None
        row.update({f"breakdown.{c}": np.nan for c in BREAKDOWN})
        row["breakdown_source"] = None
        for src in MEASURED_PREFERENCE:
            m = g[(g["measured_source"] == src) & g["measured_bytes"].notna()]
            if not m.empty:
                row["measured_bytes"], row["measured_source"] = float(m["measured_bytes"].median()), src
                if m[[f"measured.{c}" for c in BREAKDOWN]].notna().any().any():
                    row.update({f"breakdown.{c}": float(m[f"measured.{c}"].median()) for c in BREAKDOWN})
                    row["breakdown_source"] = src
                break
        if math.isnan(row["measured_bytes"]):  # measured by a source we do not know
            m = g[g["measured_bytes"].notna()]
            if not m.empty:
                row["measured_bytes"] = float(m["measured_bytes"].median())
                row["measured_source"] = str(m["measured_source"].iloc[0])
        row["predicted_bytes"] = float(g["predicted_bytes"].median()) if g["predicted_bytes"].notna().any() else np.nan
        live = g["predicted_live_bytes"]
        row["predicted_live_bytes"] = float(live.median()) if live.notna().any() else np.nan
        # what the measurement is compared with: the allocator's peak with the predicted allocator
        # peak; the live-tensor tracker (exact tensor bytes) with the prediction's live tensors
        row["comparable_bytes"], row["comparable_what"] = np.nan, None
        if row["measured_source"] == "cuda-allocator" and not math.isnan(row["predicted_bytes"]):
            row["comparable_bytes"], row["comparable_what"] = row["predicted_bytes"], "allocator peak"
        elif row["measured_source"] == "tensor-tracker" and not math.isnan(row["predicted_live_bytes"]):
            row["comparable_bytes"], row["comparable_what"] = row["predicted_live_bytes"], "live tensors"
        if row["breakdown_source"] is None and g[[f"predicted.{c}" for c in BREAKDOWN]].notna().any().any():
            row.update({f"breakdown.{c}": float(g[f"predicted.{c}"].median()) for c in BREAKDOWN})
            row["breakdown_source"] = "predicted"
        if not math.isnan(row["measured_bytes"]):
            row["shown_bytes"], row["shown_source"] = row["measured_bytes"], row["measured_source"]
        else:
            row["shown_bytes"] = row["predicted_bytes"]
            row["shown_source"] = None if math.isnan(row["predicted_bytes"]) else "predicted"
        # accuracy: one number per seed (the last record of a seed), mean and spread over seeds
        acc = g[g["test_error_pct"].notna()]
        if not acc.empty:
            per_seed = acc.groupby(acc["seed"].fillna(-1))["test_error_pct"].last()
            row["error_mean"] = float(per_seed.mean())
            row["error_std"] = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else np.nan
            row["seeds"] = int(len(per_seed))
            row["seed_list"] = ", ".join(str(int(s)) if s >= 0 else "?" for s in sorted(per_seed.index))
            row["seed_errors"] = [float(v) for v in per_seed.values]
            row["epochs"] = float(acc["epochs"].max()) if acc["epochs"].notna().any() else np.nan
            imgs = acc["train_images"].dropna()
            row["train_images"] = float(imgs.iloc[-1]) if not imgs.empty else np.nan
        else:
            row["error_mean"], row["error_std"], row["seeds"], row["epochs"] = np.nan, np.nan, 0, np.nan
            row["seed_list"], row["seed_errors"], row["train_images"] = "", [], np.nan
        # speed, per device: from runs timed alone where there are any (load.shared_machine)
        sp = g[g["step_seconds"].notna()]
        alone = sp[~sp["timed_shared"].fillna(False).astype(bool)] if "timed_shared" in sp else sp
        row["speed_shared"] = bool(alone.empty and not sp.empty)
        sp = sp if alone.empty else alone
        row["step_seconds"] = float(sp["step_seconds"].median()) if not sp.empty else np.nan
        # the spread of one record (the one with the most timed steps): quartiles of its steps
        spread = sp[sp["step_q1"].notna()].sort_values("timed_steps", na_position="first")
        last = spread.iloc[-1] if not spread.empty else None
        row["step_q1"] = float(last["step_q1"]) if last is not None else np.nan
        row["step_q3"] = float(last["step_q3"]) if last is not None else np.nan
        row["timed_steps"] = float(last["timed_steps"]) if last is not None else (
            float(sp["timed_steps"].max()) if not sp.empty else np.nan)
        row["flops"] = float(g["flops"].median()) if g["flops"].notna().any() else np.nan
        # one aux step's own activations: measured where the shown peak is measured, else predicted
        ma, pa = g["measured_aux_step_bytes"].dropna(), g["predicted_aux_step_bytes"].dropna()
        if not math.isnan(row["measured_bytes"]) and not ma.empty:
            row["aux_step_bytes"] = float(ma.median())
        else:
            row["aux_step_bytes"] = float(pa.median()) if not pa.empty else np.nan
        ips = g[g["images_per_second"].notna()]
        row["images_per_second"] = float(ips["images_per_second"].median()) if not ips.empty else np.nan
        row["speed_device"] = None  # the GPU's name, else the CPU's (records of schema 0: "cpu")
        for f in ("env.device_name", "env.cpu", "env.device"):
            dev = sp[f].dropna() if not sp.empty else pd.Series(dtype=object)
            if f == "env.device_name":  # CPU runs write device_name "cpu": the CPU's name says more
                dev = dev[dev.astype(str).str.lower() != "cpu"]
            if not dev.empty:
                row["speed_device"] = str(dev.iloc[0])
                break
        rows.append(row)
    out = pd.DataFrame(rows)
    out["_order"] = [(natural_key(s), method_sort_key(n), k, m if m == m and m is not None else -1)
                     for s, n, k, m in zip(out["setting"], out["name"], out["k"], out["modules"])]
    out = out.sort_values("_order", kind="stable").drop(columns="_order")
    return _accuracy_memory(out.reset_index(drop=True))


def _method_key(config_key: str) -> str:
    """The config fields that make a method what it is (every one but the report's axes): the
    same configuration across settings. Not the name: a name's `[...]` is only as long as
    one setting needs, so one configuration has other names at other batches."""
    return "|".join(p for p in _pairs(str(config_key)) if p.split("=", 1)[0].split(".")[0] not in _AXIS_FIELDS)


def _accuracy_memory(out: pd.DataFrame) -> pd.DataFrame:
    """acc_memory_*: the peak memory an accuracy is plotted against. Training often runs at
    another batch than the memory runs (the quick preset trains at 64, estimates at 1024):
    then the same configuration's peak at the largest batch measured or predicted is used, and
    `acc_memory_batch` says which batch it is."""
    out["acc_memory_bytes"] = out["shown_bytes"]
    out["acc_memory_source"] = out["shown_source"]
    out["acc_memory_batch"] = out["batch_size"].where(out["shown_bytes"].notna())
    need = out["error_mean"].notna() & out["shown_bytes"].isna()
    have = out[out["shown_bytes"].notna()]
    for i in out.index[need]:
        r = out.loc[i]
        same = have[(have["network"] == r["network"]) & (have["dataset"] == r["dataset"])
                    & (have["method_key"] == r["method_key"]) & (have["k"] == r["k"])
                    & (have["modules"].fillna(-1) == (r["modules"] if r["modules"] == r["modules"] else -1))]
        if same.empty:
            continue
        best = same.sort_values("batch_size").iloc[-1]
        out.loc[i, ["acc_memory_bytes", "acc_memory_source", "acc_memory_batch"]] = (
            best["shown_bytes"], best["shown_source"], best["batch_size"])
    return out


def k_text(k, modules, sep: str = "\n") -> str:
    """'K=16', or 'K=16 (15 mod.)' where the real module count is not K (never two equal K's)."""
    k = int(k)
    if modules is None or modules != modules or int(modules) == k:
        return f"K={k}"
    return f"K={k}{sep}({int(modules)} mod.)"


def main_variants(cfg: pd.DataFrame) -> pd.DataFrame:
    """The rows of the headline figures: BP, GC, each local method plain and with full HPFF
    (HiLo + PFF with its default batched patches), on the split most of the setting's runs use.
    Patch grids, streamed patches and the cascade ablation have their own figure and tables."""
    if cfg.empty:
        return cfg
    plain = ~cfg["hilo"] & (cfg["pff_grid"] == 1)
    hpff = cfg["hilo"] & cfg["independent"] & (cfg["pff_grid"] == 2) & (cfg["pff_exec"].fillna("batched") == "batched")
    c = cfg[cfg["method"].isin(global_methods()) | plain | hpff]
    # a '[...]' name is a second configuration of a label; drop it where the plain label is there
    plain_names = set(zip(c["setting"], c["name"]))
    bracketed = c["name"].str.contains(r" \[", regex=True)
    c = c[~bracketed | ~pd.Series([(s, lb) in plain_names for s, lb in zip(c["setting"], c["label"])], index=c.index)]
    keep = pd.Series(True, index=c.index)
    for _, g in c[~c["method"].isin(global_methods())].groupby("setting"):
        common = g["split"].astype(str).value_counts().index[0]
        keep[g.index] = g["split"].astype(str) == common
    return c[keep]


def noise_overlap(a, b) -> bool | None:
    """Two step times inside each other's noise: their interquartile ranges overlap. None where
    one has no spread to tell (no per-step times, or fewer than 4 timed steps)."""
    a1, a3, b1, b3 = a["step_q1"], a["step_q3"], b["step_q1"], b["step_q3"]
    if any(v != v for v in (a1, a3, b1, b3)) or min(a.get("timed_steps", 0) or 0, b.get("timed_steps", 0) or 0) < 4:
        return None
    return bool(a1 <= b3 and b1 <= a3)


def _bp_reference(cfg: pd.DataFrame, setting: str, column: str) -> float:
    bp = cfg[(cfg["setting"] == setting) & (cfg["method"] == "bp") & cfg[column].notna()]
    return float(bp[column].iloc[0]) if not bp.empty else np.nan


def _mem_cols(cfg: pd.DataFrame, columns: list[str]) -> tuple[str, int]:
    """A table's memory unit: GiB where every value is at least 1 GiB, else MiB (no 0.04 GiB)."""
    vals = pd.concat([cfg[c] for c in columns]).dropna() if len(cfg) else pd.Series(dtype=float)
    vals = vals[vals > 0]
    return memory_unit(float(vals.min()) if not vals.empty else None)


def _mem_decimals(unit: str, *columns: str) -> dict[str, int]:
    return {c: (2 if unit == "GiB" else 1) for c in columns}


# ----- the tables --------------------------------------------------------------------------
def memory_table(cfg: pd.DataFrame) -> Table | str:
    c = cfg[cfg["shown_bytes"].notna()] if not cfg.empty else cfg
    if c.empty:
        return "no successful run has a measured or predicted peak memory"
    unit, scale = _mem_cols(c, ["measured_bytes", "predicted_bytes"])
    rel = [
        s / _bp_reference(c, st, "shown_bytes") if not np.isnan(_bp_reference(c, st, "shown_bytes")) else np.nan
        for s, st in zip(c["shown_bytes"], c["setting"])
    ]
    data = pd.DataFrame({
        "setting": c["setting"].values,
        "method": c["name"].values,
        "K": c["k"].values,
        "modules": c["modules"].values,
        f"measured ({unit})": (c["measured_bytes"] / scale).values,
        "measured by": c["measured_source"].values,
        f"predicted CUDA peak ({unit})": (c["predicted_bytes"] / scale).values,
        "vs BP (x)": rel,
    })
    return Table(
        "memory_vs_k", "Peak memory per method and K", data,
        f"Peak memory of one training step. 'measured by' names the probe (CUDA allocator, or the "
        f"live-tensor tracker on a CPU); 'predicted CUDA peak' is the fake-tensor prediction of "
        f"max_memory_allocated on a GPU; 'vs BP' divides the measured (else predicted) peak by BP's "
        f"in the same setting. 1 {unit} = 2^{20 if unit == 'MiB' else 30} bytes.",
        {"modules": 0, "K": 0, **_mem_decimals(unit, f"measured ({unit})", f"predicted CUDA peak ({unit})")},
    )


def breakdown_table(cfg: pd.DataFrame) -> Table | str:
    c = cfg[cfg["breakdown_source"].notna()] if not cfg.empty else cfg
    if c.empty:
        return "no successful run has a memory breakdown (memory.breakdown_bytes or predicted.breakdown_bytes)"
    cols = [f"breakdown.{b}" for b in BREAKDOWN]
    totals = c[cols].sum(axis=1, min_count=1)
    unit, scale = _mem_cols(pd.DataFrame({"t": totals}), ["t"])
    data = pd.DataFrame({
        "setting": c["setting"].values, "method": c["name"].values, "K": c["k"].values,
        "source": c["breakdown_source"].values,
    })
    for b in BREAKDOWN:
        data[f"{BREAKDOWN_LABELS[b]} ({unit})"] = (c[f"breakdown.{b}"] / scale).values
    data[f"total ({unit})"] = (totals / scale).values
    return Table(
        "breakdown", "Where the memory goes", data,
        "Memory live at the peak, by category (measured where a probe gave it, else predicted).",
        {"K": 0, **_mem_decimals(unit, *[c for c in data.columns if c.endswith(f"({unit})")])},
    )


def accuracy_table(cfg: pd.DataFrame) -> Table | str:
    c = cfg[cfg["error_mean"].notna()] if not cfg.empty else cfg
    if c.empty:
        return "no successful run has an accuracy (accuracy.test_error_pct or accuracy.top1)"
    unit, scale = _mem_cols(c, ["acc_memory_bytes"])
    published = [published_error(r) for _, r in c.iterrows()]
    data = pd.DataFrame({
        "setting": c["setting"].values, "method": c["name"].values, "K": c["k"].values,
        "modules": c["modules"].values,
        "test error (%)": c["error_mean"].values, "std (%)": c["error_std"].values,
        "seeds": c["seed_list"].values, "epochs": c["epochs"].values,
        "training images": c["train_images"].values,
        "published error (%, full schedule)": [p[0] for p in published],
        "published in": [p[1] for p in published],
        f"peak memory ({unit})": (c["acc_memory_bytes"] / scale).values,
        "memory at batch": c["acc_memory_batch"].values,
        "memory from": c["acc_memory_source"].values,
        "Pareto-optimal": pareto_mask(c).values,
    })
    return Table(
        "accuracy", "Test error and peak memory", data,
        "Test error: mean over the seeds listed, std with ddof=1, after 'epochs' epochs on "
        "'training images' images ('—': the whole training set). A short schedule is not the "
        "papers' 160/400 epochs: the published error of the same network, method and module count "
        "(their full schedule, 32 px, 50,000 images) stands beside it to compare orderings, not "
        "values. Peak memory: of the same configuration, at the batch named (the training batch "
        "where a memory run used it, else the largest batch measured or predicted). "
        "Pareto-optimal: no other configuration in the same setting has both lower error and lower memory.",
        {"K": 0, "modules": 0, "epochs": 0, "training images": 0, "memory at batch": 0,
         **_mem_decimals(unit, f"peak memory ({unit})")},
    )


def published_error(r) -> tuple[float, str | None]:
    """The published test error of a configuration row of ours (first match) and its source."""
    p = _published_for(r) if r["variant"] == "ours" else []
    return (p[0].test_error_pct, pub.SHORT[p[0].source]) if p else (np.nan, None)


def pareto_mask(c: pd.DataFrame) -> pd.Series:
    """Non-dominated (lower memory, lower error) within each setting."""
    mask = pd.Series(False, index=c.index)
    for _, g in c.groupby("setting"):
        m = "acc_memory_bytes" if "acc_memory_bytes" in g else "shown_bytes"
        g = g[g[m].notna() & g["error_mean"].notna()]
        for i, r in g.iterrows():
            dominated = (
                (g[m] <= r[m]) & (g["error_mean"] <= r["error_mean"])
                & ((g[m] < r[m]) | (g["error_mean"] < r["error_mean"]))
            ).any()
            mask[i] = not dominated
    return mask


def _published_for(r) -> list[pub.Published]:
    return pub.match(
        r["network"], r["dataset"], r["method"], r["modules"], r["hilo"], r["independent"],
        r["pff_grid"], r["local_loss"],
    )


def ablation_table(cfg: pd.DataFrame) -> Table | str:
    if cfg.empty:
        return "no successful runs"
    local = cfg[~cfg["method"].isin(global_methods())]
    groups = [
        g for _, g in local.groupby(["setting", "method", "k"], sort=False)
        if g["hilo"].any() and len(g[["hilo", "independent", "pff_grid"]].drop_duplicates()) > 1
    ]
    if not groups:
        return ("no HiLo/HPFF run (--hilo or --hpff) beside another variant of the same local method, "
                "network and K")
    c = pd.concat(groups)
    c = c[(c["error_mean"].notna()) | (c["shown_bytes"].notna())]
    unit, scale = _mem_cols(c, ["shown_bytes"])
    rows = []
    for _, r in c.iterrows():
        p = [x for x in _published_for(r) if x.source == "hpff"]
        rows.append({
            "setting": r["setting"], "method": r["name"], "K": r["k"], "modules": r["modules"],
            "IL": bool(r["independent"] or not r["hilo"]), "CL": bool(r["hilo"]),
            "PFF n": r["pff_grid"] if r["pff_grid"] > 1 else None,
            "test error (%)": r["error_mean"], "std (%)": r["error_std"], "seeds": r["seeds"],
            f"peak memory ({unit})": r["shown_bytes"] / scale if r["shown_bytes"] == r["shown_bytes"] else np.nan,
            "memory from": r["shown_source"],
            "published error (%)": p[0].test_error_pct if p else np.nan,
            "published source": pub.SHORT[p[0].source] if p else None,
        })
    return Table(
        "hpff_ablation", "HPFF ablation: independent level (IL), cascade level (CL), patch fusion (PFF)",
        pd.DataFrame(rows),
        "As in the HPFF paper's ablation (DGL, ResNet-32, K=16): IL alone is the plain local method.",
        {"K": 0, "modules": 0, "PFF n": 0, "seeds": 0, **_mem_decimals(unit, f"peak memory ({unit})")},
    )


def patch_grid_table(cfg: pd.DataFrame) -> Table | str:
    if cfg.empty:
        return "no successful runs"
    local = cfg[~cfg["method"].isin(global_methods())]
    groups = [
        g for _, g in local.groupby(["setting", "method", "k", "hilo", "independent"], sort=False)
        if g["pff_grid"].nunique() > 1
    ]
    if not groups:
        return "no configuration was run with more than one PFF patch grid n (--pff-grid 1/2/4)"
    c = pd.concat(groups).sort_values(["setting", "method", "k", "hilo", "pff_grid"], kind="stable")
    unit, scale = _mem_cols(c, ["shown_bytes", "aux_step_bytes"])
    data = pd.DataFrame({
        "setting": c["setting"].values, "method": c["name"].values, "K": c["k"].values,
        "modules": c["modules"].values, "HiLo": c["hilo"].values, "n": c["pff_grid"].values,
        "PFF on": [o if n > 1 else None for o, n in zip(c["pff_on"], c["pff_grid"])],
        "PFF exec": [e if n > 1 else None for e, n in zip(c["pff_exec"], c["pff_grid"])],
        f"peak memory ({unit})": (c["shown_bytes"] / scale).values,
        f"one aux step ({unit})": (c["aux_step_bytes"] / scale).values,
        f"aux activations at the peak ({unit})": (c["breakdown.aux_activations"] / scale).values,
        "memory from": c["shown_source"].values,
        "test error (%)": c["error_mean"].values,
    })
    return Table(
        "patch_grid", "PFF patch grid n: memory and error", data,
        "n x n patches per auxiliary-net input (n=1: PFF off). 'one aux step': the largest peak of "
        "the aux activations born in one auxiliary net's step (what PFF claims to shrink); 'aux "
        "activations at the peak': their share of the whole step's peak, often 0 because the peak "
        "falls where no aux net is running.",
        {"K": 0, "modules": 0, "n": 0, **_mem_decimals(unit, f"peak memory ({unit})", f"one aux step ({unit})",
                                                        f"aux activations at the peak ({unit})")},
    )


def parity_table(cfg: pd.DataFrame) -> Table | str:
    c = cfg[cfg["measured_bytes"].notna() & cfg["comparable_bytes"].notna()] if not cfg.empty else cfg
    if c.empty:
        return PARITY_MISSING
    unit, scale = _mem_cols(c, ["measured_bytes", "comparable_bytes"])
    data = pd.DataFrame({
        "setting": c["setting"].values, "method": c["name"].values, "K": c["k"].values,
        f"measured ({unit})": (c["measured_bytes"] / scale).values,
        "measured by": c["measured_source"].values,
        f"predicted ({unit})": (c["comparable_bytes"] / scale).values,
        "predicted quantity": c["comparable_what"].values,
        "relative error (%)": (100.0 * (c["comparable_bytes"] - c["measured_bytes"]) / c["measured_bytes"]).values,
    })
    return Table(
        "prediction_error", "Predicted vs measured peak memory", data,
        "relative error = (predicted - measured) / measured. A CUDA allocator measurement is compared "
        "with the predicted allocator peak (max_memory_allocated); a live-tensor tracker measurement "
        "(CPU) with the prediction's live tensor bytes at the peak (each rounded to 512-B blocks), "
        "since the CPU has no allocator rounding or cuBLAS workspaces.",
        {"K": 0, **_mem_decimals(unit, f"measured ({unit})", f"predicted ({unit})")},
    )


PARITY_MISSING = (
    "no run has both a measurement and a comparable prediction (CUDA allocator peak with the "
    "predicted allocator peak, or live-tensor tracker with the predicted live tensors)"
)


def speed_table(cfg: pd.DataFrame) -> Table | str:
    c = cfg[cfg["step_seconds"].notna() | cfg["images_per_second"].notna()] if not cfg.empty else cfg
    if c.empty:
        return "no run has timings (timing.step_seconds)"
    rel, vs_bp, vs_plain = [], [], []
    for _, r in c.iterrows():
        same = c[(c["setting"] == r["setting"]) & (c["speed_device"] == r["speed_device"])]
        bp = same[same["method"] == "bp"]
        rel.append(r["step_seconds"] / bp["step_seconds"].iloc[0] if not bp.empty else np.nan)
        vs_bp.append(_noise_word(r, bp.iloc[0]) if not bp.empty and r["method"] != "bp" else None)
        plain = same[(same["label"] == family_of(r["label"])) & (same["k"] == r["k"])
                     & (same["modules"].fillna(-1) == (r["modules"] if r["modules"] == r["modules"] else -1))]
        plain = plain[plain["name"] == plain["label"]]
        is_plain = r["method"] in global_methods() or r["name"] == family_of(r["label"])
        vs_plain.append(_noise_word(r, plain.iloc[0]) if not plain.empty and not is_plain else None)
    data = pd.DataFrame({
        "setting": c["setting"].values, "device": c["speed_device"].values, "method": c["name"].values,
        "K": c["k"].values, "modules": c["modules"].values,
        "step time (ms)": (c["step_seconds"] * 1000).values,
        "IQR low (ms)": (c["step_q1"] * 1000).values, "IQR high (ms)": (c["step_q3"] * 1000).values,
        "timed steps": c["timed_steps"].values,
        "images/s": c["images_per_second"].values, "step time vs BP (x)": rel,
        "vs BP": vs_bp, "vs plain method": vs_plain,
        "timed alone": (~c["speed_shared"].fillna(False).astype(bool)).values if "speed_shared" in c else True,
    })
    decimals = {"K": 0, "modules": 0, "images/s": 1, "step time (ms)": 1, "IQR low (ms)": 1,
                "IQR high (ms)": 1, "timed steps": 0}
    if c["flops"].notna().any():  # optional: FLOPs of one step, where the records have them
        data["GFLOP / step"] = (c["flops"] / 1e9).values
        data["GFLOP/s"] = (c["flops"] / 1e9 / c["step_seconds"]).values
        # FLOP efficiency relative to BP: time ratio / FLOP ratio (1 = BP's FLOP throughput)
        bp_flops = [_bp_reference(c[c["speed_device"] == d], s_, "flops") for s_, d in zip(c["setting"], c["speed_device"])]
        data["FLOPs vs BP (x)"] = c["flops"].values / np.array(bp_flops, dtype=float)
        data["time / FLOP ratio"] = flop_efficiency(c).values
        decimals.update({"GFLOP / step": 1, "GFLOP/s": 1, "FLOPs vs BP (x)": 2, "time / FLOP ratio": 2})
    return Table(
        "speed", "Training speed", data,
        "Median time of one full training step over the timed steps, with the interquartile range "
        "(IQR) of those steps; 'vs BP' divides by BP's median on the same device and setting. "
        "'faster' / 'slower' only where the two IQRs do not overlap, else 'not resolved'; 'no "
        "spread to tell' where either has fewer than 4 timed steps or no per-step times (training "
        "records keep only the median); 'vs plain method' compares a variant with "
        "its plain method at the same K. 'timed alone' is unticked where every timing of the "
        "configuration ran while another run of the results ran on the same host (their env.time and "
        "env.seconds overlap): such a time measures two jobs at once and is compared with nothing; "
        "the speed figure leaves it out.",
        decimals,
    )


NO_SIDE_BY_SIDE = "no side-by-side speed run (pytest suites/test_method_speed.py --benchmark-json FILE)"
CODE_NAMES = {"ours": "hpff-bench", "official": "official code"}


def side_by_side_table(sb: pd.DataFrame) -> Table | str:
    """suites/test_method_speed.py's runs: every configuration's step against BP's, FLOPs too."""
    if sb.empty:
        return NO_SIDE_BY_SIDE
    data = pd.DataFrame({
        "run": sb["run"].values, "code": sb["code"].map(CODE_NAMES).values,
        "configuration": sb["configuration"].values, "step time (s)": sb["step_seconds"].values,
        "step vs BP (x)": sb["step_vs_bp"].values,
        "lowest in a round (x)": sb["round_low"].values, "highest in a round (x)": sb["round_high"].values,
        "FLOPs vs BP (x)": sb["flops_vs_bp"].values, "time / FLOP ratio": sb["flop_efficiency"].values,
    })
    return Table(
        "side_by_side", "Step time side by side", data,
        "suites/test_method_speed.py: each round runs one step of every configuration in a shuffled "
        "order; 'vs BP' divides each step by BP's step of the same round, the median over the rounds, "
        "with the lowest and highest ratio of one round. 'time / FLOP ratio' = step ratio ÷ FLOP ratio "
        "(1: BP's FLOP throughput). 'official code': the HPFF authors' own model file, stepped as its "
        "train.py does, in the same rounds.",
        {"step time (s)": 3},
    )


def flop_efficiency(c: pd.DataFrame) -> pd.Series:
    """(step time ÷ BP's) ÷ (FLOPs ÷ BP's), BP of the same setting and device: 1 = BP's FLOP
    throughput, above = slower per FLOP. NaN where the row or its BP has no FLOPs or time."""
    out = pd.Series(np.nan, index=c.index)
    for _, g in c.groupby(["setting", "speed_device"], dropna=False):
        bp = g[(g["method"] == "bp") & g["flops"].notna() & g["step_seconds"].notna()]
        if not bp.empty:
            b = bp.iloc[0]
            out[g.index] = (g["step_seconds"] / b["step_seconds"]) / (g["flops"] / b["flops"])
    return out


def _noise_word(r, ref) -> str:
    if any(v is not None and v == v and bool(v) for v in (r.get("speed_shared"), ref.get("speed_shared"))):
        return "not a result: timed while sharing the machine"
    overlap = noise_overlap(r, ref)
    if overlap is None:
        return "no spread to tell"
    if overlap:
        return "not resolved"
    return "faster" if r["step_seconds"] < ref["step_seconds"] else "slower"


def published_table(cfg: pd.DataFrame) -> Table | str:
    if cfg.empty:
        return "no successful runs"
    rows = []
    for _, r in cfg[cfg["error_mean"].notna()].iterrows():
        for p in _published_for(r):
            rows.append({
                "network": r["network"], "method": r["name"], "paper K": p.paper_k, "modules": r["modules"],
                "ours: test error (%)": r["error_mean"], "std (%)": r["error_std"], "seeds": r["seeds"],
                "published (%)": p.test_error_pct, "published as": p.name, "source": pub.SHORT[p.source],
            })
    if not rows:
        return ("no run with an accuracy matches a published configuration (CIFAR-10 ResNet-32/110 at "
                "the papers' module counts; see published_reference)")
    return Table(
        "published_comparison", "Our test errors beside the published ones", pd.DataFrame(rows),
        "Published numbers are matched on network, method, variant and the real number of modules. "
        "Sources: " + " ".join(f"[{pub.SHORT[k]}] {v}" for k, v in pub.SOURCES.items()),
        {"paper K": 0, "modules": 0, "seeds": 0},
    )


# Where each of our memory quantities comes from: the GPU measurement, else the prediction.
_MEMORY_COLUMNS = {
    "allocated": ("measured_bytes", "predicted_bytes"),  # measured only from the CUDA allocator
    "least_device": (None, "predicted_least_device_bytes"),  # the model's; not measured
    "reserved": ("reserved_bytes", "predicted_reserved_bytes"),
    "device": ("nvml_used_bytes", "predicted_device_bytes"),
}


def _memory_runs(ok: pd.DataFrame, p: pub.PublishedMemory) -> list[tuple[str, pd.DataFrame]]:
    """Our runs of a published memory row, one group per way we run it (ours / official code)."""
    if ok.empty:
        return []
    same = ok[(ok["network"] == p.network) & (ok["dataset"] == p.dataset) & (ok["method"] == p.method)
              & (ok["batch_size"] == p.batch_per_gpu)]
    if not p.hpff:
        same = same[~same["hilo"] & (same["pff_grid"] == 1) & (same["variant"] == "ours")]
        if p.method != "bp":
            same = same[same["k"] == p.k]
        if p.method == "infopro" and p.split != "auto":
            same = same[same["split"].astype(str) == p.split]
        return [("ours", same)] if not same.empty else []
    same = same[same["hilo"] & (same["modules"] == p.modules)]
    groups = []
    ours = same[(same["variant"] == "ours") & (same["pff_grid"] == 2)]
    for exec_, g in ours.groupby(ours["pff_exec"].fillna("batched").astype(str), sort=True):
        groups.append((f"ours ({exec_} PFF)", g))
    official = same[same["variant"] == "official"]
    if not official.empty:
        only_hilo = p.method != "infopro"  # the official code's PFF is InfoPro's decoder only
        groups.append(("official code" + (" (HiLo; no PFF path)" if only_hilo else ""), official))
    return groups


def memory_value(runs: pd.DataFrame, quantity: str) -> tuple[float, str | None]:
    """(bytes, 'measured' | 'predicted') of one quantity: the median over runs."""
    measured, predicted = _MEMORY_COLUMNS[quantity]
    gpu = runs[_col(runs, "measured_source", keep_na=True) == "cuda-allocator"] if measured else runs.iloc[0:0]
    for source, frame, column in (("measured", gpu, measured), ("predicted", runs, predicted)):
        values = _col(frame, column) if column else pd.Series(dtype="float64")
        if not values.empty:
            return float(values.median()), source
    return np.nan, None


def _cache_note(runs: pd.DataFrame, published_gb: float) -> str | None:
    """On the reserved/device rows: the cached segments a GPU with room keeps and the step does
    not need (reserved peak - least reserve it runs in), where they are 5 % of the figure or more."""
    reserved, least = (_col(runs, c) for c in ("predicted_reserved_bytes", "predicted_least_reserved_bytes"))
    if reserved.empty or least.empty:
        return None
    cache = float(reserved.median() - least.median())
    if cache < 0.05 * published_gb * 1e9:
        return None
    return (f"{cache / 1e9:.2f} GB (10^9 B) of it is cached segments the step does not need: with the cache "
            f"given back on an out-of-memory the reserve shrinks to {float(least.median()) / 1e9:.2f} GB "
            "(docs/memory.md)")


UNEXPLAINED = ("no compared reading within ±10 %: not explained; not in the prediction: cuDNN workspaces, "
               "the paper's PyTorch / CUDA / GPU (docs/published.md)")


def _note_unexplained(rows: list[dict]) -> None:
    """Where no compared quantity, in either reading of GB, is within ±10 % of the figure, its
    compared rows say so: the difference is not one we found a mechanism for."""
    diffs = [r[f"difference, GB = {g} B (%)"] for r in rows if r["compared"] for g in pub.GB_READINGS]
    diffs = [d for d in diffs if d == d]
    if diffs and min(abs(d) for d in diffs) > 10.0:
        for r in rows:
            if r["compared"]:
                r["note"] = UNEXPLAINED


def published_memory_table(df: pd.DataFrame) -> Table:
    """The papers' GPU-memory figures, each beside every one of our quantities, in the paper's unit
    read both ways; the difference only on the quantities the paper's own description points to."""
    ok = ok_rows(df) if not df.empty else df
    rows = []
    for p in pub.PUBLISHED_MEMORY:
        head = {"source": p.table, "network": p.network, "data": f"{p.dataset}, {p.batch_per_gpu} / GPU",
                "published as": p.paper_name, "published (GB)": p.gb}
        why = pub.cannot_run(p)
        groups = _memory_runs(ok, p) if why is None else []
        if not groups:
            why = why or "not run yet: hpff-bench sweep suites/papers.toml (--preset quick for the prediction)"
            rows.append({**head, "our run": None, "our quantity": None, "from": None, "note": why})
            continue
        for run, runs in groups:
            first = len(rows)
            for q in pub.QUANTITIES:
                nbytes, source = memory_value(runs, q)
                compared = q in p.compared_with
                row = {**head, "our run": run, "our quantity": pub.QUANTITIES[q], "from": source,
                       "compared": compared}
                for reading in pub.GB_READINGS:
                    row[f"ours, GB = {reading} B"] = pub.in_paper_unit(nbytes, reading)
                for reading in pub.GB_READINGS:
                    row[f"difference, GB = {reading} B (%)"] = (
                        pub.difference_pct(nbytes, p.gb, reading) if compared else np.nan)
                row["note"] = _cache_note(runs, p.gb) if q in ("reserved", "device") else None
                rows.append(row)
            _note_unexplained(rows[first:])
    reasons = " ".join(f"[{pub.MEMORY_TABLES[k]}] {why}" for k, (_, why) in pub.MEASURED_AS.items())
    columns = ["source", "network", "data", "published as", "published (GB)", "our run", "our quantity", "from",
               "compared", *(f"ours, GB = {r} B" for r in pub.GB_READINGS),
               *(f"difference, GB = {r} B (%)" for r in pub.GB_READINGS), "note"]
    return Table(
        "published_memory", "The papers' GPU memory beside ours, compared like for like",
        pd.DataFrame(rows, columns=columns),
        "Every published figure is shown beside four of our quantities, each measured on a GPU where a profile "
        "exists ('from'), else predicted on fake tensors: the allocated peak (max_memory_allocated); the least "
        "device memory the step runs in (the allocator model giving its cached segments back on an "
        "out-of-memory, as PyTorch's does, plus the CUDA context); the reserved peak (max_memory_reserved); "
        "and the device total a GPU with room shows (reserved + CUDA context, what nvidia-smi shows). The "
        "difference is given only on the quantities marked 'compared', those the paper's own description of "
        "its measurement points to, and for 'GB' read as 10^9 and as 2^30 bytes, since no paper says which "
        "(docs/published.md). " + reasons + " The CUDA context in the predictions is an assumption (512 MiB "
        "unless --cuda-context-bytes is given); cuDNN workspaces (the InfoPro paper ran cudnn.benchmark on, "
        "our runs leave it off) are not in the prediction. InfoPro* rows are InfoPro on the memory-balanced "
        "split with its default loss settings; HPFF rows are matched on the real module count (54 for "
        "\"K=55\") and shown for each way we run them. Sources: "
        + " ".join(f"[{pub.MEMORY_TABLES[k]}] {v}" for k, v in pub.MEMORY_SOURCES.items()),
        {"published (GB)": 2} | {c: 1 for c in (f"difference, GB = {r} B (%)" for r in pub.GB_READINGS)},
    )


def _col(df: pd.DataFrame, name: str, keep_na: bool = False) -> pd.Series:
    s = df[name] if name in df.columns else pd.Series(dtype="float64" if not keep_na else object)
    return s if keep_na else pd.to_numeric(s, errors="coerce").dropna()


def published_reference_table() -> Table:
    data = pd.DataFrame([
        {"source": pub.SHORT[p.source], "network": p.network, "method": p.name, "paper K": p.paper_k,
         "modules": p.modules, "test error (%)": p.test_error_pct}
        for p in pub.PUBLISHED
    ])
    return Table(
        "published_reference", "Published CIFAR-10 test errors", data,
        " ".join(f"[{pub.SHORT[k]}] {v}" for k, v in pub.SOURCES.items()),
        {"paper K": 0, "modules": 0},
    )


ENV_FIELDS = ("device_name", "torch", "cuda", "cudnn", "driver", "cpu", "python", "git_commit", "hostname")


def _device_text(kinds_devices: list[str | None], device_name, cuda) -> str:
    """Where the numbers were computed, in words: a GPU's name, the CPU, or fake tensors."""
    devices = {d for d in kinds_devices if d}
    if device_name and str(device_name).lower() != "cpu":
        return str(device_name)
    if devices == {"fake"} or not devices:
        return "no device (fake tensors)"
    if cuda:
        return "CPU (CUDA build of torch, run on the CPU)"
    return "CPU"


def environment_table(df: pd.DataFrame) -> Table | str:
    if df.empty:
        return "no records"
    cols = [f"env.{f}" for f in ENV_FIELDS]
    e = df[cols].astype(object).where(df[cols].notna(), None)
    if all(v is None for v in e.values.ravel()):
        return "no record has an env object"
    rows = []
    # one row per environment and per place (estimates ran on fake tensors, the rest on a device)
    keys = ["|".join(str(v) for v in row) + ("|fake" if k == "estimate" else "")
            for row, k in zip(e.values.tolist(), df["kind"])]
    for _, g in df.assign(_k=keys).groupby("_k", sort=False):
        first = e.loc[g.index[0]]
        # where each kind ran: estimates on fake tensors, the others on the record's device
        where = ["fake" if k == "estimate" else (d or dev or None)
                 for k, d, dev in zip(g["kind"], g["env.device"], g["device"])]
        cuda = first["env.cuda"]
        rows.append({
            "computed on": _device_text(where, first["env.device_name"], cuda),
            "processor": first["env.cpu"],
            "PyTorch": first["env.torch"],
            "CUDA (build)": cuda, "cuDNN": first["env.cudnn"], "NVIDIA driver": first["env.driver"],
            "Python": first["env.python"],
            "git commit": (str(first["env.git_commit"])[:10] if first["env.git_commit"] else None),
            "host": first["env.hostname"],
            "records": len(g),
            "kinds": ", ".join(f"{k} {n}" for k, n in g["kind"].value_counts().sort_index().items()),
        })
    return Table(
        "environment", "Where the numbers came from", pd.DataFrame(rows),
        "One row per distinct environment. 'CUDA (build)' is the CUDA version torch was built with, "
        "not proof that a GPU was used: 'computed on' says where the records ran (estimates run on "
        "fake tensors, on no device; a CPU run of a CUDA build says so).", {"records": 0},
    )


def failures_table(df: pd.DataFrame) -> Table | str:
    """Runs that did not finish, grouped by status and reason (one row per distinct message)."""
    if df.empty:
        return "no records"
    f = df[df["status"] != "ok"]
    if f.empty:
        return "every run finished with status ok"
    rows = []
    msg = f["message"].fillna("(no message)").astype(str)
    for (status, kind, m), g in f.assign(_m=msg).groupby(["status", "kind", "_m"], sort=False):
        runs = sorted(g["run_name"].fillna("(unnamed)").astype(str))
        shown = ", ".join(runs[:4]) + (f" and {len(runs) - 4} more" if len(runs) > 4 else "")
        rows.append({"status": status, "kind": kind, "runs": len(g), "which": shown,
                     "why": " ".join(m.split())})
    data = pd.DataFrame(rows).sort_values(["status", "runs"], ascending=[True, False], kind="stable")
    return Table(
        "failed_runs", "Runs that did not finish", data.reset_index(drop=True),
        "One row per status and reason. Status oom: out of memory; diverged: loss became NaN/inf; "
        "skipped: not run here (e.g. no data, needs a GPU); error: an exception.",
        {"runs": 0},
    )
