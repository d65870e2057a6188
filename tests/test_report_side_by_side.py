"""suites/test_method_speed.py's runs in the report: read, tabled, drawn, and enough on their own."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from hpff_bench.report import figures as F
from hpff_bench.report import tables as T
from hpff_bench.report.load import read_results


def _row(step, ratio, low=None, high=None, flops=None, eff=None):
    r = {"step_seconds": step, "step_vs_bp": ratio}
    if low is not None:
        r["step_vs_bp_per_round"] = [low, high]
    if flops is not None:
        r.update(flops_vs_bp=flops, flop_efficiency_vs_bp=eff)
    return r


def speed_json(path, *, retain_heap=None, official=True, bad_case=False):
    configurations = {
        "bp": _row(0.4, 1.0, 1.0, 1.0, 1.0, 1.0),
        "dgl": _row(0.5, 1.25, 1.1, 1.4, 0.875, 1.25 / 0.875),
        "infopro+hpff": _row(2.6, 6.5, 6.0, 7.0),  # no FLOPs counted
    }
    if bad_case:
        configurations["predsim"] = _row(-1.0, 2.0)
    extra = {"network": "resnet32", "k": 16, "batch_size": 128, "threads": 2, "device": "cpu",
             "device_name": None, "split": None, "configurations": configurations}
    if retain_heap is not None:
        extra["retain_heap"] = retain_heap
    if official:
        extra["official_code"] = {"path": "/x", "configurations": {
            "official code bp": _row(0.38, 0.95, 0.9, 1.0, 1.0, 0.95),
            "official code infopro+hpff": _row(2.2, 5.5, 5.0, 6.0, 4.8, 5.5 / 4.8)}}
    data = {"machine_info": {"cpu": {"brand_raw": "Test CPU"}}, "datetime": "2026-12-02T00:00:00",
            "benchmarks": [{"name": "test_method_speed_against_bp", "extra_info": extra, "stats": {}}]}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_every_configuration_and_the_official_codes_steps_become_rows(tmp_path):
    loaded = read_results([speed_json(tmp_path / "speed.json", bad_case=True)])
    sb = loaded.side_by_side
    assert loaded.frame.empty  # no result records, and no "has no record" note for the run
    assert list(sb["configuration"]) == ["bp", "dgl", "infopro+hpff", "official code bp", "official code infopro+hpff"]
    assert list(sb["code"]) == ["ours"] * 3 + ["official"] * 2
    assert set(sb["run"]) == {"resnet32 K=16 batch 128, cpu, 2 threads (Test CPU)"}
    dgl = sb[sb["configuration"] == "dgl"].iloc[0]
    assert (dgl["step_vs_bp"], dgl["round_low"], dgl["round_high"], dgl["flops_vs_bp"]) == (1.25, 1.1, 1.4, 0.875)
    assert np.isnan(sb[sb["configuration"] == "infopro+hpff"]["flops_vs_bp"].iloc[0])
    assert loaded.notes == [f"{tmp_path / 'speed.json'}: test_method_speed_against_bp: case 'predsim' has no "
                            "positive step_seconds and step_vs_bp; left out"]


def test_runs_that_would_read_alike_are_told_apart_by_their_file(tmp_path):
    a = speed_json(tmp_path / "plain.json")
    b = speed_json(tmp_path / "again.json")
    c = speed_json(tmp_path / "heap.json", retain_heap=True)
    runs = set(read_results([a, b, c]).side_by_side["run"])
    base = "resnet32 K=16 batch 128, cpu, 2 threads (Test CPU)"
    assert runs == {f"{base} [plain]", f"{base} [again]", f"{base}, heap retained"}


def test_table_has_a_row_per_configuration_with_the_flop_efficiency(tmp_path):
    sb = read_results([speed_json(tmp_path / "speed.json")]).side_by_side
    t = T.side_by_side_table(sb)
    assert list(t.data["code"]) == ["hpff-bench"] * 3 + ["official code"] * 2
    row = t.data[t.data["configuration"] == "official code infopro+hpff"].iloc[0]
    assert row["time / FLOP ratio"] == pytest.approx(5.5 / 4.8)
    assert T.side_by_side_table(sb.iloc[0:0]) == T.NO_SIDE_BY_SIDE


def test_the_figure_draws_the_measured_ratios(tmp_path):
    sb = read_results([speed_json(tmp_path / "speed.json")]).side_by_side
    fig = F.side_by_side(sb)
    left, right = fig.axes[0], fig.axes[1]
    bars = [p for p in left.patches if isinstance(p, Rectangle) and p.get_width() > 0]
    assert [round(p.get_width(), 6) for p in bars] == [1.0, 1.25, 6.5, 0.95, 5.5]
    assert [bool(p.get_hatch()) for p in bars] == [False, False, False, True, True]  # the official code's
    # the per-FLOP panel: a bar only where FLOPs were counted, at time ratio / FLOP ratio
    eff = sorted(round(p.get_width(), 6) for p in right.patches if isinstance(p, Rectangle) and p.get_width() > 0)
    assert eff == sorted(round(v, 6) for v in (1.0, 1.25 / 0.875, 0.95, 5.5 / 4.8))
    assert [t.get_text() for t in left.get_yticklabels()][-2:] == ["HPFF's official code: its E2E path",
                                                                   "HPFF's official code: infopro+hpff"]
    assert F.side_by_side(sb.iloc[0:0]) == T.NO_SIDE_BY_SIDE


def test_a_side_by_side_run_alone_is_a_report(tmp_path, cli):
    src = speed_json(tmp_path / "speed.json")
    code, out, err = cli("report", str(src), "-o", str(tmp_path / "rep"))
    assert code == 0, err
    assert "0 records" in out and "1 side-by-side speed run(s)" in out
    manifest = json.loads((tmp_path / "rep" / "manifest.json").read_text())
    assert set(manifest["figures"]) == {"side_by_side"} and "side_by_side" in manifest["tables"]
    assert "Step time side by side" in (tmp_path / "rep" / "index.html").read_text()
