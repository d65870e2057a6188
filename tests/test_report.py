"""`hpff-bench report`: files, values, images and HTML from hand-made results files.

The fixtures (tests/fixtures/, written by make_fixtures.py) follow the result-record schema in
notes/INTERFACES.md with whole-MiB numbers, so every expected value below is read off the
fixture, not off the code under test. One report is rendered per module (drawing is the slow
part), then inspected by many small tests.
"""

from __future__ import annotations

import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from hpff_bench.cli import main as cli_main
from hpff_bench.report import build_report
from hpff_bench.report import tables as T

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = FIXTURES / "results_small.jsonl"
FAILED = FIXTURES / "results_failed_only.jsonl"
BENCH = FIXTURES / "benchmark_small.json"
MiB = 2**20

FIGURES = ("memory_vs_k", "breakdown", "accuracy_vs_memory", "accuracy_ordering", "prediction_parity", "speed",
           "decomposition")
TABLES = (
    "memory_vs_k", "breakdown", "accuracy", "accuracy_orderings", "hpff_ablation", "patch_grid", "prediction_error",
    "speed", "published_comparison", "published_reference", "published_memory", "environment", "failed_runs",
    "hpff_decomposition",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "fixture"
    return build_report([SMALL, BENCH], out)


def _table(report, name) -> pd.DataFrame:
    return pd.read_csv(report.out_dir / "tables" / f"{name}.csv")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _row(df: pd.DataFrame, **match) -> pd.Series:
    sel = df
    for k, v in match.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"expected one row for {match}, got {len(sel)}:\n{sel}"
    return sel.iloc[0]


# ----- every file is produced ------------------------------------------------------------------
def test_every_file_is_written(report):
    out = report.out_dir
    assert (out / "index.html").stat().st_size > 10_000
    assert (out / "report.md").stat().st_size > 1_000
    for f in FIGURES:
        for ext in ("png", "svg"):
            p = out / "figures" / f"{f}.{ext}"
            assert p.is_file() and p.stat().st_size > 5_000, p
    for t in TABLES:
        for ext in ("csv", "tex"):
            p = out / "tables" / f"{t}.{ext}"
            assert p.is_file() and p.stat().st_size > 50, p
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["figures"]) == set(FIGURES)
    assert set(manifest["tables"]) == set(TABLES)
    # the hand-made fixture predates the per-aux-step number; the PFF figure says what it needs
    # and it has no suites/test_method_speed.py run (tests/test_report_side_by_side.py has)
    assert manifest["left_out"] == {"figure:pff": report.left_out["figure:pff"],
                                    "figure:side_by_side": T.NO_SIDE_BY_SIDE, "table:side_by_side": T.NO_SIDE_BY_SIDE}
    assert "aux_scope_peak_bytes" in report.left_out["figure:pff"]
    assert manifest["records"] == 34 + 2 and manifest["failed"] == 4


# ----- table values are the fixture's numbers -------------------------------------------------
def test_memory_table_values(report):
    t = _table(report, "memory_vs_k")
    # a table mixing MiB- and GiB-sized runs uses MiB throughout
    assert "measured (MiB)" in t.columns and "predicted CUDA peak (MiB)" in t.columns
    s64 = "resnet32 · cifar10 · batch 64"
    dgl = _row(t, setting=s64, method="DGL", K=4)
    assert dgl["measured (MiB)"] == 200 and dgl["predicted CUDA peak (MiB)"] == 210
    assert dgl["measured by"] == "cuda-allocator" and dgl["modules"] == 4
    assert dgl["vs BP (x)"] == pytest.approx(200 / 400)
    # predicted only (an estimate): measured empty, ratio from the prediction
    greedy = _row(t, setting=s64, method="Greedy SL", K=4)
    assert pd.isna(greedy["measured (MiB)"]) and greedy["predicted CUDA peak (MiB)"] == 180
    # HPFF's K=16 is 15 modules; the real count is printed
    hp = _row(t, setting=s64, method="DGL+HPFF (n=2)", K=16)
    assert hp["modules"] == 15 and hp["measured (MiB)"] == 135
    # CPU runs measured by the live-tensor tracker
    cpu = _row(t, setting="resnet32 · cifar10 · batch 16", method="DGL", K=4)
    assert cpu["measured by"] == "tensor-tracker" and cpu["measured (MiB)"] == 50
    r110 = _row(t, setting="resnet110 · cifar10 · batch 1024", method="BP", K=1)
    assert r110["predicted CUDA peak (MiB)"] == 9728
    # failed runs never appear among the numbers
    assert not ((t["method"] == "InfoPro") & (t["K"] == 2)).any()


