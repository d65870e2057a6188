"""Generated inputs (hypothesis): every sub-command's flags, suite files' fields and result
records' fields get values drawn from types, signs, magnitudes, NaN/inf, unicode, empty
strings and huge numbers. The property, for every draw:

- the exit code is 0 or 2, or the input reached the command's work (below);
- stderr never has a traceback, and at exit 2 at most two lines;
- exit 2 writes nothing at all; otherwise nothing is written outside the output directory the
  command was given (--results, --checkpoint-dir, -o; their defaults under the working
  directory), checked on a fresh working directory per draw.

The CLI's main() runs in-process. Draws add one to three flags (or one suite/record field) to a
known-cheap valid base, so most are refused at the boundary; a draw the boundary accepts
reaches the command's work (a trace, a profile, a training run, a sweep's workers, the report's
figures), which is replaced here by a stub that stops the run with `Reached`: what is under test
is the boundary, and the work itself has its own tests.

Bounded for `make test`: a fixed seed (derandomize) and EXAMPLES draws in all, spread over the
tests. A longer run: HPFF_BENCH_HYPOTHESIS_EXAMPLES=5000 (total over all tests, random seed),
see docs/robustness.md.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from hpff_bench.cli import build_parser, main

LONG = os.environ.get("HPFF_BENCH_HYPOTHESIS_EXAMPLES")
TESTS = 12  # the tests below that draw
EXAMPLES = int(LONG) if LONG else 1200
SETTINGS = settings(
    max_examples=max(1, EXAMPLES // TESTS),
    derandomize=not LONG,  # CI: the same draws every run
    database=None,  # writes nothing into the repository
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Reached(BaseException):
    """The input passed every check and reached the command's work (not an Exception, so no
    `except Exception` on the way can take it for a failure of its own)."""


def _reached(*args, **kwargs):
    raise Reached


class _StopIteration:
    def __iter__(self):
        raise Reached


@pytest.fixture
def stubbed(monkeypatch):
    """The work of every command replaced by `_reached` (the checks before it stay real)."""
    import hpff_bench.aux.param_table as param_table
    import hpff_bench.commands.networks as networks
    import hpff_bench.planning as planning
    import hpff_bench.profiling as profiling
    import hpff_bench.report.build as build
    import hpff_bench.runner.sweep as sweep
    import hpff_bench.runner.train as train

    for name in ("profile_config", "estimate_config", "estimate_batches"):
        monkeypatch.setattr(profiling, name, _reached)
    monkeypatch.setattr(planning, "balanced_split", _reached)  # --split balanced traces
    monkeypatch.setattr(train, "train", _reached)
    monkeypatch.setattr(networks, "print_units", _reached)
    monkeypatch.setattr(networks, "print_registry", _reached)
    monkeypatch.setattr(build, "render_report", _reached)
    monkeypatch.setattr(param_table, "markdown", _reached)
    monkeypatch.setattr(param_table, "ROWS", _StopIteration())
    real_launcher = sweep.make_launcher

    def make_launcher(*args, **kwargs):
        launcher = real_launcher(*args, **kwargs)  # its option checks are real
        launcher.run = _reached
        return launcher

    monkeypatch.setattr(sweep, "make_launcher", make_launcher)


# ----- values ----------------------------------------------------------------------------------
SPECIAL = [
    "", " ", "0", "1", "-1", "-0", "2", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400",
    "1e-400", "9" * 20, "-" + "9" * 20, "9" * 5000, "0x10", "1_000", "\u00b2", "\u0661\u0662", "1.5", "-1.5",
    "1e3", "true", "none", "null", "-1GiB", "1GiB", "24GB", "1e400GiB", "1PiB", "2KiB", " 7 MiB ", "..", ".",
    "/proc/hpff-bench/x", "a,b", ",", "1,,2", "64,0", "1.14,2.8", "0.0", "r\u00e9snet", "\U0001f642", "--json",
    "-", "=", "auto", "all", "resnet20", "resnet110", "bp", "dgl", "infopro", "cpu", "cuda", "fake", "cifar10",
    "fp16", "official", "slurm", "local", "kind=estimate", "colour=red", "*", "[", "always", "0,1", "2:00",
    "1-00:00:00", "f", "d",
]
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
VALUES = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    TEXT,
)
# paths stay inside the draw's temporary tree (the working directory is three levels down)
PATHS = st.one_of(
    st.sampled_from(["", ".", "..", "../..", "out", "out/x", "f", "f/x", "d", "/proc/hpff-bench/x", "r\u00e9s/\u00fc",
                     "s.toml", "r.jsonl", "a b", "-x"]),
    TEXT.filter(lambda t: not t.startswith(("/", "~")) and ".." not in t),
)
PATH_DESTS = {"results", "data_root", "checkpoint_dir", "snapshot", "output", "timings", "suite"}


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """The CLI's parser, built once, for reading the draws (main() builds its own)."""
    return build_parser()


