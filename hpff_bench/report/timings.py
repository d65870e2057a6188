"""Measured step times, relative to BP's, for `hpff-bench plan --timings`.

Why: FLOPs rank configurations only roughly (aux nets are small convolutions at low
arithmetic intensity, HiLo reruns backward passes); where a configuration was actually timed,
its measured step time / BP's ranks it better. Two sources are read:

- pytest-benchmark JSON written by suites/test_method_speed.py: `extra_info["configurations"]`
  holds every case's median step and step / BP, measured side by side; a case name is rebuilt
  into its RunConfig with hpff_bench.speed_cases (the mapping the benchmark itself uses);
- hpff-bench result records (JSONL from `profile`/`sweep`, `profile --json` output,
  suites/test_benchmarks.py's pytest-benchmark JSON) that are ok and carry timing.step_seconds.
  The reference is a BP record of the same kind, setting (network, data shape, batch,
  precision) and machine (host and device) in the same file.

A measurement belongs to a plan row only when it computes the same step (`step_key`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hpff_bench import validation as V
from hpff_bench.config import RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.report.load import (
    as_pytest_benchmark,
    dig,
    is_side_by_side,
    positive_number,
    read_file,
    speed_device,
)

# how long, where and from which seed a run ran: not what one step computes
NOT_COMPARED = ("steps", "warmup", "seed", "device")
INFOPRO_ONLY = ("aux", "local_loss", "lambdas")
HILO_ONLY = ("cascade_span", "independent", "w_independent", "w_cascade", "hilo_exec")
PFF_ONLY = ("pff_on", "pff_exec")
BP_SETTING = ("network", "dataset", "image_size", "num_classes", "batch_size", "precision")


def step_key(cfg: RunConfig, cuts: str) -> str:
    """What a training step of `cfg` split at `cuts` (--cuts notation) computes, as text: every
    config field but NOT_COMPARED, the split's name replaced by its cuts. Fields the method never
    reads are left out (an InfoPro recipe's aux/λ on a Greedy run, HiLo options without --hilo,
    PFF options at grid 1), and BP's K and cuts, which only name modules for attribution
    (methods/backprop.py); the official variant reads its own set, so all of it is compared."""
    d = cfg.to_dict()
    for f in (*NOT_COMPARED, "split", "cuts"):
        d.pop(f)
    if cfg.variant != "official":
        dropped = [*(INFOPRO_ONLY if cfg.method != "infopro" else ()),
                   *(("predsim_beta",) if cfg.method != "predsim" else ()),
                   *(HILO_ONLY if not cfg.hilo else ()), *(PFF_ONLY if cfg.pff_grid == 1 else ())]
        for f in dropped:
            d.pop(f)
    if cfg.method == "bp":
        d["k"], cuts = 1, ""
    d["cut_after"] = cuts
    return json.dumps(d, sort_keys=True)


@dataclass(frozen=True)
class Measurement:
    key: str  # step_key of what was measured
    step_seconds: float
    bp_step_seconds: float
    time_vs_bp: float
    device: str  # where, in words: "cpu, 2 threads (AMD EPYC ...)", "NVIDIA H200"
    threads: int | None  # torch threads, where the source records them
    file: str
    entry: str  # which entry of the file: "test_method_speed_against_bp case 'greedy'", "line 3"
    when: str  # env.time / the benchmark's datetime: the latest of a file wins

    def summary(self) -> dict:
        """What a plan record carries under `measured`."""
        return {"step_seconds": self.step_seconds, "bp_step_seconds": self.bp_step_seconds,
                "device": self.device, "threads": self.threads, "file": self.file, "entry": self.entry}


@dataclass
class Timings:
    files: list[str] = field(default_factory=list)
    by_file: dict[str, dict[str, Measurement]] = field(default_factory=dict)  # file -> key -> latest
    notes: list[str] = field(default_factory=list)  # what was left out, and why

    def count(self) -> int:
        return sum(len(v) for v in self.by_file.values())

    def lookup(self, key: str) -> Measurement | None:
        """The measurement of `key` from the first file (in the order given) that has one."""
        for f in self.files:
            m = self.by_file[f].get(key)
            if m is not None:
                return m
        return None


def read_timings(paths, flag: str = "--timings") -> Timings:
    """Every measured step time in `paths`. ConfigError (one line) for a path that is not a
    readable file, or a file that holds no usable step time; entries left out of a file that
    has some become notes. Nothing is traced: splits come from the records or the split tables."""
    files = [V.input_file(flag, p) for p in paths]  # all paths checked before any is read
    out = Timings()
    for f in files:
        found, notes = _read_one(f, flag)
        out.notes += notes
        if not found:
            why = f"; {notes[0]}" if notes else ""
            raise ConfigError(
                f"{flag} {str(f)!r}: no measured step time in this file (expected suites/test_method_speed.py's "
                f"--benchmark-json or result records with timing.step_seconds and a BP record to compare with){why}")
        latest: dict[str, Measurement] = {}
        for m in found:  # in order read; a later (or equal) time replaces an earlier one
            if m.key not in latest or m.when >= latest[m.key].when:
                latest[m.key] = m
        name = str(f)
        if name not in out.by_file:
            out.files.append(name)
            out.by_file[name] = latest
    return out


def _read_one(path: Path, flag: str) -> tuple[list[Measurement], list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{flag} {str(path)!r}: cannot be read as text ({type(e).__name__}: {e})") from None
    found: list[Measurement] = []
    notes: list[str] = []
    data = None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError:  # not JSON, or an int past Python's 4,300-digit limit
            data = None
    bench = as_pytest_benchmark(data)
    for b in bench["benchmarks"] if bench is not None else ():
        if is_side_by_side(b):
            got, why = _from_speed_benchmark(path, bench, b)
            found += got
            notes += why
    records, why = read_file(path, bench=bench)
    notes += why
    got, why = _from_records(path, records)
    return found + got, notes + why


# ----- suites/test_method_speed.py -------------------------------------------------------------
def _from_speed_benchmark(path: Path, data: dict, b: dict) -> tuple[list[Measurement], list[str]]:
    from hpff_bench.speed_cases import CASES, speed_config

    extra = b["extra_info"]
    name = b.get("name") or "benchmark"
    where = f"{path}: {name}"
    try:
        base = RunConfig(network=extra["network"], k=extra["k"], batch_size=extra["batch_size"],
                         device=_device_choice(str(extra.get("device") or "")))
        split = extra.get("split")
        table = extra["configurations"]
        bp = table["bp"]["step_seconds"]
    except (KeyError, TypeError) as e:
        return [], [f"{where}: no {e} in extra_info (written by suites/test_method_speed.py?); left out"]
    if not positive_number(bp):
        return [], [f"{where}: BP's step_seconds {bp!r} is not a positive number; left out"]
    threads = extra.get("threads") if isinstance(extra.get("threads"), int) else None
    device = speed_device(extra, data)
    found, notes = [], []
    for case, row in table.items():
        if case not in CASES:
            notes.append(f"{where}: case {case!r} is not one of hpff_bench/speed_cases.py's; left out")
            continue
        try:
            cfg = speed_config(case, base, split)
            cuts = _cuts_of(cfg, None)
        except ConfigError as e:
            notes.append(f"{where}: case {case!r} cannot be rebuilt ({e}); left out")
            continue
        step, ratio = dig(row, "step_seconds"), dig(row, "step_vs_bp")
        if not (positive_number(step) and positive_number(ratio)):
            notes.append(f"{where}: case {case!r} has no positive step_seconds and step_vs_bp; left out")
            continue
        found.append(Measurement(step_key(cfg, cuts), float(step), float(bp), float(ratio), device, threads,
                                 str(path), f"{name} case {case!r}", str(data.get("datetime") or "")))
    return found, notes


def _device_choice(device: str) -> str:
    """A torch device string ("cuda:0") as RunConfig's choice ("cuda"); the device is not compared."""
    d = device.split(":")[0]
    return d if d in ("cpu", "cuda") else "auto"


