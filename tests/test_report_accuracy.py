"""The seeded accuracy report: mean ± std over seeds, the published error beside it, and which
of the papers' orderings the error bars resolve.

Records are built with make_record from real RunConfigs with round test errors, so every
expected value is read off this file.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from hpff_bench.config import RunConfig
from hpff_bench.report import orderings as O
from hpff_bench.report import tables as T
from hpff_bench.report.load import read_results
from hpff_bench.report.ordering_figure import accuracy_ordering
from hpff_bench.runner.store import dumps, make_record
from hpff_bench.runner.suite import resolve_fields

BASE = dict(network="resnet32", dataset="cifar10", image_size=16, batch_size=128)


def _cfg(method, k=4, hpff=False) -> RunConfig:
    return RunConfig(**resolve_fields({**BASE, "method": method, "k": k, "hpff": hpff})).validate()


def _train(cfg, seed, err, images=10_000):
    return make_record("train", "ok", config=cfg.replace(seed=seed), accuracy={"test_error_pct": err, "epochs": 8},
                       options={"epochs": 8, "train_subset": images})


def _configs(tmp_path, records) -> pd.DataFrame:
    f = tmp_path / "r.jsonl"
    f.write_text("".join(dumps(r) + "\n" for r in records), encoding="utf-8")
    return T.configs(T.add_method_names(read_results([f]).frame))


# errors per seed; means: BP 40, Greedy 50, DGL 45, DGL+HPFF 44, InfoPro 47
ERRORS = {
    ("bp", 1, False): (39.0, 40.0, 41.0),
    ("greedy", 4, False): (49.0, 50.0, 51.0),
    ("dgl", 4, False): (44.0, 45.0, 46.0),
    ("dgl", 4, True): (43.0, 44.0, 45.0),
    ("infopro", 4, False): (46.0, 47.0, 48.0),
}


@pytest.fixture
def study(tmp_path):
    recs = [_train(_cfg(m, k, h), seed, e) for (m, k, h), errs in ERRORS.items() for seed, e in enumerate(errs)]
    recs.append(make_record("estimate", "ok", config=_cfg("dgl"), predicted={"peak_allocated_bytes": 100 * 2**20}))
    return _configs(tmp_path, recs)


def test_accuracy_table_gives_mean_std_seeds_and_the_published_error_beside(study):
    t = T.accuracy_table(study).data.set_index("method")
    assert t.loc["DGL", "test error (%)"] == pytest.approx(45.0)
    assert t.loc["DGL", "std (%)"] == pytest.approx(1.0)  # ddof=1 of 44, 45, 46
    assert t.loc["DGL", "seeds"] == "0, 1, 2"
    assert t.loc["DGL", "training images"] == 10_000
    # InfoPro's Table 2, ResNet-32 K=4 (4 modules): the published full-schedule errors
    assert t.loc["DGL", "published error (%, full schedule)"] == pytest.approx(11.48)
    assert t.loc["Greedy SL", "published error (%, full schedule)"] == pytest.approx(16.07)
    assert t.loc["BP", "published error (%, full schedule)"] == pytest.approx(7.37)
    assert math.isnan(t.loc["DGL+HPFF (n=2)", "published error (%, full schedule)"])  # HPFF published K=16/55 only
    # memory at the batch the accuracy was trained at (the estimate of the same setting)
    assert t.loc["DGL", "memory at batch"] == 128 and t.loc["DGL", "memory from"] == "predicted"
    assert study["setting"].iloc[0] == "resnet32 · cifar10 · batch 128 · 16 px"


def test_orderings_resolve_only_where_the_error_bars_do_not_overlap(study):
    comp = O.comparisons(study)
    v = {(r["better"], r["worse"]): r for _, r in comp.iterrows()}
    # BP 40 ± 1 vs DGL 45 ± 1: 5 > 2 -> resolved in the papers' direction
    r = v[("BP", "DGL")]
    assert r["difference"] == pytest.approx(5.0) and r["bound"] == pytest.approx(2.0)
    assert r["verdict"] == O.AS_PUBLISHED
    assert r["published difference"] == pytest.approx(11.48 - 7.37)
    # DGL+HPFF 44 ± 1 vs DGL 45 ± 1: 1 < 2 -> not resolved
    assert v[("DGL+HPFF (n=2)", "DGL")]["verdict"] == O.NOT_RESOLVED
    # InfoPro 47 vs DGL 45: the papers rank InfoPro lower; 2 points the other way = the bound: not resolved
    assert v[("InfoPro", "DGL")]["difference"] == pytest.approx(-2.0)
    assert v[("InfoPro", "DGL")]["verdict"] == O.NOT_RESOLVED
    # DGL 45 vs Greedy 50: resolved, as published
    assert v[("DGL", "Greedy SL")]["verdict"] == O.AS_PUBLISHED
    assert len(comp) == 4 + 1 + 2  # BP vs 4 local, one HPFF pair, two plain-order pairs


def test_a_resolved_difference_against_the_papers_is_reversed(tmp_path):
    recs = [_train(_cfg("bp", 1), s, e) for s, e in enumerate((50.0, 50.5))]
    recs += [_train(_cfg("dgl"), s, e) for s, e in enumerate((45.0, 45.5))]
    comp = O.comparisons(_configs(tmp_path, recs))
    assert comp.iloc[0]["verdict"] == O.REVERSED and comp.iloc[0]["difference"] == pytest.approx(-5.0)


def test_one_seed_never_resolves_and_draws_no_ordering_figure(tmp_path):
    recs = [_train(_cfg("bp", 1), 0, 40.0), _train(_cfg("dgl"), 0, 60.0)]
    cfg = _configs(tmp_path, recs)
    assert O.comparisons(cfg).iloc[0]["verdict"] == O.NOT_RESOLVED
    assert "one seed" in accuracy_ordering(cfg)


def test_ordering_figure_draws_one_row_per_configuration_and_per_ordering(study):
    fig = accuracy_ordering(study)
    left, right = fig.axes[:2]
    assert len(left.get_yticklabels()) == 5
    assert len(right.get_yticklabels()) == 7
    assert left.get_xlabel().startswith("test error (%)")