def test_schema0_profile_dict_is_upgraded_and_its_cpu_peak_found(report):
    """A bare profile_config dict (CPU: peak in peak_memory_bytes/tracked_peak_bytes)."""
    s16 = "resnet32 · cifar10 · batch 16"
    m = _row(_table(report, "memory_vs_k"), setting=s16, method="Greedy SL")
    assert m["measured (MiB)"] == 45 and m["measured by"] == "tensor-tracker"
    assert _row(_table(report, "speed"), setting=s16, method="Greedy SL")["step time (ms)"] == pytest.approx(450)
    assert _row(_table(report, "prediction_error"), setting=s16, method="Greedy SL")["predicted (MiB)"] == 46


def test_breakdown_values(report):
    t = _table(report, "breakdown")
    bp = _row(t, method="BP", setting="resnet32 · cifar10 · batch 64")
    assert bp["backbone activations (MiB)"] == 380 and bp["other (MiB)"] == 13
    assert bp["total (MiB)"] == 400 and bp["source"] == "cuda-allocator"
    greedy = _row(t, method="Greedy SL")
    assert greedy["source"] == "predicted" and greedy["total (MiB)"] == 180


def test_accuracy_table_means_over_seeds_and_pareto(report):
    t = _table(report, "accuracy")
    bp = _row(t, method="BP")
    assert bp["test error (%)"] == pytest.approx(6.6) and bp["seeds"] == "0, 1"
    assert bp["std (%)"] == pytest.approx(pd.Series([6.5, 6.7]).std())
    assert bp["peak memory (MiB)"] == 400  # joined from the profile of the same configuration
    # accuracy.top1 without test_error_pct -> 100 * (1 - top1)
    assert _row(t, method="InfoPro", K=4)["test error (%)"] == pytest.approx(8.5)
    pareto = set(t.loc[t["Pareto-optimal"], "method"] + " K" + t.loc[t["Pareto-optimal"], "K"].astype(str))
    # fixture points (memory MiB, error %): BP 400/6.6, InfoPro K4 260/8.5, DGL+HPFF 135/9.0,
    # DGL+HiLo (CL) 125/10.6, DGL K16 118/14.2 are non-dominated; DGL K4 200/11.0,
    # DGL+HiLo 140/9.5 and InfoPro+HPFF 180/9.2 are dominated.
    assert pareto == {"BP K1", "InfoPro K4", "DGL+HPFF (n=2) K16", "DGL+HiLo (CL) K16", "DGL K16"}


def test_ablation_table_matches_the_paper_layout(report):
    t = _table(report, "hpff_ablation")
    dgl = t[t["method"].str.startswith("DGL")]
    got = {
        (bool(r["IL"]), bool(r["CL"]), None if pd.isna(r["PFF n"]) else int(r["PFF n"])):
            (r["test error (%)"], r["peak memory (MiB)"], r["published error (%)"])
        for _, r in dgl.iterrows()
    }
    assert got[(True, False, None)][:2] == (pytest.approx(14.2), 118)
    assert got[(True, False, None)][2] == 14.08
    assert got[(False, True, None)] == (pytest.approx(10.6), 125, 10.51)
    assert got[(True, True, None)] == (pytest.approx(9.5), 140, 9.44)
    assert got[(True, True, 2)] == (pytest.approx(9.0), 135, 8.94)
    assert pd.isna(got[(True, True, 4)][0]) and got[(True, True, 4)][1] == 133
    # a group with a single variant is not an ablation
    assert not (t["setting"] == "resnet32 · cifar10 · batch 8").any()


def test_patch_grid_table(report):
    t = _table(report, "patch_grid")
    assert list(t["n"]) == [1, 2, 4]
    assert list(t["peak memory (MiB)"]) == [140, 135, 133]
    assert list(t["aux activations at the peak (MiB)"].fillna(-1)) == [-1, 55, 53]
    assert t["one aux step (MiB)"].isna().all()  # the hand-made fixture has no aux-step peaks