def _flags(command: str) -> list[argparse.Action]:
    parser = _parser().commands[command]
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


@st.composite
def flag_args(draw, command: str) -> tuple[str | None, list[str]]:
    """(a positional replacing the base's, or None; one to three flags with drawn values)."""
    out: list[str] = []
    positional = None
    for action in draw(st.lists(st.sampled_from(_flags(command)), min_size=1, max_size=3)):
        values = PATHS if action.dest in PATH_DESTS else VALUES
        if not action.option_strings:
            positional = draw(values)
            continue
        flag = draw(st.sampled_from(action.option_strings))
        if action.nargs == 0:  # store_true: the flag, or the flag with a value it cannot take
            out += [flag] if draw(st.booleans()) else [f"{flag}={draw(values)}"]
        elif action.nargs == "+":
            out += [flag, *draw(st.lists(values, min_size=1, max_size=3))]
        elif draw(st.booleans()):
            out += [flag, draw(values)]
        else:
            out.append(f"{flag}={draw(values)}")
    return positional, out


# ----- running one draw ------------------------------------------------------------------------
GOOD_SUITE = {
    "suite": {"name": "t", "kinds": ["estimate"]},
    "base": {"network": "resnet20", "batch_size": 4},
    "axes": {"method": ["bp"]},
}
GOOD_RECORD = {
    "schema": 1, "run_id": "r1", "config_id": "c1", "suite": "s", "run_name": "resnet20-bp-k1",
    "kind": "estimate", "status": "ok", "message": None, "label": "BP", "ablation": None,
    "config": {"network": "resnet20", "method": "bp", "k": 1, "dataset": "cifar10", "batch_size": 4,
               "seed": 0, "hilo": False, "independent": True, "pff_grid": 1, "variant": "ours"},
    "modules": 1, "params": 272474, "forward_calls": 1.0,
    "env": {"hostname": "h", "time": "2026-12-06T00:00:00Z", "torch": "2.14.1", "device_name": "cpu"},
    "memory": None,
    "predicted": {"peak_allocated_bytes": 1 << 20, "device_used_bytes": 1 << 29,
                  "breakdown_bytes": {"parameters": 1 << 18, "other": 0}},
    "timing": {"step_seconds": 0.01, "images_per_second": 400.0, "steps": 3, "step_seconds_all": [0.01, 0.02]},
    "accuracy": None,
}