# ----- result records ----------------------------------------------------------------------------
def _from_records(path: Path, records: list[dict]) -> tuple[list[Measurement], list[str]]:
    timed, notes = [], []
    for i, rec in enumerate(records, 1):
        step = (rec.get("timing") or {}).get("step_seconds")
        if rec.get("status") != "ok" or not positive_number(step):
            continue  # estimates, failures: nothing measured
        entry = f"record {i}" + (f" ({rec['run_name']})" if rec.get("run_name") else "")
        try:
            cfg = RunConfig.from_dict(rec["config"]).validate()
            cuts = _cuts_of(cfg, rec.get("split"))
        except (ConfigError, TypeError, KeyError) as e:
            notes.append(f"{path}: {entry}: its config cannot be rebuilt ({e}); left out")
            continue
        env = rec.get("env") or {}
        device = _record_device(rec)
        machine = (rec.get("kind"), env.get("hostname"), device)
        setting = tuple(cfg.to_dict()[f] for f in BP_SETTING)
        timed.append((cfg, cuts, float(step), entry, device, machine, setting, str(env.get("time") or "")))
    bp: dict[tuple, tuple[str, float]] = {}  # (machine, setting) -> (time, step) of the latest BP
    for cfg, _, step, _, _, machine, setting, when in timed:
        if cfg.method == "bp" and ((machine, setting) not in bp or when >= bp[machine, setting][0]):
            bp[machine, setting] = (when, step)
    found, no_ref = [], 0
    for cfg, cuts, step, entry, device, machine, setting, when in timed:
        ref = bp.get((machine, setting))
        if ref is None:
            no_ref += 1
            continue
        found.append(Measurement(step_key(cfg, cuts), step, ref[1], step / ref[1], device, None, str(path),
                                 entry, when))
    if no_ref:
        notes.append(f"{path}: {no_ref} timed record(s) without a BP record of the same kind, setting and "
                     "machine in this file (no reference for time x BP); left out")
    return found, notes


def _record_device(rec: dict) -> str:
    env, cfg = rec.get("env") or {}, rec.get("config") or {}
    dev = str(env.get("device") or cfg.get("device") or "")
    name = env.get("device_name")
    if dev.startswith("cuda"):
        return name if name and name != "cpu" else dev
    if dev == "cpu":
        return "cpu" + (f" ({env['cpu']})" if env.get("cpu") else "")
    return name or "device not recorded"


def _cuts_of(cfg: RunConfig, split) -> str:
    """The cuts a measurement ran with: its record's own `split` where it has one, else the split
    tables' (a balanced split without recorded cuts would need the search, so it is refused)."""
    if isinstance(split, dict) and isinstance(split.get("cuts"), str):
        return split["cuts"]
    if cfg.split == "balanced" and not cfg.cuts:
        raise ConfigError("split balanced without its cuts recorded")
    from hpff_bench.networks.splits import split_of

    return split_of(cfg).cuts_text