def test_prediction_error_table(report):
    t = _table(report, "prediction_error")
    dgl = _row(t, method="DGL", K=4, setting="resnet32 · cifar10 · batch 64")
    assert dgl["relative error (%)"] == pytest.approx(100 * (210 - 200) / 200)
    bp = _row(t, method="BP", setting="resnet32 · cifar10 · batch 64")
    assert bp["relative error (%)"] == pytest.approx(100 * (392 - 400) / 400)
    assert set(t["measured by"]) == {"cuda-allocator", "tensor-tracker"}
    # the allocator is compared with the predicted allocator peak, the CPU tracker with the
    # prediction's live tensors (no allocator rounding or cuBLAS workspace on the CPU)
    assert dgl["predicted quantity"] == "allocator peak"
    cpu = _row(t, method="BP", setting="resnet32 · cifar10 · batch 16")
    assert cpu["predicted quantity"] == "live tensors" and cpu["predicted (MiB)"] == 81
    assert cpu["relative error (%)"] == pytest.approx(100 * (81 - 80) / 80)
    # runs with only one of the two are not in the parity table
    assert not ((t["method"] == "Greedy SL") & (t["setting"] == "resnet32 · cifar10 · batch 64")).any()
    assert not (t["method"] == "DGL+HiLo").any()


def test_speed_table(report):
    t = _table(report, "speed")
    gc = _row(t, method="GC", K=4)
    assert gc["step time (ms)"] == pytest.approx(70) and gc["images/s"] == pytest.approx(64 / 0.070)
    assert gc["step time vs BP (x)"] == pytest.approx(0.070 / 0.050)
    # CPU runs are compared with the CPU BP, not the GPU one
    cpu = _row(t, method="InfoPro+HPFF (n=2)", setting="resnet32 · cifar10 · batch 16")
    assert cpu["step time vs BP (x)"] == pytest.approx(0.90 / 0.40)
    # the benchmark JSON's timing comes from its stats (median 0.5 s, batch 8)
    b = _row(t, method="InfoPro+HPFF (n=2)", setting="resnet32 · cifar10 · batch 8")
    assert b["step time (ms)"] == pytest.approx(500) and b["images/s"] == pytest.approx(16)
    assert b["step time vs BP (x)"] == pytest.approx(0.5 / 0.2)


def test_published_numbers_sit_beside_ours_with_their_source(report):
    t = _table(report, "published_comparison")
    hp = _row(t, method="DGL+HPFF (n=2)")
    assert hp["published (%)"] == 8.94 and hp["source"] == "HPFF paper (ECCV 2024)"
    assert hp["ours: test error (%)"] == pytest.approx(9.0) and hp["paper K"] == 16 and hp["modules"] == 15
    dgl4 = _row(t, method="DGL", modules=4)
    assert dgl4["published (%)"] == 11.48 and dgl4["source"] == "InfoPro paper (ICLR 2021)"
    # BP has one number in each paper
    assert sorted(t.loc[t["method"] == "BP", "published (%)"]) == [6.37, 7.37]
    ref = _table(report, "published_reference")
    assert len(ref) == 34 + 12
    assert {"source", "network", "method", "paper K", "modules", "test error (%)"} <= set(ref.columns)


def test_environment_and_failures(report):
    env = _table(report, "environment")
    assert {"NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 3070"} <= set(env["computed on"])
    assert env["records"].sum() == 36
    f = _table(report, "failed_runs")
    assert sorted(f["status"]) == ["diverged", "error", "oom", "skipped"]
    assert "CUDA out of memory" in _row(f, status="oom")["why"]
    assert _row(f, status="diverged")["why"] == "loss became nan at epoch 3"


def test_latex_is_booktabs_and_escaped(report):
    tex = (report.out_dir / "tables" / "hpff_ablation.tex").read_text()
    for token in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}", "test error (\\%)"):
        assert token in tex
    assert "$\\checkmark$" in tex and "✓" not in tex and "—" not in tex
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0]
    assert all(line.endswith("\\\\") for line in body.strip().splitlines())
    ncols = tex.split("\\begin{tabular}{")[1].split("}")[0]
    assert all(line.count(" & ") == len(ncols) - 1 for line in body.strip().splitlines())


# ----- figures --------------------------------------------------------------------------------
def test_figures_are_images_of_the_expected_size(report):
    for name, info in report.figures.items():
        png = report.out_dir / info["png"]
        w, h = _png_size(png)
        assert (w, h) == (info["width_px"], info["height_px"]), name
        # one paper column (3.5 in) or two (7 in) at 200 dpi
        assert w in (700, 1400), (name, w)
        assert 300 <= h <= 3000, (name, h)
        svg = (report.out_dir / info["svg"]).read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # four settings -> memory vs K has several panels, two columns wide
    assert report.figures["memory_vs_k"]["width_px"] == 1400
    # BP/GC and DGL/InfoPro: one parity panel per family, two columns wide
    assert report.figures["prediction_parity"]["width_px"] == 1400