def toml_value(v) -> str:
    """A TOML value (inline tables and arrays), as a careless user might type it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_text(data: dict) -> str:
    return "".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(v)}\n" for k, v in data.items())


def _snapshot(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def _output_dirs(argv: list[str], cwd: Path) -> list[Path]:
    """The output directories the command was given, as its own parser reads them (last wins)."""
    try:
        args, _ = _parser().parse_known_args(argv)
    except SystemExit:
        return []
    dirs = []
    outputs = {"sweep": ("results",), "train": ("results", "checkpoint_dir"), "report": ("output",)}
    for dest in outputs.get(args.command, ()):
        value = getattr(args, dest, None)
        if value:
            dirs.append((cwd / value).resolve())
    if args.command == "report" and not args.output:
        dirs.append(cwd / "reports")
    return dirs


def run_draw(argv: list[str], files: dict[str, str | bytes] | None = None) -> tuple[object, str, str]:
    """Run `hpff-bench argv` in a fresh working directory holding `files` (plus a file `f`
    and a directory `d`), check the property (module docstring), return (code, stdout, stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        cwd = root / "w" / "x" / "y"
        (cwd / "d").mkdir(parents=True)
        (cwd / "f").write_text("x")
        for name, content in (files or {}).items():
            (cwd / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        before = _snapshot(root)
        out, err = io.StringIO(), io.StringIO()
        old = os.getcwd()
        os.chdir(cwd)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                try:
                    code = main(argv)
                except Reached:
                    code = "reached"
        finally:
            os.chdir(old)
        after = _snapshot(root)
        if currently_in_test_context():  # the outcomes' shares, in --hypothesis-show-statistics
            event({0: "exit 0", 2: "exit 2 (refused)", "reached": "accepted: reached the work"}.get(code, f"exit {code}"))
        lines = err.getvalue().strip().splitlines()
        why = f"argv={argv!r}\nstderr={err.getvalue()[-3000:]}"
        assert code in (0, 2, "reached"), why
        assert "Traceback" not in err.getvalue(), why
        assert code != 2 or len(lines) <= 2, why  # the line (and a note): a refusal is short
        changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
        if code == 2:
            assert not changed, f"a refused input wrote {changed}\n{why}"
        else:
            allowed = _output_dirs(argv, cwd)
            outside = [p for p in changed if not any(_under(root / p, d) for d in allowed)]
            assert not outside, f"written outside {allowed}: {outside}\n{why}"
        return code, out.getvalue(), err.getvalue()


def _under(path: Path, d: Path) -> bool:
    return path == d or d in path.parents or path in d.parents  # (the directory chain leading to it too)


# ----- per sub-command ---------------------------------------------------------------------------
BASES = {
    "profile": ["profile", "--network", "resnet20", "--device", "cpu", "--batch-size", "2", "--steps", "1",
                "--warmup", "0", "--no-predict"],
    "estimate": ["estimate", "--network", "resnet20", "--batch-size", "2"],
    "plan": ["plan", "--network", "resnet20", "--budget", "1GiB", "--methods", "bp", "--k", "2"],
    "train": ["train", "--network", "resnet20", "--dataset", "fake", "--epochs", "1", "--train-subset", "8",
              "--test-subset", "8", "--batch-size", "4", "--image-size", "8", "--device", "cpu", "--no-download",
              "--no-progress"],
    "sweep": ["sweep", "s.toml", "--no-progress", "--no-download"],
    "report": ["report", "r.jsonl"],
    "aux-params": ["aux-params"],
    "networks": ["networks", "--network", "resnet20"],
}
FILES = {"s.toml": toml_text(GOOD_SUITE), "r.jsonl": json.dumps(GOOD_RECORD) + "\n"}


def test_the_commands_are_all_covered():
    """A new sub-command needs a base here (and so gets generated inputs)."""
    assert set(_parser().commands) == set(BASES)


@pytest.mark.parametrize("command", sorted(BASES))
def test_the_bases_reach_the_work(command, stubbed):
    """The bases are valid: what the draws change is what is refused."""
    code, _, err = run_draw(BASES[command], FILES)
    assert code == "reached", err


@pytest.mark.parametrize("command", sorted(BASES))
@SETTINGS
@given(data=st.data())
def test_generated_flags(command, data, stubbed):
    base = BASES[command]
    positional, flags = data.draw(flag_args(command))
    if positional is not None:  # sweep's SUITE, report's RESULTS
        base = [base[0], positional, *base[2:]]
    run_draw([*base, *flags], FILES)


@SETTINGS
@given(name=st.sampled_from(["HPFF_BENCH_THREADS", "HPFF_BENCH_INJECT"]),
       value=st.one_of(VALUES, st.sampled_from(["crash:bp", "oom:resnet20|error:x", "hang:", ":bp", "crash"])))
def test_generated_environment(name, value, stubbed):
    """The sweep's environment variables (its workers' threads, fault injection)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        run_draw(BASES["sweep"], FILES)
    finally:
        if old is None:
            os.environ.pop(name)
        else:
            os.environ[name] = old


# ----- suite files ---------------------------------------------------------------------------------
SCALARS = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.sampled_from(["", "bp", "dgl", "resnet20", "estimate", "train", "profile", "cuda", "cpu", "fake", "q",
                     "main", "exclude", "name", "x" * 300, "\U0001f642"]),
    TEXT,
)
TOML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(["name", "where", "method", "k", "network",
                                                                       "batch_size", "hilo", "epochs"]), TEXT),
                                            inner, max_size=4)),
    max_leaves=8,
)


def _suite_keys() -> list[tuple]:
    """Where a draw may put its value: every key of every table a suite file has."""
    from hpff_bench.runner.suite import CONFIG_FIELDS, KIND_CONTROL, TRAIN_KIND_OPTIONS

    fields = [*CONFIG_FIELDS, "hpff", "colour"]
    keys: list[tuple] = [(t,) for t in ("suite", "base", "axes", "grid", "exclude", "set", "kind", "preset", "extra")]
    keys += [("suite", k) for k in ("name", "description", "kinds", "on_invalid", "jobs", "timeout_s", "colour")]
    keys += [("base", f) for f in fields] + [("axes", f) for f in fields] + [("axes", "level")]
    for kind in ("estimate", "profile", "train", "bench"):
        keys += [("kind", kind)] + [("kind", kind, k) for k in (*fields, *TRAIN_KIND_OPTIONS, *KIND_CONTROL)]
    keys += [("preset", "q")] + [("preset", "q", k) for k in ("description", "kinds", "grids", "axes", "base", "exclude",
                                                             "set", "kind", "jobs", "timeout_s", "colour")]
    return keys


@SETTINGS
@given(key=st.sampled_from(_suite_keys()), value=TOML_VALUES, preset=st.booleans(), kinds=st.sampled_from(
    [["estimate"], ["profile"], ["train"], ["estimate", "train"]]))
def test_generated_suite_fields(key, value, preset, kinds, stubbed):
    data = json.loads(json.dumps(GOOD_SUITE))
    data["suite"]["kinds"] = kinds
    data["base"]["device"] = "cpu"
    data["preset"] = {"q": {"description": "quick"}}
    table = data
    for k in key[:-1]:
        if not isinstance(table.get(k), dict):
            table[k] = {}
        table = table[k]
    table[key[-1]] = value
    if key[0] == "grid":  # [[grid]] tables replace [axes]
        data.pop("axes", None)
    argv = ["sweep", "s.toml", "--no-progress", "--no-download", "--results", "res"] + (["--preset", "q"] if preset else [])
    run_draw(argv, {"s.toml": toml_text(data)})


@SETTINGS
@given(text=st.one_of(TEXT, st.binary(max_size=40)), at=st.integers(0, 200))
def test_generated_suite_text(text, at, stubbed):
    """Arbitrary text or bytes spliced into a good suite file (TOML errors, odd characters)."""
    good = toml_text(GOOD_SUITE).encode()
    at = min(at, len(good))
    blob = text if isinstance(text, bytes) else text.encode()
    run_draw(["sweep", "s.toml", "--no-progress", "--no-download", "--results", "res"],
             {"s.toml": good[:at] + blob + good[at:]})


# ----- result records --------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(allow_nan=True, allow_infinity=True),
              TEXT, st.sampled_from(["lots", "1 GiB", "", "ok", "estimate"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
)


def _record_paths(rec: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in rec.items():
        out.append(prefix + k)
        if isinstance(v, dict):
            out += _record_paths(v, prefix + k + ".")
    return out


def _record_keys() -> list[str]:
    from hpff_bench.runner.store import FIELD_TYPES, RECORD_KEYS

    return sorted(set(_record_paths(GOOD_RECORD)) | set(FIELD_TYPES) | set(RECORD_KEYS) | {"colour", "schema"})


@SETTINGS
@given(path=st.sampled_from(_record_keys()), value=JSON_VALUES, as_json=st.booleans())
def test_generated_record_fields(path, value, as_json, stubbed):
    """A record with one field set to a drawn value: the report reads it (reached) or says which
    field is wrong (exit 2, one line naming it); read_results notes it by path."""
    from hpff_bench.report.load import read_results
    from hpff_bench.runner.store import record_problem, upgrade

    rec = json.loads(json.dumps(GOOD_RECORD))
    table = rec
    parts = path.split(".")
    for k in parts[:-1]:
        if not isinstance(table.get(k), dict):
            table[k] = {}
        table = table[k]
    table[parts[-1]] = value
    text = json.dumps(rec, allow_nan=True)
    name = "r.json" if as_json else "r.jsonl"
    code, _, err = run_draw(["report", name], {name: text + ("" if as_json else "\n")})
    if code == 2:
        assert "no valid result record" in err, err
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / name
        f.write_text(text)
        loaded = read_results([f])
    try:
        problem = record_problem(upgrade(json.loads(text)))
    except Exception:  # not a record at all (a bad schema version): a note, not a row
        problem = "not a record"
    assert (len(loaded.frame) == 1) == (problem is None), (problem, loaded.notes)
    if problem and problem != "not a record":
        assert any(problem in n for n in loaded.notes), (problem, loaded.notes)


BENCHMARK = {  # pytest --benchmark-json: a record's benchmark and a side-by-side speed run
    "machine_info": {"cpu": {"brand_raw": "cpu"}, "python_version": "3.11", "node": "h"},
    "commit_info": {"id": "abc"}, "datetime": "2026-12-06T00:00:00",
    "benchmarks": [
        {"name": "t", "stats": {"median": 0.01, "q1": 0.01, "q3": 0.02, "rounds": 3},
         "extra_info": {"record": {"config": GOOD_RECORD["config"], "label": "BP"}}},
        {"name": "speed", "stats": {"median": 0.01},
         "extra_info": {"network": "resnet20", "k": 2, "batch_size": 4, "device": "cpu", "threads": 2,
                        "configurations": {"bp": {"step_seconds": 0.01, "step_vs_bp": 1.0,
                                                  "step_vs_bp_per_round": [0.9, 1.1], "flops_vs_bp": 1.0}}}},
    ],
}


@SETTINGS
@given(data=st.data(), value=JSON_VALUES)
def test_generated_benchmark_fields(data, value, stubbed):
    """A pytest-benchmark file with one field (at any depth) set to a drawn value, read by
    `report` and by `plan --timings`."""
    doc = json.loads(json.dumps(BENCHMARK))
    node = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys)) if keys else None
        if key is None:
            break
        if isinstance(node[key], (dict, list)) and node[key] and data.draw(st.booleans()):
            node = node[key]
            continue
        node[key] = value
        break
    files = {"b.json": json.dumps(doc, allow_nan=True)}
    code, _, err = run_draw(["report", "b.json"], files)
    if code == 2:
        assert "no valid result record" in err, err
    run_draw([*BASES["plan"], "--timings", "b.json"], files)  # plan reads the same files' step times


def test_a_string_numeric_field_is_a_note_naming_it(tmp_path):
    from hpff_bench.report.load import read_results

    rec = {**GOOD_RECORD, "config": {**GOOD_RECORD["config"], "k": "abc"}}
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps(GOOD_RECORD) + "\n" + json.dumps(rec) + "\n")
    loaded = read_results([f])
    assert len(loaded.frame) == 1
    assert loaded.notes == [f"{f}:2: not a valid record: config.k must be an integer, got str 'abc'; left out"]
