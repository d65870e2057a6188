"""The results store: one JSON object per run, one line each, in `results/<suite>/<run-name>.jsonl`.

Writing (`append_record`): the whole line is written with one `write` on a file opened with
O_APPEND, under an exclusive `fcntl.flock` on that file, then fsynced, so concurrent writers
(two sweeps, `--jobs N`) never interleave and a killed process never leaves half a line behind
a finished one. If a previous writer died mid-line (power loss), the next append starts a new
line, and the loader reports and skips the broken one.

Reading (`load_results`): files or directories (searched recursively for *.jsonl, and *.json
files holding one record or a list) -> a pandas DataFrame with nested objects flattened by
`pd.json_normalize` (`memory.peak_allocated_bytes`, `accuracy.top1`, ...). Every record is
upgraded to the current schema first (`upgrade`), so files written by older versions load.

Schema history
--------------
- 0: the bare dict of `hpff_bench.profiling.profile_config` / `estimate_config` and of early
  `hpff-bench profile --json`: no `schema`, `run_id`, `kind` or `status`; `step_seconds`,
  `images_per_second`, `steps`, `peak_memory_bytes`, `memory_source` (and for training
  `top1`, `epochs`) at the top level; `name` for the run name.
- 1: INTERFACES.md "Result record": schema, run_id, config_id, suite, run_name, kind, status,
  message, label, ablation, config, modules, params, forward_calls, env, memory, predicted,
  timing, accuracy; plus `preset` (the suite preset that produced it), `options` (the kind's
  options that change its result, e.g. epochs; part of the resume key) and `traceback`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hpff_bench.validation import shown

SCHEMA_VERSION = 1
KINDS = ("estimate", "profile", "train", "benchmark")
STATUSES = ("ok", "oom", "diverged", "skipped", "error")
RECORD_KEYS = (
    "schema", "run_id", "config_id", "suite", "run_name", "kind", "status", "message", "label",
    "ablation", "config", "modules", "params", "forward_calls", "env", "memory", "predicted",
    "timing", "accuracy",
)
EXTRA_KEYS = ("preset", "options", "traceback", "split", "flops")


class StoreError(ValueError):
    pass


# ----- making records ------------------------------------------------------------------------
def options_key(options: dict | None) -> str:
    """Stable short hash of a kind's result-changing options ('' for none)."""
    if not options:
        return ""
    blob = json.dumps(sanitize(options), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def task_key(record: dict) -> tuple[str, str, str]:
    """What `--resume` compares: (kind, config_id, options hash)."""
    return (record.get("kind") or "", record.get("config_id") or "", options_key(record.get("options")))


def make_record(
    kind: str,
    status: str,
    *,
    config=None,
    suite: str | None = None,
    run_name: str | None = None,
    message: str | None = None,
    env: dict | None = None,
    preset: str | None = None,
    options: dict | None = None,
    **parts,
) -> dict:
    """A complete schema-1 record; `config` is a RunConfig (label, ablation and config_id are
    derived from it) or a config dict. `parts` are other record keys (memory, timing, ...)."""
    if kind not in KINDS:
        raise StoreError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    if status not in STATUSES:
        raise StoreError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    unknown = set(parts) - set(RECORD_KEYS) - set(EXTRA_KEYS)
    if unknown:
        raise StoreError(f"unknown record key(s) {sorted(unknown)}")
    rec = dict.fromkeys(RECORD_KEYS)
    rec.update(schema=SCHEMA_VERSION, run_id=uuid.uuid4().hex, suite=suite, run_name=run_name,
               kind=kind, status=status, message=message, env=env, preset=preset, options=options or None)
    if config is not None:
        if hasattr(config, "to_dict"):
            rec.update(config=config.to_dict(), config_id=config.config_id(), label=config.label,
                       ablation=config.ablation)
        else:
            rec.update(_derived_from_config_dict(config))
    rec.update(parts)
    if hasattr(config, "to_dict"):
        from hpff_bench.method_registry import local_methods

        split = _split_summary(config)
        if rec["modules"] is None and split is not None:  # failed runs still say how many modules they had
            rec["modules"] = split["modules"] if config.method in local_methods() else 1
        rec.setdefault("split", split)
    return rec


def _split_summary(cfg) -> dict | None:
    """The resolved split of `cfg` (scheme, modules, cuts, reason), without building anything."""
    try:
        from hpff_bench.networks.splits import split_of

        return split_of(cfg).summary()
    except Exception:
        return None


def _derived_from_config_dict(config: dict) -> dict:
    out = {"config": config, "config_id": None, "label": None, "ablation": None}
    try:
        from hpff_bench.config import RunConfig

        cfg = RunConfig.from_dict(config)
        out.update(config_id=cfg.config_id(), label=cfg.label, ablation=cfg.ablation)
    except Exception:  # a config from another version: still give it a stable id
        blob = json.dumps(sanitize(config), sort_keys=True, separators=(",", ":"))
        out["config_id"] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return out


def sanitize(obj):
    """JSON-safe copy: non-finite floats -> None, tuples -> lists, numpy/torch scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / 0-d torch
        try:
            return sanitize(obj.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    if hasattr(obj, "to_dict"):
        return sanitize(obj.to_dict())
    return str(obj)


def dumps(record: dict) -> str:
    """One line of strict JSON (no NaN, no newline inside)."""
    return json.dumps(sanitize(record), separators=(",", ":"), allow_nan=False)


# ----- writing -------------------------------------------------------------------------------
def safe_name(name: str) -> str:
    """A run name usable as a file name."""
    out = "".join(c if c.isalnum() or c in "._+=-" else "_" for c in name).strip("._")
    return out or "run"


def run_file(results_dir: str | os.PathLike, run_name: str) -> Path:
    """results/<suite>/<run-name>.jsonl (`results_dir` is the suite's directory)."""
    return Path(results_dir) / f"{safe_name(run_name)}.jsonl"


def append_record(path: str | os.PathLike, record: dict) -> Path:
    """Append `record` as one line, whole, under an exclusive lock; flushed and fsynced."""
    path = Path(path)
    line = (dumps(record) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size and _last_byte(path, size) != b"\n":
                line = b"\n" + line  # a writer died mid-line: never glue onto its fragment
            view = memoryview(line)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)
    return path


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----- upgrading -----------------------------------------------------------------------------
def _v0_to_v1(rec: dict) -> dict:
    rec = dict(rec)
    content_id = hashlib.sha256(json.dumps(sanitize(rec), sort_keys=True).encode()).hexdigest()[:32]
    if "run_name" not in rec and "name" in rec:
        rec["run_name"] = rec.pop("name")
    if rec.get("timing") is None and any(k in rec for k in ("step_seconds", "images_per_second", "steps")):
        rec["timing"] = {
            "step_seconds": rec.pop("step_seconds", None),
            "images_per_second": rec.pop("images_per_second", None),
            "steps": rec.pop("steps", None),
        }
    peak = rec.pop("peak_memory_bytes", None)
    source = rec.pop("memory_source", None)
    if rec.get("memory") is None and peak is not None:
        rec["memory"] = {"source": source, "peak_allocated_bytes": peak}
    elif isinstance(rec.get("memory"), dict) and source is not None:
        rec["memory"] = {"source": source, **rec["memory"]}
    if rec.get("accuracy") is None and "top1" in rec:
        top1 = rec.pop("top1")
        rec["accuracy"] = {
            "top1": top1,
            "test_error_pct": None if top1 is None else 100.0 * (1.0 - top1),
            "epochs": rec.pop("epochs", None),
            "per_epoch": rec.pop("per_epoch", None),
        }
    if rec.get("kind") is None:
        if rec.get("accuracy") is not None:
            rec["kind"] = "train"
        elif rec.get("memory") is not None:
            rec["kind"] = "profile"
        else:
            rec["kind"] = "estimate"
    rec.setdefault("status", "ok")
    rec.setdefault("run_id", content_id)  # stable: loading twice gives the same id
    if isinstance(rec.get("config"), dict):
        derived = _derived_from_config_dict(rec["config"])
        for k in ("config_id", "label", "ablation"):
            if rec.get(k) is None:
                rec[k] = derived[k]
    if "device" in rec:  # v0 kept the device at the top level; v1 has it in env
        env = dict(rec.get("env") or {})
        env.setdefault("device", rec.pop("device"))
        rec["env"] = env
    for k in RECORD_KEYS:
        rec.setdefault(k, None)
    rec["schema"] = 1
    return rec


UPGRADES = {0: _v0_to_v1}  # version -> function returning the record at version + 1


def upgrade(record: dict) -> dict:
    """`record` at the current schema version (StoreError for one from a newer version)."""
    version = record.get("schema", 0)
    if not isinstance(version, int) or version < 0:
        raise StoreError(f"bad schema version {version!r}")
    if version > SCHEMA_VERSION:
        raise StoreError(f"schema {version} is newer than this hpff-bench reads ({SCHEMA_VERSION}); upgrade hpff-bench")
    while version < SCHEMA_VERSION:
        record = UPGRADES[version](record)
        version = record["schema"]
    return record


# ----- checking ------------------------------------------------------------------------------
# The type of every field a reader uses (INTERFACES.md "Result record"), by dotted path; parents
# before their fields. null is always allowed (objects not produced by a kind are null).
_MEMORY_NUMBERS = ("peak_allocated_bytes", "peak_memory_bytes", "tracked_peak_bytes", "peak_reserved_bytes",
                   "peak_active_bytes", "peak_requested_bytes", "nvml_peak_used_bytes", "nvml_process_peak_bytes",
                   "lower_bound_bytes", "efficiency")
FIELD_TYPES: dict[str, str] = {
    **dict.fromkeys(("config", "env", "memory", "predicted", "timing", "accuracy", "options", "split"), "object"),
    **dict.fromkeys(("run_id", "config_id", "suite", "run_name", "message", "label", "ablation", "preset",
                     "traceback", "memory_source"), "text"),
    **dict.fromkeys(("modules", "params", "forward_calls", "peak_memory_bytes"), "number"),
    **dict.fromkeys((f"config.{k}" for k in ("network", "method", "split", "cuts", "dataset", "device", "precision",
                                             "aux", "local_loss", "hilo_exec", "variant", "pff_on", "pff_exec")), "text"),
    **dict.fromkeys((f"config.{k}" for k in ("k", "batch_size", "steps", "warmup", "seed", "image_size",
                                             "num_classes", "cascade_span", "pff_grid")), "integer"),
    **dict.fromkeys((f"config.{k}" for k in ("lr", "momentum", "weight_decay", "predsim_beta", "w_independent",
                                             "w_cascade")), "number"),
    **dict.fromkeys(("config.hilo", "config.independent"), "boolean"),
    "config.lambdas": "numbers",
    **dict.fromkeys((f"env.{k}" for k in ("torch", "cuda", "cudnn", "driver", "device_name", "cpu", "python",
                                          "git_commit", "time", "hostname", "device", "job_id", "pid")), "scalar"),
    "memory.source": "text",
    **dict.fromkeys((f"memory.{k}" for k in _MEMORY_NUMBERS), "number"),
    **dict.fromkeys((f"predicted.{k}" for k in ("peak_allocated_bytes", "peak_reserved_bytes", "device_used_bytes",
                                                "live_peak_bytes", "lower_bound_bytes", "efficiency", "seconds")),
                    "number"),
    **dict.fromkeys(("memory.breakdown_bytes", "predicted.breakdown_bytes", "memory.aux_scope_peak_bytes",
                     "predicted.aux_scope_peak_bytes", "memory.per_module_peak_bytes"), "numbers"),
    **dict.fromkeys(("predicted.terms", "predicted.terms.live_tensors"), "object"),
    "predicted.terms.live_tensors.bytes": "number",
    **dict.fromkeys((f"timing.{k}" for k in ("step_seconds", "step_seconds_q1", "step_seconds_q3",
                                             "images_per_second")), "number"),
    "timing.steps": "integer",
    "timing.step_seconds_all": "list of numbers",
    **dict.fromkeys(("accuracy.top1", "accuracy.test_error_pct"), "number"),
    "accuracy.epochs": "integer",
    "flops": "number or object",
    "flops.total": "number",
}
INT64 = 2**63


def _is_number(v) -> bool:
    """A JSON number a reader can use: not a bool, an int within 64 bits (json.loads makes ints
    of any size, which pandas cannot hold), a float (non-finite ones are null in records)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return -INT64 <= v < INT64 if isinstance(v, int) else True


_TYPE_CHECKS = {
    "object": lambda v: isinstance(v, dict),
    "text": lambda v: isinstance(v, str),
    "number": _is_number,
    "integer": lambda v: isinstance(v, int) and _is_number(v),
    "boolean": lambda v: isinstance(v, bool),
    "scalar": lambda v: isinstance(v, str) or _is_number(v),
    "numbers": lambda v: isinstance(v, dict) and all(x is None or _is_number(x) for x in v.values()),
    "list of numbers": lambda v: isinstance(v, list) and all(x is None or _is_number(x) for x in v),
    "number or object": lambda v: isinstance(v, dict) or _is_number(v),
}
_TYPE_NAMES = {"object": "an object", "text": "text", "number": "a number", "integer": "an integer",
               "boolean": "true or false", "scalar": "text or a number", "numbers": "an object of numbers",
               "list of numbers": "a list of numbers", "number or object": "a number or an object"}


def _field(rec: dict, path: str):
    v = rec
    for part in path.split("."):
        if not isinstance(v, dict):
            return None
        v = v.get(part)
    return v


def record_problem(rec: dict) -> str | None:
    """Why an (upgraded) record cannot be a row, or None: an unknown kind or status, or a field
    whose type is not the schema's (FIELD_TYPES; null is always allowed), named by its path."""
    if rec.get("kind") not in KINDS:
        return f"unknown kind {rec.get('kind')!r} (allowed: {', '.join(KINDS)})"
    if rec.get("status") not in STATUSES:
        return f"unknown status {rec.get('status')!r} (allowed: {', '.join(STATUSES)})"
    for path, kind in FIELD_TYPES.items():
        v = _field(rec, path)
        if v is not None and not _TYPE_CHECKS[kind](v):
            what = f"{type(v).__name__} {shown(v, 40)}" if isinstance(v, (str, int, float)) else type(v).__name__
            return f"{path} must be {_TYPE_NAMES[kind]}, got {what}"
    return None


def supersede_key(record: dict) -> tuple:
    """The same task (task_key) of the same suite on the same machine: a later record replaces an
    earlier one. Other machines' records of a configuration are other measurements, kept."""
    env = record.get("env") or {}
    config = json.dumps(sanitize(record.get("config")), sort_keys=True)  # the config itself, not its stored id
    return (record.get("suite"), record.get("kind"), config, options_key(record.get("options")),
            env.get("hostname"), env.get("device_name"))


def latest_per_task(records: list[dict]) -> tuple[list[dict], int]:
    """Only the latest record of each supersede_key (by env.time, then order read): a task that
    failed and then succeeded on --resume shows its final outcome. Records without a config
    are all kept. Returns (records in their original order, how many were superseded)."""
    def when(i: int) -> tuple:
        t = (records[i].get("env") or {}).get("time")
        return (t if isinstance(t, str) else "", i)

    latest: dict[tuple, int] = {}
    for i in sorted(range(len(records)), key=when):
        r = records[i]
        if isinstance(r.get("config"), dict):
            latest[supersede_key(r)] = i
    keep = set(latest.values())
    out = [r for i, r in enumerate(records) if not isinstance(r.get("config"), dict) or i in keep]
    return out, len(records) - len(out)


# ----- reading -------------------------------------------------------------------------------
@dataclass
class Loaded:
    records: list[dict]
    notes: list[str] = field(default_factory=list)  # what was skipped and why


def result_files(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.suffix in (".jsonl", ".json") and q.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return files


def _iter_file(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record or None, why not) for every record-looking thing in `path`."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError:  # JSONDecodeError, or an int past Python's 4,300-digit limit
            data = None
        if isinstance(data, dict) and "benchmarks" not in data:
            yield 1, data, None
            return
        if isinstance(data, list):
            for i, r in enumerate(data, 1):
                yield (i, r, None) if isinstance(r, dict) else (i, None, "not an object")
            return
        if data is not None:
            yield 1, None, "not a result record (pytest-benchmark files are read by `hpff-bench report`)"
            return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            yield n, None, f"not valid JSON ({e.msg}; a partly written line?)"
            continue
        except ValueError as e:  # an int past Python's 4,300-digit limit
            yield n, None, f"not readable JSON ({str(e)[:100]})"
            continue
        yield (n, r, None) if isinstance(r, dict) else (n, None, "not an object")


def read_records(paths, *, with_source: bool = False) -> Loaded:
    """Every record in `paths`, upgraded to the current schema; unreadable lines become notes."""
    out = Loaded([])
    for f in result_files(paths):
        for n, rec, why in _iter_file(f):
            if rec is not None and "schema" not in rec and "config" not in rec:
                why = "neither a result record nor a profile dict (no 'schema' or 'config' key)"
                rec = None
            if rec is None:
                out.notes.append(f"{f}:{n}: {why}; left out")
                continue
            try:
                rec = upgrade(rec)
            except StoreError as e:
                out.notes.append(f"{f}:{n}: {e}; left out")
                continue
            problem = record_problem(rec)
            if problem:
                out.notes.append(f"{f}:{n}: not a valid record: {problem}; left out")
                continue
            if with_source:
                rec = {**rec, "_file": str(f), "_line": n}
            out.records.append(rec)
    return out


def load_results(paths, *, warn: bool = True):
    """Records in `paths` as a pandas DataFrame, nested objects flattened with '.'.

    Columns always include every schema-1 top-level key, plus `_file` and `_line`."""
    import pandas as pd

    loaded = read_records(paths, with_source=True)
    if warn:
        for note in loaded.notes:
            warnings.warn(note, stacklevel=2)
    if not loaded.records:
        return pd.DataFrame(columns=[*RECORD_KEYS, *EXTRA_KEYS, "_file", "_line"])
    frame = pd.json_normalize([sanitize(r) for r in loaded.records], sep=".")
    for k in RECORD_KEYS:
        if k not in frame.columns and not any(c.startswith(k + ".") for c in frame.columns):
            frame[k] = None
    return frame


def finished_keys(results_dir: str | os.PathLike, statuses: tuple[str, ...] = ("ok",)) -> set[tuple[str, str, str]]:
    """task_key of every record in `results_dir` whose status is in `statuses` (for --resume)."""
    d = Path(results_dir)
    if not d.exists():
        return set()
    loaded = read_records([d])
    return {task_key(r) for r in loaded.records if r.get("status") in statuses}