def test_a_figure_saved_twice_is_the_same_svg(tmp_path):
    # clip-path ids are hashed with svg.hashsalt when the SVG is written; unsalted, they are
    # random, and every re-rendered report rewrote every SVG
    from matplotlib.figure import Figure

    from hpff_bench.report import figures as F

    def render(name):
        with F.style():
            fig = Figure()
            fig.subplots().bar(["a", "b"], [1, 2])
        return (tmp_path / F.save(fig, tmp_path / name)["svg"]).read_bytes()

    first, second = render("first"), render("second")
    assert b"clip-path" in first and first == second


def test_figures_are_not_blank(report):
    import matplotlib.image as mpimg

    for name, info in report.figures.items():
        img = mpimg.imread(report.out_dir / info["png"])
        rgb = img[..., :3]
        non_white = (rgb < 0.95).any(axis=-1).mean()
        assert non_white > 0.03, f"{name} is (nearly) blank"


def test_method_colours_are_the_same_everywhere():
    from hpff_bench.report.style import method_color, order_methods

    labels = ["InfoPro+HPFF (n=2)", "BP", "DGL", "GC", "DGL+HPFF (n=2)", "Greedy SL", "DGL+HiLo (CL)"]
    assert order_methods(labels) == [
        "BP", "GC", "Greedy SL", "DGL", "DGL+HiLo (CL)", "DGL+HPFF (n=2)", "InfoPro+HPFF (n=2)",
    ]
    colours = {m: method_color(m) for m in labels}
    assert len(set(colours.values())) == len(labels)
    # a colour depends on the label alone; a [...] configuration keeps the method's hue but not
    # its shade (bars have no marker: the same colour would make two series one)
    import colorsys

    import matplotlib.colors as mcolors
    streamed = method_color("DGL+HPFF (n=2) [streamed patches]")
    assert streamed != colours["DGL+HPFF (n=2)"] and streamed == method_color("DGL+HPFF (n=2) [streamed patches]")
    hue = [colorsys.rgb_to_hls(*mcolors.to_rgb(c))[0] for c in (streamed, colours["DGL+HPFF (n=2)"])]
    assert abs(hue[0] - hue[1]) < 0.02
    assert method_color("DGL+HPFF (n=4)") != colours["DGL+HPFF (n=2)"]


# ----- HTML and Markdown ----------------------------------------------------------------------
class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("img", "meta", "br", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_index_html_parses_and_is_self_contained(report):
    p = _Collector()
    p.feed((report.out_dir / "index.html").read_text(encoding="utf-8"))
    p.close()
    assert p.stack == [], f"unclosed tags {p.stack}"
    imgs = [a for t, a in p.tags if t == "img"]
    assert len(imgs) == len(FIGURES)
    assert all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    tables = [a for t, a in p.tags if t == "table"]
    assert len(tables) == len(TABLES)
    links = {a["href"] for t, a in p.tags if t == "a" and "href" in a}
    for t in TABLES:
        assert f"tables/{t}.csv" in links and f"tables/{t}.tex" in links
    text = "".join(p.text)
    assert "HPFF paper (ECCV 2024)" in text and "CUDA out of memory" in text


def test_markdown_links_every_figure_and_holds_every_table(report):
    md = (report.out_dir / "report.md").read_text(encoding="utf-8")
    for f in FIGURES:
        assert f"](figures/{f}.png)" in md
    assert md.count("| :--- |") + md.count("| ---: |") >= len(TABLES)
    assert "| DGL+HPFF (n=2) | 16 | 15 |" in md


# ----- failed-only results, benchmark JSON, CLI ----------------------------------------------
def test_only_failed_runs_still_render(tmp_path):
    r = build_report([FAILED], tmp_path / "failed")
    assert r.records == 4 and r.failed == 4
    assert r.figures == {}
    assert set(r.tables) == {"failed_runs", "environment", "published_reference", "published_memory"}
    html = (tmp_path / "failed" / "index.html").read_text()
    assert html.count('class="missing"') >= len(FIGURES)
    assert "left out: no successful runs" in html
    p = _Collector()
    p.feed(html)
    assert p.stack == []
    f = pd.read_csv(tmp_path / "failed" / "tables" / "failed_runs.csv")
    assert sorted(f["status"]) == ["diverged", "error", "oom", "skipped"]


def test_pytest_benchmark_json_alone_is_a_report(tmp_path):
    r = build_report([BENCH], tmp_path / "bench")
    assert r.records == 2  # the foreign benchmark without a record is left out, with a note
    assert any("test_something_else" in n for n in r.notes)
    speed = pd.read_csv(tmp_path / "bench" / "tables" / "speed.csv")
    assert sorted(speed["step time (ms)"]) == [pytest.approx(200), pytest.approx(500)]
    mem = pd.read_csv(tmp_path / "bench" / "tables" / "memory_vs_k.csv")
    assert sorted(mem["measured (MiB)"]) == [36, 40]
    assert "speed" in r.figures and "memory_vs_k" in r.figures


def test_bad_lines_are_noted_not_fatal(tmp_path):
    lines = SMALL.read_text().splitlines()[:3] + ["{not json", '{"no": "schema"}', ""]
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(lines))
    r = build_report([tmp_path], tmp_path / "out")
    assert r.records == 3
    assert len(r.notes) == 2


