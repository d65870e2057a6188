"""The report's "does HPFF save memory?" decomposition: base -> + HiLo -> + PFF, per execution."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from hpff_bench.config import HPFF_INFOPRO_LAMBDAS, RunConfig
from hpff_bench.report import decomposition as D
from hpff_bench.report import tables as T
from hpff_bench.report.load import read_results
from hpff_bench.runner.store import dumps, make_record

MiB = 2**20


def _rec(cfg, alloc, reserved, context=512):
    return make_record("estimate", "ok", config=cfg.validate(), modules=15, predicted={
        "peak_allocated_bytes": alloc * MiB, "peak_reserved_bytes": reserved * MiB,
        "device_used_bytes": (reserved + context) * MiB})


def test_each_step_is_compared_with_the_one_it_adds_to(tmp_path):
    base = RunConfig(network="resnet32", method="dgl", k=16, split="hpff", batch_size=1024)
    official = RunConfig(network="resnet32", method="dgl", k=16, hilo=True, variant="official",
                         hilo_exec="official", batch_size=1024)
    infopro_recipe = RunConfig(network="resnet32", method="infopro", k=16, split="hpff", batch_size=1024,
                               aux="1c2f", local_loss="supcon")  # not HPFF's loss settings: left out
    recs = [
        _rec(base, 700, 720),
        _rec(base.replace(hilo=True), 1000, 1020),                        # HiLo: +300 live
        _rec(base.replace(hilo=True, pff_grid=2), 1000, 1400),            # batched: the cache only
        _rec(base.replace(hilo=True, pff_grid=2, pff_exec="streamed"), 980, 1000),
        _rec(official, 1300, 1300),
        _rec(infopro_recipe, 900, 900),
        _rec(infopro_recipe.replace(hilo=True, aux="2c2f", local_loss="ce", lambdas=HPFF_INFOPRO_LAMBDAS), 9, 9),
    ]
    f = tmp_path / "r.jsonl"
    f.write_text("".join(dumps(r) + "\n" for r in recs), encoding="utf-8")
    df = T.add_method_names(read_results([f]).frame)
    t = D.decomposition_table(df).data.set_index("step")
    assert list(t.index) == ["base method", "+ HiLo", "+ PFF, batched patches", "+ PFF, streamed patches",
                             "+ HiLo, official execution"]
    assert set(t["method"]) == {"DGL"}  # InfoPro has no base on HPFF's settings: no rows
    assert t.loc["+ HiLo", "change in allocated (MiB)"] == pytest.approx(300)
    assert t.loc["+ HiLo", "what moves"] == "live tensors (+300 MiB)"
    assert t.loc["+ PFF, batched patches", "compared with"] == "+ HiLo"
    assert t.loc["+ PFF, batched patches", "change in allocated (MiB)"] == pytest.approx(0)
    assert t.loc["+ PFF, batched patches", "change in reserved (MiB)"] == pytest.approx(380)
    assert t.loc["+ PFF, batched patches", "what moves"] == "allocator cache only (+380 MiB)"
    assert t.loc["+ PFF, streamed patches", "change in device (MiB)"] == pytest.approx(-20)
    assert t.loc["+ HiLo, official execution", "compared with"] == "base method"
    assert t.loc["+ HiLo, official execution", "change in allocated (MiB)"] == pytest.approx(600)
    assert isinstance(D.decomposition_figure(df), Figure)
    # without a base and its HiLo step there is nothing to decompose, and the report says why
    assert D.decomposition_table(df[df["method"] == "infopro"]) == D.WHY
