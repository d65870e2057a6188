"""Assemble the report: read results, compute tables, draw figures, write every file.

Layout of the output directory:
    index.html            self-contained (PNG figures embedded as base64; links to the files)
    report.md             the same content, figures linked from figures/
    figures/NAME.png|svg  every figure
    tables/NAME.csv|tex   every table (CSV unrounded; LaTeX booktabs)
    manifest.json         what was written, each figure's pixel size, what was left out and why
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from hpff_bench.report import decomposition as D
from hpff_bench.report import figures as F
from hpff_bench.report import orderings
from hpff_bench.report import tables as T
from hpff_bench.report.load import Loaded, read_results
from hpff_bench.report.ordering_figure import accuracy_ordering
from hpff_bench.report.render import CSS, slug, to_html, to_latex, to_markdown

ACCURACY_ORDERING = "accuracy_ordering"
# the page's content width (render.CSS max-width 1100px minus padding): a two-column figure
# (1,400 px) is shown at this width, a one-column one (700 px) at its own
PAGE_PX = 1068


@dataclass
class Section:
    title: str
    intro: str
    items: list[tuple[str, str]]  # ("figure"|"table", name)


SECTIONS = [
    Section("Memory vs K", "Peak memory of one training step by K: one row of panels per setting, one "
            "panel per method family, each family plain and with full HPFF (HiLo + PFF n=2, patches "
            "batched), gradient checkpointing (GC) at the same cut points beside them, BP (K=1) as the "
            "dashed line (dotted where predicted). Bars: solid = measured by the CUDA allocator, dotted "
            "= measured by the live-tensor tracker (CPU), hatched = predicted on fake tensors. A tick "
            "names the real module count where it differs from K. Patch grids, streamed patches and "
            "the cascade ablation are in sections 3 and 5; every configuration is in the table.",
            [("figure", "memory_vs_k"), ("table", "memory_vs_k")]),
    Section("Where the memory goes", "What is live at the peak, by category: BP, and every other "
            "method at its largest K (all K in the table). 'other' is what is born outside a forward "
            "pass: gradients with respect to activations and the backward's temporaries, and the "
            "loss and optimizer steps. At batch 1024 it is 192-256 MiB for Greedy SL and DGL on "
            "resnet32, i.e. 3-4 first-stage feature maps (1024 x 16 x 32 x 32 floats = 64 MiB each): "
            "the peak falls in a first-stage module's backward, after its aux net's activations are "
            "freed, which is why they read 0. The breakdown counts live tensors only; the predicted "
            "CUDA peak of section 1 adds the allocator's block rounding and the cuBLAS workspaces "
            "(2 x 32 MiB on Hopper, the default; 2 x 4 MiB before): the 64.0-64.7 MiB between the two.",
            [("figure", "breakdown"), ("table", "breakdown")]),
    Section("PFF: does it save memory?", "Top of each pair: one aux step, the largest peak of the aux "
            "activations born in one auxiliary net's step (forward and backward), by patch grid n; "
            "bottom: the whole step's peak. Solid = patches batched (folded into the batch, all live at "
            "once), dashed = streamed (one patch at a time). PFF's claim, aux activations O(D/n^2), "
            "holds only where the aux net's activations are large beside its input and the patches "
            "are streamed (InfoPro's decoder works at image size); Greedy SL and DGL pool first, so "
            "the patch copies cost more than they save.",
            [("figure", "pff"), ("table", "patch_grid")]),
    Section("Does HPFF save memory?", "For DGL, InfoPro (on HPFF's loss settings) and PredSim at the HPFF "
            "paper's ResNet-32 \"K=16\" and ResNet-110 \"K=55\": the base method, + HiLo, then + PFF for "
            "each PFF execution (batched patches, streamed patches, the official code's quadrant "
            "decoders), each bar split into the allocated peak (live tensors), the allocator's cache "
            "(reserved - allocated, hatched) and the CUDA context (white; assumed in predictions). The "
            "table gives each step's change against the step it adds to, and which term moved; why "
            "it moves, per method, is in docs/memory.md ('Does HPFF save memory?').",
            [("figure", "decomposition"), ("table", "hpff_decomposition")]),
    Section("Accuracy vs memory", "Test error against peak memory, one point per configuration, "
            "error bars = std over seeds, dashed = Pareto front. Hollow markers: memory predicted. "
            "A panel title says the batch of the memory where it is not the training batch.",
            [("figure", "accuracy_vs_memory"), ("table", "accuracy")]),
    Section("Accuracy: the papers' orderings", "For studies with several seeds (such as the accuracy "
            "proxy, docs/accuracy.md): left, each configuration's test error, mean ± std over seeds "
            "with every seed as a dot, and the published error of the same configuration (the papers' "
            "full schedule) at the right. Right: each ordering the papers report (BP lowest; HPFF below "
            "its base; InfoPro ≤ DGL ≤ Greedy SL) as a difference in error points with a whisker of "
            "± (std + std): where the whisker does not cross zero the seeds resolve it. A short "
            "schedule can reproduce an ordering, not the papers' errors.",
            [("figure", "accuracy_ordering"), ("table", "accuracy_orderings")]),
    Section("HPFF ablation", "The HPFF paper's switches: independent level (IL), cascade level (CL), "
            "patch feature fusion (PFF, n x n patches).", [("table", "hpff_ablation")]),
    Section("Predicted vs measured", "Fake-tensor prediction against the measured peak, where a run "
            "has both: one panel per method family, one point per configuration (named in the table).",
            [("figure", "prediction_parity"), ("table", "prediction_error")]),
    Section("Speed", "Median step time with its interquartile range over the timed steps, per method "
            "family as in section 1. 'n.r.' (not resolved) over a bar: its IQR overlaps the plain "
            "method's at the same K, so the difference is inside the noise. Runs timed while another "
            "run shared the machine (their records overlap in time on one host) are left out. A bar without an IQR has no per-step times "
            "(training records keep only the median), so nothing can be said of its noise. Where "
            "the records have FLOPs per step, a 'per FLOP' row under each setting gives the FLOP "
            "efficiency relative to BP: step time ÷ BP's over FLOPs ÷ BP's (1 = BP's FLOP "
            "throughput, above = slower per FLOP). The table says the same against BP.",
            [("figure", "speed"), ("table", "speed")]),
    Section("Step time side by side", "suites/test_method_speed.py's runs: one step of every method "
            "and option per round, in a shuffled order, each divided by BP's step of the same round "
            "(median over the rounds; whiskers: the lowest and highest ratio of one round; diamonds: "
            "FLOPs per step ÷ BP's). Right: the FLOP efficiency, time ratio ÷ FLOP ratio (1 = BP's "
            "FLOP throughput, above = slower per FLOP). Hatched: the HPFF authors' own code, stepped "
            "in the same rounds (--hpff-official-code).",
            [("figure", "side_by_side"), ("table", "side_by_side")]),
    Section("Published numbers", "The InfoPro paper's GPU-memory tables and the CIFAR-10 test errors "
            "of the InfoPro and HPFF papers beside ours, each with its source (docs/published.md). "
            "suites/papers.toml runs our side of the memory tables.",
            [("table", "published_memory"), ("table", "published_comparison"), ("table", "published_reference")]),
    Section("Environment and failed runs", "Where each number came from, and the runs that did "
            "not finish and why.", [("table", "environment"), ("table", "failed_runs")]),
]


@dataclass
class Report:
    out_dir: Path
    index: Path
    markdown: Path
    manifest: Path
    figures: dict[str, dict] = field(default_factory=dict)
    tables: dict[str, dict] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    records: int = 0
    failed: int = 0
    side_by_side_runs: int = 0
    notes: list[str] = field(default_factory=list)
    counts: list[str] = field(default_factory=list)  # per kind: records by status
    suites: str = ""


def build_report(paths, out_dir, title: str | None = None) -> Report:
    loaded = read_results(paths)
    return render_report(loaded, Path(out_dir), title or f"hpff-bench report: {Path(out_dir).name}")


def render_report(loaded: Loaded, out: Path, title: str) -> Report:
    df = loaded.frame
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    (out / "tables").mkdir(exist_ok=True)
    _remove_previous(out)

    if not df.empty:
        df = T.add_method_names(df)
    cfg = T.configs(df) if not df.empty else pd.DataFrame()

    tables: dict[str, T.Table | str] = {}
    if df.empty:
        for name in ("memory_vs_k", "breakdown", "accuracy", "accuracy_orderings", "hpff_ablation", "patch_grid",
                     "prediction_error", "speed", "published_comparison", "environment", "failed_runs"):
            tables[name] = "no records"
    else:
        tables["memory_vs_k"] = T.memory_table(cfg)
        tables["breakdown"] = T.breakdown_table(cfg)
        tables["accuracy"] = T.accuracy_table(cfg)
        tables["accuracy_orderings"] = orderings.ordering_table(cfg)
        tables["hpff_ablation"] = T.ablation_table(cfg)
        tables["patch_grid"] = T.patch_grid_table(cfg)
        tables["prediction_error"] = T.parity_table(cfg)
        tables["speed"] = T.speed_table(cfg)
        tables["published_comparison"] = T.published_table(cfg)
        tables["environment"] = T.environment_table(df)
        tables["failed_runs"] = T.failures_table(df)
    tables["side_by_side"] = T.side_by_side_table(loaded.side_by_side)
    tables["published_reference"] = T.published_reference_table()
    tables["published_memory"] = T.published_memory_table(df)
    tables["hpff_decomposition"] = D.decomposition_table(df) if not df.empty else "no records"

    if cfg.empty:
        reason = "no successful runs" if not df.empty else "no records"
        figs: dict[str, object] = dict.fromkeys(F.FIGURES, reason)
    else:
        figs = F.all_figures(cfg, T.pareto_mask(cfg))
    figs[ACCURACY_ORDERING] = accuracy_ordering(cfg) if not cfg.empty else figs[F.FIGURES[0]]
    figs[F.SIDE_BY_SIDE] = F.side_by_side(loaded.side_by_side)
    figs["decomposition"] = D.decomposition_figure(df) if not df.empty else "no records"

    report = Report(out, out / "index.html", out / "report.md", out / "manifest.json",
                    records=len(df), failed=int((df["status"] != "ok").sum()) if not df.empty else 0,
                    side_by_side_runs=loaded.side_by_side["run"].nunique() if not loaded.side_by_side.empty else 0,
                    notes=list(loaded.notes), counts=_run_counts(df), suites=_suites(loaded.frame))
    for name, t in tables.items():
        if isinstance(t, str):
            report.left_out[f"table:{name}"] = t
            continue
        csv, tex = out / "tables" / f"{name}.csv", out / "tables" / f"{name}.tex"
        t.data.to_csv(csv, index=False)
        tex.write_text(to_latex(t), encoding="utf-8")
        report.tables[name] = {"title": t.title, "csv": _rel(csv, out), "tex": _rel(tex, out), "rows": len(t.data)}
    for name, f in figs.items():
        if isinstance(f, str):
            report.left_out[f"figure:{name}"] = f
            continue
        info = F.save(f, out / "figures" / name)
        info = {k: (_rel(Path(v), out) if k in ("png", "svg") else v) for k, v in info.items()}
        report.figures[name] = info

    sources = [str(p) for p in loaded.files]
    _write_html(report, tables, title, sources)
    _write_markdown(report, tables, title, sources)
    manifest = {
        "title": title,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": sources,
        "records": report.records,
        "failed": report.failed,
        "figures": report.figures,
        "tables": report.tables,
        "left_out": report.left_out,
        "notes": report.notes,
    }
    report.manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return report


def _rel(p: Path, out: Path) -> str:
    return os.path.relpath(p, out).replace(os.sep, "/")


def _remove_previous(out: Path) -> None:
    """Delete the files an earlier report listed, so a figure left out now is not left stale."""
    m = out / "manifest.json"
    if not m.is_file():
        return
    try:
        old = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    for group in ("figures", "tables"):
        for info in (old.get(group) or {}).values():
            for key in ("png", "svg", "csv", "tex"):
                rel = info.get(key) if isinstance(info, dict) else None
                if rel and "/" in rel and not rel.startswith(("/", "..")):
                    (out / rel).unlink(missing_ok=True)


def _summary_line(report: Report, sources: list[str]) -> str:
    return (f"{report.records} records ({report.records - report.failed} ok, {report.failed} not ok) "
            f"from {len(sources)} file(s)")


def _inputs_summary(sources: list[str]) -> str:
    """'58 files in results/cifar10/' rather than 58 paths (manifest.json lists every one)."""
    by_dir: dict[str, list[str]] = {}
    for src in sources:
        by_dir.setdefault(os.path.dirname(src) or ".", []).append(src)
    return "; ".join(files[0] if len(files) == 1 else f"{len(files)} files in {d}/" for d, files in by_dir.items())


def _run_counts(df: pd.DataFrame) -> list[str]:
    """One line per kind: how many records of each status (what ran, what did not)."""
    if df.empty:
        return []
    lines = []
    for kind, g in df.groupby(df["kind"].fillna("?"), sort=True):
        counts = g["status"].value_counts()
        lines.append(f"{kind}: " + ", ".join(f"{counts[s]} {s}" for s in ("ok", "oom", "diverged", "skipped", "error")
                                              if s in counts))
    return lines


def _suites(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    pairs = sorted({(str(s), str(p)) for s, p in zip(df["suite"].fillna("?"), df["preset"].fillna("-"))})
    return "; ".join(f"suite {s}" + (f", preset {p}" if p != "-" else "") for s, p in pairs)


def _write_html(report: Report, tables: dict, title: str, sources: list[str]) -> None:
    h = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{h(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{h(title)}</h1>",
        f"<p>{h(_summary_line(report, sources))}: <code>{h(_inputs_summary(sources))}</code>"
        + (f" ({h(report.suites)})" if report.suites else "") + ". Every input path is in "
        '<a href="manifest.json">manifest.json</a>.</p>',
        "<ul class=\"counts\">" + "".join(f"<li>{h(x)}</li>" for x in report.counts) + "</ul>",
        "<nav><ol>" + "".join(f'<li><a href="#{slug(s.title)}">{h(s.title)}</a></li>' for s in SECTIONS) + "</ol></nav>",
    ]
    for i, s in enumerate(SECTIONS, 1):
        parts.append(f'<section id="{slug(s.title)}"><h2>{i}. {h(s.title)}</h2><p class="caption">{h(s.intro)}</p>')
        for kind, name in s.items:
            parts.append(_html_item(report, tables, kind, name))
        if i == len(SECTIONS) and report.notes:
            parts.append("<h3>Input notes</h3><ul>" + "".join(f"<li>{h(n)}</li>" for n in report.notes) + "</ul>")
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    report.index.write_text("\n".join(parts), encoding="utf-8")


def _html_item(report: Report, tables: dict, kind: str, name: str) -> str:
    h = html.escape
    if kind == "figure":
        if name not in report.figures:
            return f'<p class="missing">Figure “{h(name)}” left out: {h(report.left_out.get("figure:" + name, "no data"))}.</p>'
        info = report.figures[name]
        data = base64.b64encode((report.out_dir / info["png"]).read_bytes()).decode("ascii")
        return (
            f'<figure id="figure-{h(name)}"><img alt="{h(name)}" width="{min(info["width_px"], PAGE_PX)}" '
            f'src="data:image/png;base64,{data}"><figcaption class="files">'
            f'<a href="{h(info["png"])}">PNG</a><a href="{h(info["svg"])}">SVG</a></figcaption></figure>'
        )
    t = tables.get(name)
    if isinstance(t, str) or t is None:
        return f'<p class="missing">Table “{h(name)}” left out: {h(t or "no data")}.</p>'
    info = report.tables[name]
    return (
        f"<h3>{h(t.title)}</h3>{to_html(t)}<p class=\"caption\">{h(t.caption)} "
        f'<span class="files"><a href="{h(info["csv"])}">CSV</a><a href="{h(info["tex"])}">LaTeX</a></span></p>'
    )


def _write_markdown(report: Report, tables: dict, title: str, sources: list[str]) -> None:
    lines = [f"# {title}", "", f"{_summary_line(report, sources)}: `{_inputs_summary(sources)}`"
             + (f" ({report.suites})" if report.suites else "") + ". Every input path is in manifest.json.", ""]
    lines += [f"- {x}" for x in report.counts] + [""]
    for i, s in enumerate(SECTIONS, 1):
        lines += [f"## {i}. {s.title}", "", s.intro, ""]
        for kind, name in s.items:
            if kind == "figure":
                if name in report.figures:
                    info = report.figures[name]
                    lines += [f"![{name}]({info['png']})", "", f"[PNG]({info['png']}) · [SVG]({info['svg']})", ""]
                else:
                    lines += [f"*Figure “{name}” left out: {report.left_out.get('figure:' + name, 'no data')}.*", ""]
            else:
                t = tables.get(name)
                if isinstance(t, str) or t is None:
                    lines += [f"*Table “{name}” left out: {t or 'no data'}.*", ""]
                else:
                    info = report.tables[name]
                    lines += [f"**{t.title}**", "", to_markdown(t), "",
                              f"{t.caption} [CSV]({info['csv']}) · [LaTeX]({info['tex']})", ""]
        if i == len(SECTIONS) and report.notes:
            lines += ["Input notes:", ""] + [f"- {n}" for n in report.notes] + [""]
    report.markdown.write_text("\n".join(lines), encoding="utf-8")