def test_cli_prints_where_the_report_went(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "failed").mkdir(parents=True)
    (tmp_path / "results" / "failed" / "x.jsonl").write_text(FAILED.read_text())
    assert cli_main(["report", "results/failed"]) == 0
    out = capsys.readouterr().out
    assert "reports/failed/index.html" in out
    assert (tmp_path / "reports" / "failed" / "report.md").is_file()


def test_cli_missing_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]


def test_empty_file_and_records_without_config_still_render(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    r = build_report([tmp_path / "empty.jsonl"], tmp_path / "o1")
    assert r.records == 0 and r.figures == {} and set(r.tables) == {"published_reference", "published_memory"}
    assert "left out" in (tmp_path / "o1" / "index.html").read_text()
    bad = {"schema": 1, "run_id": "x", "kind": "profile", "status": "error", "message": "ValueError: no config",
           "config": None, "memory": None, "env": None}
    (tmp_path / "noconfig.jsonl").write_text(json.dumps(bad) + "\n")
    r = build_report([tmp_path / "noconfig.jsonl"], tmp_path / "o2")
    f = pd.read_csv(tmp_path / "o2" / "tables" / "failed_runs.csv")
    assert list(f["why"]) == ["ValueError: no config"]


def test_configurations_sharing_a_label_get_told_apart(tmp_path):
    """Two DGL+HPFF (n=2) runs differing only in --pff-exec: both shown, the non-default one
    named by the difference in words."""
    recs = [json.loads(line) for line in SMALL.read_text().splitlines()]
    hp = next(r for r in recs if r["label"] == "DGL+HPFF (n=2)" and r["kind"] == "profile")
    streamed = json.loads(json.dumps(hp))
    streamed["config"]["pff_exec"] = "streamed"
    streamed["memory"]["peak_allocated_bytes"] = 125 * MiB
    bp = next(r for r in recs if r["label"] == "BP" and r["kind"] == "profile")
    f = tmp_path / "r.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in (bp, hp, streamed)) + "\n")
    build_report([f], tmp_path / "o")
    t = pd.read_csv(tmp_path / "o" / "tables" / "memory_vs_k.csv")
    got = dict(zip(t["method"], t["measured (MiB)"]))
    assert got == {"BP": 400, "DGL+HPFF (n=2)": 135, "DGL+HPFF (n=2) [streamed patches]": 125}


def test_a_real_benchmark_session_json_is_accepted(tmp_path):
    """Written by `pytest suites/ --benchmark-only -m bench_smoke --benchmark-json F` on a CPU."""
    path = FIXTURES / "benchmark_real_cpu.json"
    data = json.loads(path.read_text())
    r = build_report([path], tmp_path / "o")
    assert r.records == len(data["benchmarks"]) == 2 and r.notes == []
    mem = pd.read_csv(tmp_path / "o" / "tables" / "memory_vs_k.csv")
    speed = pd.read_csv(tmp_path / "o" / "tables" / "speed.csv")
    for b in data["benchmarks"]:
        label = b["extra_info"]["label"]
        m = _row(mem, method=label)
        assert m["measured (MiB)"] == pytest.approx(b["extra_info"]["peak_memory_bytes"] / MiB)
        assert m["measured by"] == "tensor-tracker"
        assert m["predicted CUDA peak (MiB)"] == pytest.approx(b["extra_info"]["predicted_cuda_peak_bytes"] / MiB)
        assert _row(speed, method=label)["step time (ms)"] == pytest.approx(b["stats"]["median"] * 1000)
    parity = pd.read_csv(tmp_path / "o" / "tables" / "prediction_error.csv")
    assert set(parity["predicted quantity"]) == {"live tensors"}
    assert (parity["relative error (%)"].abs() < 10).all()
