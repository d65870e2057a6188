"""Turn results files (JSONL result records, pytest-benchmark JSON) into one flat DataFrame.

Accepted inputs (files, or directories searched recursively for *.jsonl and *.json):
- `.jsonl`: one result record per line (INTERFACES.md "Result record");
- `.json` holding one record or a list of records (e.g. `hpff-bench profile --json`);
- `.json` written by `pytest --benchmark-json` (suites/test_benchmarks.py puts the result record
  in each benchmark's `extra_info["record"]`; the timing comes from the benchmark's stats);
  suites/test_method_speed.py's side-by-side steps (`extra_info["configurations"]`, no record)
  become `Loaded.side_by_side`, one row per configuration.

Result files are read by the results store (hpff_bench.runner.store.read_records: upgrades old
schema versions, notes broken lines); pytest-benchmark files are converted here. Nested objects
are flattened with "." (`memory.peak_allocated_bytes`), then a few derived
columns with fixed names are added (see `_derive`), which is all the report code reads.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hpff_bench.config import DATASETS
from hpff_bench.errors import ConfigError
from hpff_bench.runner import store
from hpff_bench.validation import shown

STATUSES = ("ok", "oom", "diverged", "skipped", "error")


@dataclass
class Loaded:
    frame: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # lines skipped, files not understood
    # suites/test_method_speed.py's runs: one row per configuration (side_by_side_rows)
    side_by_side: pd.DataFrame = field(default_factory=pd.DataFrame)


def find_files(paths) -> list[Path]:
    """Expand directories; raise ConfigError for a path that does not exist or holds nothing."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix in (".jsonl", ".json") and q.is_file())
            if not found:
                raise ConfigError(f"{p}: no .jsonl or .json results files in this directory")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"{p}: no such file or directory")
    return files


def read_results(paths) -> Loaded:
    """All records from `paths` as one DataFrame (one row per record) plus notes on what was skipped."""
    files = find_files(paths)
    records: list[dict] = []
    notes: list[str] = []
    side_by_side: list[dict] = []
    for f in files:
        bench = _pytest_benchmark(f)
        if bench is not None:
            rows, why = side_by_side_rows(f, bench)
            side_by_side += rows
            notes += why
        recs, why = read_file(f, bench=bench)
        notes += why
        for i, r in enumerate(recs):
            records.append({**r, "_file": str(f), "_index": i})
    records, superseded = store.latest_per_task(records)
    if superseded:
        notes.append(f"{superseded} record(s) superseded by a later record of the same task (e.g. an error "
                     "before a successful --resume); the latest is shown")
    frame = records_frame(records)
    return Loaded(frame=_derive(frame), files=files, notes=notes, side_by_side=_one_run_per_name(side_by_side))


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Records -> flat DataFrame, nested objects flattened with '.' (as runner.store.load_results)."""
    if not records:
        return pd.DataFrame()
    return pd.json_normalize([store.sanitize(r) for r in records], sep=".")


# ----- reading files ---------------------------------------------------------------------------
def read_file(path: Path, *, bench: dict | None = None) -> tuple[list[dict], list[str]]:
    """(result records, notes on what was left out) of one file. pytest-benchmark JSON (`bench`:
    the file already parsed, where the caller has it) is converted here, without
    suites/test_method_speed.py's entries (side_by_side_rows and `plan --timings` read those);
    everything else goes through the results store's reader (runner.store.read_records), which
    also upgrades records of older schema versions."""
    bench = _pytest_benchmark(path) if bench is None else bench
    if bench is not None:
        recs, notes = _from_pytest_benchmark(path, bench)
        out = []
        for r in recs:
            try:
                r = store.upgrade(r)
            except store.StoreError as e:
                notes.append(f"{path}: benchmark {r.get('run_name')!r}: {e}; left out")
                continue
            problem = store.record_problem(r)
            if problem:
                notes.append(f"{path}: benchmark {r.get('run_name')!r}: not a valid record: {problem}; left out")
                continue
            out.append(r)
        return out, notes
    try:
        loaded = store.read_records([path])
    except (OSError, UnicodeDecodeError) as e:
        return [], [f"{path}: could not read ({e})"]
    return loaded.records, list(loaded.notes)


def _pytest_benchmark(path: Path) -> dict | None:
    if path.suffix != ".json":
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON, or an int past 4,300 digits
        return None
    return as_pytest_benchmark(data)


def as_pytest_benchmark(data) -> dict | None:
    """Parsed JSON as pytest-benchmark's output, or None where it is something else."""
    return data if isinstance(data, dict) and isinstance(data.get("benchmarks"), list) else None


