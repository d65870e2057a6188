"""One configuration, one name (and so one colour) everywhere in a report; a GC bar sits in the
x group of its own cuts."""

from __future__ import annotations

import pandas as pd

from hpff_bench.config import RunConfig
from hpff_bench.report import figures as F
from hpff_bench.report import tables as T
from hpff_bench.report.load import read_results
from hpff_bench.runner.store import dumps, make_record

GiB = 2**30


def _cfg(tmp_path, configs) -> pd.DataFrame:
    f = tmp_path / "r.jsonl"
    recs = [make_record("estimate", "ok", config=c, predicted={"peak_allocated_bytes": GiB}) for c in configs]
    f.write_text("".join(dumps(r) + "\n" for r in recs), encoding="utf-8")
    return T.configs(T.add_method_names(read_results([f]).frame))


def test_a_configuration_keeps_its_name_in_a_setting_where_it_is_alone(tmp_path):
    contrast = RunConfig(network="resnet32", method="infopro", k=16, local_loss="supcon").validate()
    softmax = contrast.replace(local_loss="ce").validate()
    cfg = _cfg(tmp_path, [contrast.replace(batch_size=1024), softmax.replace(batch_size=1024),
                          contrast.replace(batch_size=64)])
    names = {(int(b), n) for b, n in zip(cfg["batch_size"], cfg["name"])}
    # at batch 64 the contrast configuration is alone, and still named as at 1024
    assert names == {(1024, "InfoPro [contrast]"), (1024, "InfoPro"), (64, "InfoPro [contrast]")}


def test_a_gc_bar_sits_in_the_group_of_its_own_cuts(tmp_path):
    # K=16: InfoPro's table makes 16 modules, HPFF's 15; gc at K=16 (split auto = InfoPro's
    # cuts) checkpoints 16 segments, so it belongs to the (16, 16) group, not the first K=16 one
    dgl = RunConfig(network="resnet32", method="dgl", k=16)
    cfg = _cfg(tmp_path, [dgl, dgl.replace(split="hpff"), RunConfig(network="resnet32", method="gc", k=16)])
    others = cfg[cfg["method"] != "bp"]
    groups = F._x_groups(others)
    assert groups == [(16, 15), (16, 16)]
    gc = cfg[cfg["method"] == "gc"].iloc[0]
    assert int(gc["modules"]) == 1 and F._group_of(gc, groups) == 1
