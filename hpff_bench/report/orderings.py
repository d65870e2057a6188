"""Which of the papers' accuracy orderings a seeded study reproduces, and which its error bars
cannot resolve.

A short schedule (the accuracy proxy) cannot reproduce the papers' test errors, but it can say
whether methods order the way the papers say they do. The orderings checked, within one
setting and K:
- BP has the lowest error: BP below every local method (InfoPro and HPFF, Tables 1-2);
- HPFF improves its base method: X+HPFF below X (HPFF, Table 1);
- InfoPro <= DGL <= Greedy SL (InfoPro, Table 2).

A difference is *resolved* when the two configurations' mean +/- one standard deviation (over
seeds, ddof=1) do not overlap: |mean_a - mean_b| > std_a + std_b. That is what the error bars
of the figure show, and it needs at least two seeds on each side. Resolved and in the papers'
direction: "as published"; resolved the other way: "reversed"; else "not resolved".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hpff_bench.report.tables import Table, published_error

AS_PUBLISHED, REVERSED, NOT_RESOLVED = "as published", "reversed", "not resolved"
# (better, worse) method pairs of the plain methods (InfoPro's Table 2)
_PLAIN_ORDER = (("infopro", "dgl"), ("dgl", "greedy"))


def _kind(r) -> str | None:
    """'plain', 'hpff' (HiLo with both levels and PFF n>1), or None (other ablation variants)."""
    if r["variant"] != "ours":
        return None
    if not r["hilo"] and int(r["pff_grid"]) == 1:
        return "plain"
    if r["hilo"] and r["independent"] and int(r["pff_grid"]) > 1 and (r["pff_exec"] or "batched") == "batched":
        return "hpff"
    return None


def comparisons(cfg: pd.DataFrame) -> pd.DataFrame:
    """One row per checked pair: better (the papers' lower error), worse, the difference
    worse - better in error points (positive = the papers' direction), its resolution bound
    std_better + std_worse, the verdict, and the published difference where both are published."""
    cols = ["setting", "K", "claim", "better", "worse", "difference", "bound", "seeds", "verdict",
            "published difference"]
    if cfg.empty or "error_mean" not in cfg:
        return pd.DataFrame(columns=cols)
    c = cfg[cfg["error_mean"].notna()].copy()
    c["_kind"] = [_kind(r) for _, r in c.iterrows()]
    rows = []
    for setting, g in c.groupby("setting", sort=False):
        bp = g[g["method"] == "bp"]
        local = g[(g["method"] != "bp") & (g["method"] != "gc") & g["_kind"].notna()]
        for k, lk in local.groupby("k", sort=True):
            pairs = []
            for _, b in bp.iterrows():
                pairs += [("BP has the lowest error", b, w) for _, w in lk.iterrows()]
            plain = {r["method"]: r for _, r in lk[lk["_kind"] == "plain"].iterrows()}
            for _, h in lk[lk["_kind"] == "hpff"].iterrows():
                if h["method"] in plain:
                    pairs.append(("HPFF improves its base", h, plain[h["method"]]))
            for better, worse in _PLAIN_ORDER:
                if better in plain and worse in plain:
                    pairs.append(("InfoPro <= DGL <= Greedy SL", plain[better], plain[worse]))
            rows += [_row(setting, k, claim, b, w) for claim, b, w in pairs]
    return pd.DataFrame(rows, columns=cols)


def _row(setting, k, claim, better, worse) -> dict:
    diff = float(worse["error_mean"] - better["error_mean"])
    sb, sw = better["error_std"], worse["error_std"]
    bound = float(sb + sw) if _finite(sb) and _finite(sw) else math.nan
    if not _finite(bound):
        verdict = NOT_RESOLVED
    elif abs(diff) > bound:
        verdict = AS_PUBLISHED if diff > 0 else REVERSED
    else:
        verdict = NOT_RESOLVED
    pb, pw = published_error(better)[0], published_error(worse)[0]
    return {
        "setting": setting, "K": int(k), "claim": claim, "better": better["name"], "worse": worse["name"],
        "difference": diff, "bound": bound, "seeds": f"{int(better['seeds'])} / {int(worse['seeds'])}",
        "verdict": verdict, "published difference": pw - pb if _finite(pb) and _finite(pw) else math.nan,
    }


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating)) and math.isfinite(x)


def ordering_table(cfg: pd.DataFrame) -> Table | str:
    comp = comparisons(cfg)
    if comp.empty:
        return ("no pair of configurations with test errors that a published ordering compares (BP and a "
                "local method, a method with and without HPFF, or InfoPro / DGL / Greedy SL at one K)")
    data = comp.rename(columns={
        "better": "lower error (papers)", "worse": "higher error (papers)",
        "difference": "difference (points)", "bound": "std + std (points)",
        "seeds": "seeds (lower / higher)", "published difference": "published difference (points, full schedule)",
    })
    return Table(
        "accuracy_orderings", "Published orderings: which the seeded runs resolve",
        data,
        "Difference = test error of the configuration the papers rank lower minus the one they rank "
        "higher, in percentage points (positive: the papers' order). Resolved when it exceeds the "
        "sum of the two standard deviations over seeds (the error bars do not overlap): "
        "'as published' or 'reversed'; otherwise 'not resolved'. The published difference comes "
        "from the papers' full schedules and is there for its sign, not its size.",
        {"K": 0},
    )