def _from_pytest_benchmark(path: Path, data: dict) -> tuple[list[dict], list[str]]:
    """pytest-benchmark JSON -> result records (kind 'benchmark'), timing from the stats."""
    recs, notes = [], []
    machine = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    commit = data.get("commit_info") if isinstance(data.get("commit_info"), dict) else {}
    for b in data["benchmarks"]:
        if not isinstance(b, dict):
            notes.append(f"{path}: a benchmark entry is not an object; left out")
            continue
        if is_side_by_side(b):
            continue  # read by side_by_side_rows
        extra = b.get("extra_info") if isinstance(b.get("extra_info"), dict) else {}
        rec = extra.get("record")
        if not isinstance(rec, dict):
            notes.append(
                f"{path}: benchmark {b.get('name')!r} has no hpff-bench record in extra_info; left out"
            )
            continue
        rec = json.loads(json.dumps(rec))  # deep copy
        bad = [k for k in ("config", "env") if rec.get(k) is not None and not isinstance(rec[k], dict)]
        if bad or not isinstance(stats := b.get("stats") or {}, dict):
            what = f"{bad[0]} is not an object" if bad else "stats is not an object"
            notes.append(f"{path}: benchmark {b.get('name')!r}: not a valid record: {what}; left out")
            continue
        rec.setdefault("schema", 1)
        rec["kind"] = "benchmark"
        rec.setdefault("status", "ok")
        rec.setdefault("run_name", b.get("name"))
        rec.setdefault("suite", f"pytest-benchmark:{path.stem}")
        median = stats.get("median")
        batch = ((rec.get("config") or {}).get("batch_size")) or extra.get("batch_size")
        if median is not None:  # a median that is not a number is named by record_problem
            rec["timing"] = {
                "step_seconds": median,
                "step_seconds_q1": stats.get("q1"),
                "step_seconds_q3": stats.get("q3"),
                "images_per_second": (batch / median) if positive_number(batch) and positive_number(median) else None,
                "steps": stats.get("rounds"),
            }
        env = rec.get("env") or {}
        env.setdefault("cpu", dig(machine, "cpu", "brand_raw"))
        env.setdefault("python", machine.get("python_version"))
        env.setdefault("hostname", machine.get("node"))
        env.setdefault("git_commit", commit.get("id"))
        env.setdefault("time", data.get("datetime"))
        rec["env"] = env
        recs.append(rec)
    if not data["benchmarks"]:
        notes.append(f"{path}: pytest-benchmark file with no benchmarks (run with --benchmark-disable?)")
    return recs, notes


# ----- suites/test_method_speed.py ------------------------------------------------------------
def is_side_by_side(b) -> bool:
    """A suites/test_method_speed.py entry: every configuration's step beside BP's, no record."""
    return isinstance(dig(b, "extra_info", "configurations"), dict)


def dig(obj, *keys):
    """obj[k1][k2]... where every level is an object, else None (a file's fields can be anything)."""
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


def speed_device(extra: dict, data: dict) -> str:
    """Where a side-by-side run ran, as the report and `plan --timings` name it."""
    dev = str(extra.get("device") or "")
    if dev.startswith("cuda"):
        return extra.get("device_name") or dev
    threads = extra.get("threads") if isinstance(extra.get("threads"), int) else None
    cpu = dig(data, "machine_info", "cpu", "brand_raw")
    return "cpu" + (f", {threads} threads" if threads else "") + (f" ({cpu})" if cpu else "")


