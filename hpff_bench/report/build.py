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

from hpff_bench.report import figures as F
from hpff_bench.report import tables as T
from hpff_bench.report.load import Loaded, read_results
from hpff_bench.report.render import CSS, slug, to_html, to_latex, to_markdown


@dataclass
class Section:
    title: str
    intro: str
    items: list[tuple[str, str]]  # ("figure"|"table", name)


SECTIONS = [
    Section("Memory vs K", "Peak memory of one training step per method and number of modules K; "
            "BP (K=1) is the dashed line. Solid bars are measured by the CUDA allocator, dotted bars "
            "by the live-tensor tracker (CPU), hatched bars are predicted with fake tensors.",
            [("figure", "memory_vs_k"), ("table", "memory_vs_k")]),
    Section("Where the memory goes", "What is live at the peak, by category.",
            [("figure", "breakdown"), ("table", "breakdown")]),
    Section("Accuracy vs memory", "Test error against peak memory, one point per configuration, "
            "error bars = std over seeds, dashed = Pareto front. Hollow markers: memory predicted.",
            [("figure", "accuracy_vs_memory"), ("table", "accuracy")]),
    Section("HPFF ablation and patch grid", "The HPFF paper's switches: independent level (IL), "
            "cascade level (CL), patch feature fusion (PFF, n x n patches).",
            [("table", "hpff_ablation"), ("table", "patch_grid")]),
    Section("Predicted vs measured", "Fake-tensor prediction against the measured peak, where a run "
            "has both.", [("figure", "prediction_parity"), ("table", "prediction_error")]),
    Section("Speed", "Images per second of a full training step, and step time relative to BP.",
            [("figure", "speed"), ("table", "speed")]),
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
    notes: list[str] = field(default_factory=list)


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
        for name in ("memory_vs_k", "breakdown", "accuracy", "hpff_ablation", "patch_grid",
                     "prediction_error", "speed", "published_comparison", "environment", "failed_runs"):
            tables[name] = "no records"
    else:
        tables["memory_vs_k"] = T.memory_table(cfg)
        tables["breakdown"] = T.breakdown_table(cfg)
        tables["accuracy"] = T.accuracy_table(cfg)
        tables["hpff_ablation"] = T.ablation_table(cfg)
        tables["patch_grid"] = T.patch_grid_table(cfg)
        tables["prediction_error"] = T.parity_table(cfg)
        tables["speed"] = T.speed_table(cfg)
        tables["published_comparison"] = T.published_table(cfg)
        tables["environment"] = T.environment_table(df)
        tables["failed_runs"] = T.failures_table(df)
    tables["published_reference"] = T.published_reference_table()
    tables["published_memory"] = T.published_memory_table(df)

    if cfg.empty:
        reason = "no successful runs" if not df.empty else "no records"
        figs: dict[str, object] = dict.fromkeys(F.FIGURES, reason)
    else:
        figs = F.all_figures(cfg, T.pareto_mask(cfg))

    report = Report(out, out / "index.html", out / "report.md", out / "manifest.json",
                    records=len(df), failed=int((df["status"] != "ok").sum()) if not df.empty else 0,
                    notes=list(loaded.notes))
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


def _write_html(report: Report, tables: dict, title: str, sources: list[str]) -> None:
    h = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{h(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{h(title)}</h1>",
        f"<p>{h(_summary_line(report, sources))}. Inputs: " + ", ".join(f"<code>{h(s)}</code>" for s in sources) + "</p>",
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
            f'<figure id="figure-{h(name)}"><img alt="{h(name)}" width="{info["width_px"] // 2}" '
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
    lines = [f"# {title}", "", _summary_line(report, sources) + ".", "",
             "Inputs: " + ", ".join(f"`{s}`" for s in sources), ""]
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
