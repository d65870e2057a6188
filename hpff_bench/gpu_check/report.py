"""The GPU check's output: relative errors per quantity, gpu_check.json and gpu_check.md.

Both files are rewritten (to a temporary name, then renamed) after every finished part, so a
run that is killed leaves the parts it finished. Configurations of one group (plan.GROUPS: the
PFF decomposition, the InfoPro Table 3 rows) are also shown together: allocated, reserved and
device peaks measured beside predicted, and each row's change from the group's first row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hpff_bench.gpu_check.plan import GROUPS

MIB = 1 << 20
SCHEMA = 2  # 2: "groups", and errors["device"]

# quantity -> (measured field, predicted field); the prediction's active bytes are its
# allocated bytes (one stream: every allocated block is active)
QUANTITIES = {
    "allocated": ("peak_allocated_bytes", "peak_allocated_bytes"),
    "reserved": ("peak_reserved_bytes", "peak_reserved_bytes"),
    "active": ("peak_active_bytes", "peak_allocated_bytes"),
    "requested": ("peak_requested_bytes", "peak_requested_bytes"),
    "live_tensors": ("tracked_peak_bytes", "live_peak_bytes"),
    "nvml_process": ("nvml_process_peak_bytes", "device_used_bytes"),
    "nvml_device": ("nvml_peak_used_bytes", "device_used_bytes"),
}


def relative_error(predicted, measured) -> float | None:
    """(predicted - measured) / measured; None when either is missing or measured is 0."""
    if predicted is None or not measured:
        return None
    return (predicted - measured) / measured


def device_peak(memory: dict) -> tuple[int | None, str | None]:
    """The measured peak a predicted device total is compared with, and its NVML source: this
    process's bytes where the driver gives them per process, else the whole device's (which
    adds other processes and what the driver keeps for itself)."""
    if memory.get("nvml_process_peak_bytes") is not None:
        return memory["nvml_process_peak_bytes"], "process"
    if memory.get("nvml_peak_used_bytes") is not None:
        return memory["nvml_peak_used_bytes"], "device"
    return None, None


def compare(measured: dict, predicted: dict, context_after_bytes: int | None = None) -> dict:
    """Relative error of each predicted quantity against its measured counterpart.

    Three more than QUANTITIES: `device` (the predicted device total against device_peak),
    `nvml_process_measured_context` (the predicted reserved peak plus the context measured in
    the same process, i.e. the device prediction once the assumed context is replaced), and
    `workspaces` (the measured hidden allocation against the prediction's cuBLAS-workspace term)."""
    errors = {q: relative_error(predicted.get(p), measured.get(m)) for q, (m, p) in QUANTITIES.items()}
    errors["device"] = relative_error(predicted.get("device_used_bytes"), device_peak(measured)[0])
    reserved = predicted.get("peak_reserved_bytes")
    with_context = None if reserved is None or context_after_bytes is None else reserved + context_after_bytes
    errors["nvml_process_measured_context"] = relative_error(with_context, measured.get("nvml_process_peak_bytes"))
    ws = ((predicted.get("terms") or {}).get("cublas_workspace") or {}).get("bytes")
    errors["workspaces"] = relative_error(ws, measured.get("hidden_allocated_bytes"))
    return errors


def compare_overheads(o: dict, cuda_arch: str) -> dict:
    """The prediction's assumed context and cuBLAS workspaces (memory.predict) for this GPU's
    architecture, and their relative errors against the measured ones. cuDNN workspaces are not
    modelled: the prediction's 0 has no relative error to report."""
    from hpff_bench.memory.predict import (
        CUBLAS_WORKSPACE_BYTES,
        CUBLAS_WORKSPACES,
        DEFAULT_CUDA_CONTEXT_BYTES,
    )

    assumed = {"context_bytes": DEFAULT_CUDA_CONTEXT_BYTES,
               "cublas_total_bytes": CUBLAS_WORKSPACE_BYTES[cuda_arch] * CUBLAS_WORKSPACES}
    return {
        "assumed": assumed,
        "errors": {
            "context": relative_error(assumed["context_bytes"], o["context"]["bytes"]),
            "context_after": relative_error(assumed["context_bytes"], o.get("context_after_bytes")),
            "cublas_total": relative_error(assumed["cublas_total_bytes"], o["cublas_total_bytes"]),
        },
    }


# the quantities a group's table shows (keys of compare's errors)
GROUP_QUANTITIES = ("allocated", "reserved", "device")


def _group_values(p: dict) -> tuple[dict, dict, str | None]:
    m, pr = p["memory"], p["predicted"]
    device, source = device_peak(m)
    measured = {"allocated": m.get("peak_allocated_bytes"), "reserved": m.get("peak_reserved_bytes"), "device": device}
    predicted = {"allocated": pr.get("peak_allocated_bytes"), "reserved": pr.get("peak_reserved_bytes"),
                 "device": pr.get("device_used_bytes")}
    return measured, predicted, source


def group_summary(records: list[dict], key: str) -> dict:
    """One group's rows in run order: measured and predicted allocated, reserved and device
    peaks, their relative errors, and each row's change from the group's first row (measured and
    predicted; none where that row did not run)."""
    rows, base = [], None
    members = [p for p in records if p.get("kind") == "config" and p.get("group") == key]
    for i, p in enumerate(members):
        row = {"row": p.get("row") or p["name"], "name": p["name"], "status": p["status"]}
        if p["status"] != "ok":
            rows.append({**row, "message": p.get("message", "")})
            continue
        measured, predicted, source = _group_values(p)
        if i == 0:
            base = (measured, predicted)
        row.update(measured=measured, predicted=predicted, device_source=source,
                   errors={q: p["errors"][q] for q in GROUP_QUANTITIES})
        if base is not None:
            row["change_measured"], row["change_predicted"] = (
                {q: None if now[q] is None or then[q] is None else now[q] - then[q] for q in GROUP_QUANTITIES}
                for now, then in ((measured, base[0]), (predicted, base[1])))
        rows.append(row)
    return {"title": GROUPS[key], "baseline": members[0].get("row") if members else None, "rows": rows}


def document(records: list[dict], status: str, budget_s: float, elapsed_s: float) -> dict:
    """The JSON document: run status, the groups' summaries, then one record per part in run order."""
    groups = {k: group_summary(records, k) for k in GROUPS if any(p.get("group") == k for p in records)}
    return {"schema": SCHEMA, "status": status, "budget_s": budget_s, "elapsed_s": round(elapsed_s, 1),
            "groups": groups, "parts": records}


def write_report(doc: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out / "gpu_check.json", out / "gpu_check.md"
    _write_atomic(jpath, json.dumps(doc, indent=1))
    _write_atomic(mpath, markdown(doc))
    return jpath, mpath


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def markdown(doc: dict) -> str:
    parts = doc["parts"]
    device = next((p.get("device_name") for p in parts if p.get("device_name")), None) or next(
        (p["overheads"].get("device_name") for p in parts if p.get("overheads")), "n/a")
    lines = [
        "# GPU check: predicted vs measured memory",
        "",
        f"Device: {device}. Status: {doc['status']} after {doc['elapsed_s']:.0f} s (budget {doc['budget_s']:.0f} s).",
        "Relative error = (predicted - measured) / measured; measured after warm-up and a peak reset.",
        "The prediction uses this GPU's architecture and the default assumed CUDA context;",
        "'NVML proc (ctx)' replaces that context by the one measured in the same process.",
        "",
    ]
    for g in doc.get("groups", {}).values():
        lines += _group_lines(g)
    lines += [
        "## Configurations",
        "",
        "| config | alloc MiB | err alloc | err reserved | err active | err requested | err live "
        "| err NVML proc | err NVML dev | err NVML proc (ctx) | hidden MiB | context MiB | s (est.) |",
        "|---|" + "---:|" * 12,
    ]
    for p in parts:
        if p["kind"] != "config":
            continue
        if p["status"] != "ok":
            lines.append(f"| {p['name']} | {p['status']}: {p.get('message', '')} |" + " |" * 11)
            continue
        e, m = p["errors"], p["memory"]
        lines.append(
            f"| {p['name']} | {_mib(m['peak_allocated_bytes'])} | "
            + " | ".join(_pct(e[q]) for q in (*QUANTITIES, "nvml_process_measured_context"))
            + f" | {_mib(m['hidden_allocated_bytes'])} | {_mib(p['context_after_run_bytes'])} "
            f"| {p['seconds']:.0f} ({p['estimate_s']:.0f}) |"
        )
    lines += ["", "## CUDA context and library workspaces", ""]
    lines += _section(parts, "overheads", _overheads_lines)
    lines += ["", "## Cache released on out-of-memory (`estimate --cache-release`)", ""]
    lines += _section(parts, "cache_release", _cache_release_lines)
    lines += ["", "## Benchmarks on CUDA", ""]
    for p in parts:
        if p["kind"] == "benchmarks":
            lines.append(f"- `{p.get('command', p['name'])}`: {p['status']}, {p.get('summary', p.get('message', ''))}")
    return "\n".join(lines) + "\n"


def _group_lines(g: dict) -> list[str]:
    """A group's two tables: measured beside predicted, and the change from its first row."""
    lines = [f"## {g['title']}", "",
             "MiB, measured / predicted (relative error). Device: NVML's peak for this process (or the whole "
             "device, marked *) against the predicted device total.", "",
             "| configuration | allocated | reserved | device |", "|---|---:|---:|---:|"]
    for r in g["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['row']} | {r['status']}: {r.get('message', '')} | | |")
            continue
        cells = []
        for q in GROUP_QUANTITIES:
            star = "*" if q == "device" and r["device_source"] == "device" else ""
            cells.append(f"{_mib(r['measured'][q])}{star} / {_mib(r['predicted'][q])} ({_pct(r['errors'][q])})")
        lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    changes = [r for r in g["rows"][1:] if "change_measured" in r]
    if changes:
        lines += ["", f"Change from {g['baseline']}, MiB, measured / predicted:", "",
                  "| configuration | allocated | reserved | device |", "|---|---:|---:|---:|"]
        for r in changes:
            lines.append(f"| {r['row']} | " + " | ".join(
                f"{_dmib(r['change_measured'][q])} / {_dmib(r['change_predicted'][q])}" for q in GROUP_QUANTITIES) + " |")
    return lines + [""]


def _section(parts: list[dict], kind: str, render) -> list[str]:
    """The lines of every part of `kind`: render(part) where it ran, its status where not."""
    lines = []
    for p in parts:
        if p["kind"] == kind:
            lines += render(p) if p["status"] == "ok" else [f"- {p['name']}: {p['status']}: {p.get('message', '')}"]
    return lines


def _cache_release_lines(p: dict) -> list[str]:
    pr = p["predicted"]
    lines = [f"- {p['name']}: predicted {pr['fits']} fits without a release, {pr['runs']} runs "
             f"({pr['alloc_retries_per_step']} retries per step), {pr['fails']} runs out of memory; "
             f"{'agrees' if p['agrees'] else 'DISAGREES'}"]
    for b, m in p["measured"].items():
        lines.append(f"  - batch {b}: " + (f"ran, {m['alloc_retries']} retries in the step" if m["ran"]
                                            else f"out of memory ({m.get('message', '')})"))
    return lines


def _overheads_lines(p: dict) -> list[str]:
    o, assumed, e = p["overheads"], p["assumed"], p["errors"]
    ctx = o["context"]
    lines = [
        f"### cudnn.benchmark {'on' if o['cudnn_benchmark'] else 'off'}",
        "",
        f"- CUDA context: {_mib(ctx['bytes'])} MiB ({ctx['mechanism']}); "
        f"after the workspace calls: {_mib(o.get('context_after_bytes'))} MiB; "
        f"assumed {_mib(assumed['context_bytes'])} MiB: error {_pct(e['context'])} ({_pct(e['context_after'])} after)",
        "- cuBLAS workspaces (allocated after - before the first call): "
        + ", ".join(f"{k} {_mib(v['bytes'])} MiB" for k, v in o["cublas"].items())
        + f"; total {_mib(o['cublas_total_bytes'])} MiB; assumed {_mib(assumed['cublas_total_bytes'])} MiB: "
        f"error {_pct(e['cublas_total'])}",
        "- cuDNN workspaces (not modelled by the prediction):",
        "",
        "| conv input (N, C, H, W) | pass | transient workspace MiB | kept allocated MiB | reserved growth MiB |",
        "|---|---|---:|---:|---:|",
    ]
    for c in o["cudnn"]:
        lines.append(f"| {tuple(c['shape'])} | {c['pass']} | {_mib(c['bytes'])} | {_mib(c['kept_allocated_bytes'])} "
                     f"| {_mib(c['reserved_growth_bytes'])} |")
    return lines + [""]


def _mib(n) -> str:
    return "n/a" if n is None else f"{n / MIB:,.1f}"


def _dmib(n) -> str:
    return "n/a" if n is None else f"{n / MIB:+,.1f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f} %"