def positive_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def side_by_side_rows(path: Path, data: dict) -> tuple[list[dict], list[str]]:
    """One row per configuration of every suites/test_method_speed.py entry: its median step,
    step ÷ BP's with the lowest and highest ratio of one round, FLOPs ÷ BP's and the FLOP
    efficiency; the official code's steps (`extra_info["official_code"]`) as `code` "official"."""
    rows, notes = [], []
    for b in data["benchmarks"]:
        if not is_side_by_side(b):
            continue
        extra = b["extra_info"]
        where = f"{path}: {b.get('name') or 'benchmark'}"
        k, batch = extra.get("k"), extra.get("batch_size")
        if not isinstance(extra.get("network"), str) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in (k, batch)):
            notes.append(f"{where}: extra_info needs network (text), k and batch_size (integers), got network="
                         f"{shown(extra.get('network'))}, k={shown(k)}, batch_size={shown(batch)}; left out")
            continue
        setting = f"{extra['network']} K={k} batch {batch}"
        run = f"{setting}, {speed_device(extra, data)}" + (", heap retained" if extra.get("retain_heap") is True else "")
        official = extra.get("official_code") if isinstance(extra.get("official_code"), dict) else {}
        tables = [("ours", extra["configurations"]), ("official", official.get("configurations") or {})]
        for code, table in tables:
            for case, row in table.items() if isinstance(table, dict) else ():
                row = row if isinstance(row, dict) else {}
                step, ratio = row.get("step_seconds"), row.get("step_vs_bp")
                if not (positive_number(step) and positive_number(ratio)):
                    notes.append(f"{where}: case {case!r} has no positive step_seconds and step_vs_bp; left out")
                    continue
                rounds = row.get("step_vs_bp_per_round")
                low, high = rounds if isinstance(rounds, list) and len(rounds) == 2 and all(map(positive_number, rounds)) \
                    else (None, None)
                flops = row.get("flops_vs_bp")
                eff = row.get("flop_efficiency_vs_bp")
                rows.append({
                    "file": str(path), "run": run, "setting": setting, "network": extra["network"],
                    "k": k, "batch_size": batch, "code": code, "configuration": case,
                    "step_seconds": float(step), "step_vs_bp": float(ratio),
                    "round_low": low, "round_high": high,
                    "flops_vs_bp": float(flops) if positive_number(flops) else None,
                    "flop_efficiency": float(eff) if positive_number(eff) else None,
                    "time": str(data.get("datetime") or ""),
                })
    return rows, notes


def _one_run_per_name(rows: list[dict]) -> pd.DataFrame:
    """Runs of different files that would read alike get their file's name after the run."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    files_per_run = df.groupby("run")["file"].transform("nunique")
    stems = [Path(f).stem for f in df["file"]]
    df["run"] = [f"{r} [{s}]" if n > 1 else r for r, s, n in zip(df["run"], stems, files_per_run)]
    return df


# ----- derived columns -------------------------------------------------------------------------
def col(df: pd.DataFrame, name: str, default=None) -> pd.Series:
    """A column, or a column of `default` where no record has it (missing data never crashes)."""
    if name in df.columns:
        return df[name]
    return pd.Series([default] * len(df), index=df.index, dtype="object" if default is None else None)


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype("float64")


def _first(*series: pd.Series) -> pd.Series:
    out = series[0]
    for s in series[1:]:
        out = out.where(out.notna(), s)
    return out


def _derive(df: pd.DataFrame) -> pd.DataFrame:
    """Add the columns the report reads: network, method, k, modules, measured/predicted bytes..."""
    if df.empty:
        return pd.DataFrame(columns=DERIVED)
    d = pd.DataFrame(index=df.index)
    d["file"] = col(df, "_file")
    d["run_name"] = col(df, "run_name")
    d["suite"] = col(df, "suite")
    d["preset"] = col(df, "preset")
    d["kind"] = col(df, "kind")
    d["status"] = col(df, "status").fillna("ok")
    d["message"] = col(df, "message")
    d["network"] = col(df, "config.network").fillna("?")
    d["dataset"] = col(df, "config.dataset").fillna("?")
    d["method"] = col(df, "config.method").fillna("?")
    d["k"] = _num(col(df, "config.k")).fillna(1).astype(int)
    d["batch_size"] = _num(col(df, "config.batch_size"))
    d["image_size"] = _num(col(df, "config.image_size"))
    d["seed"] = _num(col(df, "config.seed"))
    d["split"] = col(df, "config.split")
    d["device"] = col(df, "config.device")
    d["hilo"] = col(df, "config.hilo").fillna(False).astype(bool)
    d["independent"] = col(df, "config.independent").fillna(True).astype(bool)
    d["pff_grid"] = _num(col(df, "config.pff_grid")).fillna(1).astype(int)
    d["pff_on"] = col(df, "config.pff_on")
    d["pff_exec"] = col(df, "config.pff_exec")
    d["variant"] = col(df, "config.variant").fillna("ours")
    d["local_loss"] = col(df, "config.local_loss")
    d["aux"] = col(df, "config.aux")
    d["label"] = _first(col(df, "label"), d["method"])
    d["ablation"] = col(df, "ablation")
    d["modules"] = _num(col(df, "modules"))
    d["params"] = _num(col(df, "params"))
    d["forward_calls"] = _num(col(df, "forward_calls"))
    d["measured_source"] = _first(col(df, "memory.source"), col(df, "memory_source"))
    # the measured peak: the allocator's (CUDA); on the CPU the tracker's peak, which profile
    # records keep in peak_memory_bytes / memory.tracked_peak_bytes (peak_allocated_bytes is null)
    tracked = _num(col(df, "memory.tracked_peak_bytes")).where(d["measured_source"] == "tensor-tracker")
    d["measured_bytes"] = _first(
        _num(col(df, "memory.peak_allocated_bytes")), _num(col(df, "memory.peak_memory_bytes")),
        _num(col(df, "peak_memory_bytes")), tracked,
    )
    d.loc[d["measured_bytes"].isna(), "measured_source"] = None
    d["reserved_bytes"] = _num(col(df, "memory.peak_reserved_bytes"))
    d["predicted_bytes"] = _num(col(df, "predicted.peak_allocated_bytes"))
    d["predicted_device_bytes"] = _num(col(df, "predicted.device_used_bytes"))
    d["predicted_reserved_bytes"] = _num(col(df, "predicted.peak_reserved_bytes"))
    d["predicted_least_reserved_bytes"] = _num(col(df, "predicted.least_reserved_bytes"))
    d["predicted_least_device_bytes"] = _num(col(df, "predicted.least_device_bytes"))
    d["nvml_used_bytes"] = _num(col(df, "memory.nvml_peak_used_bytes"))
    # the prediction's live-tensor bytes: the quantity the CPU tracker measures
    d["predicted_live_bytes"] = _first(
        _num(col(df, "predicted.live_peak_bytes")), _num(col(df, "predicted.terms.live_tensors.bytes"))
    )
    for cat in ("parameters", "gradients", "optimizer", "inputs", "backbone_activations", "aux_activations", "other"):
        d[f"measured.{cat}"] = _num(col(df, f"memory.breakdown_bytes.{cat}"))
        d[f"predicted.{cat}"] = _num(col(df, f"predicted.breakdown_bytes.{cat}"))
    d["step_seconds"] = _num(col(df, "timing.step_seconds"))
    # the spread of the step time: quartiles of every measured step (profile records keep them
    # in timing.step_seconds_all; pytest-benchmark gives q1/q3 itself)
    q = [_quartiles(v) for v in col(df, "timing.step_seconds_all")]
    d["step_q1"] = _first(pd.Series([a for a, _, _ in q], index=df.index, dtype="float64"),
                          _num(col(df, "timing.step_seconds_q1")))
    d["step_q3"] = _first(pd.Series([b for _, b, _ in q], index=df.index, dtype="float64"),
                          _num(col(df, "timing.step_seconds_q3")))
    d["timed_steps"] = _first(pd.Series([n for _, _, n in q], index=df.index, dtype="float64"),
                              _num(col(df, "timing.steps")))
    # records of hpff_bench.flops carry {"total", "backbone", "aux", "other"}
    d["flops"] = _num(col(df, "flops.total") if "flops.total" in df.columns else col(df, "flops"))  # optional (FLOPs of one step), where a record has it
    # one aux step: the largest per-aux-net peak of its own live activations (PFF's claim)
    d["measured_aux_step_bytes"] = _largest(df, "memory.aux_scope_peak_bytes.")
    d["predicted_aux_step_bytes"] = _largest(df, "predicted.aux_scope_peak_bytes.")
    d["images_per_second"] = _num(col(df, "timing.images_per_second"))
    top1 = _num(col(df, "accuracy.top1"))
    d["test_error_pct"] = _first(_num(col(df, "accuracy.test_error_pct")), 100.0 * (1.0 - top1))
    d["epochs"] = _num(col(df, "accuracy.epochs"))
    d["train_images"] = _num(col(df, "options.train_subset"))  # NaN: the whole training set
    for f in ("device_name", "torch", "cuda", "cudnn", "driver", "cpu", "python", "git_commit", "hostname", "time", "device"):
        d[f"env.{f}"] = col(df, f"env.{f}")
    d["timed_shared"] = shared_machine(d["env.hostname"], d["env.time"], _num(col(df, "env.seconds")),
                                       d["step_seconds"].notna())
    # the setting a memory number belongs to: same network, data shape and batch
    d["setting"] = [
        _setting(n, ds, b, s) for n, ds, b, s in zip(d["network"], d["dataset"], d["batch_size"], d["image_size"])
    ]
    # a configuration without the things that do not change what is run (seed, steps, device)
    ignore = {"config.seed", "config.steps", "config.warmup", "config.device"}
    cfg_cols = sorted(c for c in df.columns if c.startswith("config.") and c not in ignore)
    if cfg_cols:
        vals = df[cfg_cols].astype(object).where(df[cfg_cols].notna(), None).values.tolist()
        names = [c[len("config."):] for c in cfg_cols]
        d["config_key"] = ["|".join(f"{n}={v}" for n, v in zip(names, row)) for row in vals]
    else:
        d["config_key"] = "label=" + d["label"].astype(str)
    return d[DERIVED]


def shared_machine(hosts: pd.Series, ends: pd.Series, seconds: pd.Series, timed: pd.Series) -> pd.Series:
    """Per record: a timed record whose run overlapped another record's run on the same host
    (each run lasts env.seconds and ends at env.time), so its step times measured two jobs at
    once (e.g. `sweep --jobs 2` on two cores). Runs without both fields are never counted."""
    end = pd.to_datetime(ends, errors="coerce", utc=True)
    start = end - pd.to_timedelta(seconds, unit="s")
    known = end.notna() & start.notna() & hosts.notna()
    out = pd.Series(False, index=hosts.index, dtype=bool)
    for i in hosts.index[timed & known]:
        other = known & (hosts == hosts[i]) & (hosts.index != i)
        # one second of slack: env.time is written to the second
        out[i] = bool((other & (start < end[i] - pd.Timedelta(seconds=1))
                       & (end > start[i] + pd.Timedelta(seconds=1))).any())
    return out


def _quartiles(v) -> tuple[float, float, float]:
    """(q1, q3, count) of a list of step times; NaNs where there is no list."""
    if not isinstance(v, (list, tuple)) or not v:
        return (math.nan, math.nan, math.nan)
    x = pd.Series([t for t in v if isinstance(t, (int, float))], dtype="float64")
    return (float(x.quantile(0.25)), float(x.quantile(0.75)), float(len(x)))


def _largest(df: pd.DataFrame, prefix: str) -> pd.Series:
    """Per row, the largest of the flattened {scope: bytes} columns under `prefix` (NaN: none)."""
    cols = [c for c in df.columns if c.startswith(prefix)]
    if not cols:
        return pd.Series(math.nan, index=df.index, dtype="float64")
    return df[cols].apply(pd.to_numeric, errors="coerce").max(axis=1)


def _setting(network, dataset, batch, image_size) -> str:
    parts = [str(network)]
    if dataset and dataset != "?":
        parts.append(str(dataset))
    if batch == batch and batch is not None:
        parts.append(f"batch {int(batch)}")
    # the image size where the dataset does not fix it, or where a run changed it (a 16 px proxy
    # of CIFAR-10 is another setting than CIFAR-10 itself)
    if image_size == image_size and image_size is not None and (
            dataset in ("folder", "fake") or dataset not in DATASETS or int(image_size) != DATASETS[dataset][0]):
        parts.append(f"{int(image_size)} px")
    return " · ".join(parts)


DERIVED = [
    "file", "run_name", "suite", "preset", "kind", "status", "message", "network", "dataset", "method", "k",
    "batch_size", "image_size", "seed", "split", "device", "hilo", "independent", "pff_grid",
    "pff_on", "pff_exec", "variant", "local_loss", "label", "ablation", "modules", "params", "forward_calls",
    "measured_bytes", "measured_source", "reserved_bytes", "predicted_bytes", "predicted_live_bytes",
    "predicted_device_bytes", "predicted_reserved_bytes", "predicted_least_reserved_bytes",
    "predicted_least_device_bytes", "nvml_used_bytes",
    *[f"{w}.{c}" for c in ("parameters", "gradients", "optimizer", "inputs", "backbone_activations", "aux_activations", "other") for w in ("measured", "predicted")],
    "step_seconds", "step_q1", "step_q3", "timed_steps", "flops", "images_per_second",
    "measured_aux_step_bytes", "predicted_aux_step_bytes", "aux", "test_error_pct", "epochs", "train_images",
    *[f"env.{f}" for f in ("device_name", "torch", "cuda", "cudnn", "driver", "cpu", "python", "git_commit", "hostname", "time", "device")],
    "timed_shared", "setting", "config_key",
]


def is_nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))
