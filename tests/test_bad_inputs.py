"""A table of bad inputs: each must end in exit 2 and one line naming the problem, before any
model is built or any task runs (the CLI's main() is called in-process, so the table is fast).

Each case: an id, the argv (`{d}` is a temporary directory holding `files`), the files to write
there, environment variables, and a phrase the one line must contain.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hpff_bench.cli import main

GOOD_SUITE = """\
[suite]
name = "t"
kinds = ["estimate"]
[base]
network = "resnet20"
batch_size = 4
[axes]
method = ["bp"]
"""


def suite(extra_suite: str = "", extra: str = "", axes: str = 'method = ["bp"]') -> str:
    return (
        f'[suite]\nname = "t"\nkinds = ["estimate"]\n{extra_suite}\n'
        f'[base]\nnetwork = "resnet20"\nbatch_size = 4\n\n[axes]\n{axes}\n{extra}\n'
    )


def record(**over) -> str:
    r = {"schema": 1, "run_id": "x", "config_id": "c", "kind": "estimate", "status": "ok", "config": {"k": 1}}
    r.update(over)
    return json.dumps(r) + "\n"


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA device")
P = "profile --network resnet20 --device cpu --no-predict".split()
E = "estimate --network resnet20".split()
T = "train --network resnet20 --dataset fake --epochs 1 --results {d}/res --data-root {d}/data".split()
S = ["sweep", "{d}/s.toml", "--results", "{d}/res", "--no-progress"]
R = ["report", "-o", "{d}/out"]

CASES = [
    # ---- run options: type, range and finiteness (NaN never passes) ----
    ("lr-nan", [*P, "--lr", "nan"], {}, {}, "--lr must be a finite number > 0, got nan"),
    ("lr-inf", [*P, "--lr", "inf"], {}, {}, "--lr must be a finite number"),
    ("lr-negative", [*P, "--lr", "-1"], {}, {}, "--lr must be > 0, got -1"),
    ("momentum-negative", [*P, "--momentum", "-5"], {}, {}, "--momentum must be in [0, 1], got -5"),
    ("momentum-nan", [*P, "--momentum", "nan"], {}, {}, "--momentum must be a finite number"),
    ("weight-decay-negative", [*P, "--weight-decay", "-1"], {}, {}, "--weight-decay must be >= 0"),
    ("weight-decay-inf", [*P, "--weight-decay", "inf"], {}, {}, "--weight-decay must be a finite number"),
    ("w-cascade-nan", [*P, "--w-cascade", "nan"], {}, {}, "--w-cascade must be a finite number"),
    ("w-independent-negative", [*P, "--w-independent", "-1"], {}, {}, "--w-independent must be >= 0"),
    ("predsim-beta", [*P, "--predsim-beta", "2"], {}, {}, "--predsim-beta must be in [0, 1]"),
    ("predsim-beta-nan", [*P, "--predsim-beta", "nan"], {}, {}, "--predsim-beta must be a finite number"),
    ("ixx-nan", [*P, "--ixx-1", "nan"], {}, {}, "--ixx-1 must be a finite number"),
    ("ixy-negative", [*P, "--ixy-2", "-1"], {}, {}, "--ixy-2 must be >= 0"),
    ("batch-zero", [*P, "--batch-size", "0"], {}, {}, "--batch-size must be a positive integer, got 0"),
    ("batch-negative", [*P, "--batch-size", "-3"], {}, {}, "--batch-size must be a positive integer"),
    ("steps-zero", [*P, "--steps", "0"], {}, {}, "--steps must be a positive integer"),
    ("warmup-negative", [*P, "--warmup", "-1"], {}, {}, "--warmup must be an integer in [0, 1000000], got -1"),
    ("k-zero", [*P, "--k", "0"], {}, {}, "--k must be a positive integer"),
    ("k-too-large", [*P, "--method", "dgl", "--k", "99"], {}, {}, "out of range for resnet20"),
    ("image-size-small", [*P, "--image-size", "4"], {}, {}, "--image-size must be an integer in [8, 65536], got 4"),
    ("classes-one", [*P, "--num-classes", "1"], {}, {}, "--num-classes must be an integer in [2, 1000000], got 1"),
    ("seed-negative", [*P, "--seed", "-1"], {}, {}, "--seed must be an integer in [0, 4294967295], got -1"),
    ("network", [*P, "--network", "vgg"], {}, {}, "unknown --network 'vgg'"),
    ("method", [*P, "--method", "ff"], {}, {}, "unknown --method 'ff'"),
    ("device", [*P, "--device", "tpu"], {}, {}, "unknown --device 'tpu'"),
    ("precision", [*P, "--precision", "fp8"], {}, {}, "unknown --precision 'fp8'"),
    ("split", [*P, "--split", "half"], {}, {}, "unknown --split 'half'"),
    ("pff-grid", [*P, "--method", "dgl", "--k", "2", "--pff-grid", "3"], {}, {}, "unknown --pff-grid 3"),
    ("hilo-with-bp", [*P, "--hilo"], {}, {}, "need a local method"),
    ("span-above-k", [*P, "--method", "dgl", "--k", "2", "--hilo", "--cascade-span", "3"], {}, {}, "needs K >= 3"),
    ("nvml-interval-nan", [*P, "--nvml-interval-ms", "nan"], {}, {}, "--nvml-interval-ms must be a finite number"),
    ("nvml-interval-zero", [*P, "--nvml-interval-ms", "0"], {}, {}, "--nvml-interval-ms must be in (0, 60000], got 0.0"),
    ("cuda-arch", [*P, "--cuda-arch", "volta9"], {}, {}, "unknown --cuda-arch"),
    ("context-bytes", [*P, "--cuda-context-bytes", "12XB"], {}, {}, "is not a size"),
    # ---- checks that need the model's shapes or the machine (meta device, before any tensor) ----
    ("pff-grid-does-not-divide", [*P, "--method", "dgl", "--k", "4", "--split", "uniform", "--pff-grid", "4",
                                  "--image-size", "36"], {}, {}, "cannot split the output of module"),
    ("image-size-host-memory", [*P, "--image-size", "60000"], {}, {}, "cannot fit in host memory"),
    ("batch-host-memory", [*P, "--batch-size", "1000000000"], {}, {}, "GiB is available"),
    pytest.param("profile-cuda-without-gpu", ["profile", "--device", "cuda", "--network", "resnet20"], {}, {},
                 "no CUDA device is available", marks=NO_CUDA),
    ("snapshot-under-a-file", [*P, "--snapshot", "{d}/f/snap.pickle"], {"f": "x"}, {}, "is a file, not a directory"),
    # ---- estimate ----
    ("estimate-batch-list", [*E, "--batch-size", "0,64"], {}, {}, "--batch-size must be a positive integer or"),
    ("estimate-batch-text", [*E, "--batch-size", "many"], {}, {}, "--batch-size must be a positive integer or"),
    ("estimate-budget-zero", [*E, "--budget", "0"], {}, {}, "--budget must be > 0"),
    ("estimate-budget-text", [*E, "--budget", "lots"], {}, {}, "is not a size"),
    ("estimate-lr-nan", [*E, "--lr", "nan"], {}, {}, "--lr must be a finite number"),
    ("estimate-momentum", [*E, "--momentum", "-1"], {}, {}, "--momentum must be in [0, 1]"),
    ("estimate-pff-grid", [*E, "--method", "dgl", "--k", "4", "--split", "uniform", "--pff-grid", "4",
                           "--image-size", "36"], {}, {}, "cannot split"),
    # ---- train: checked before the data is loaded or an epoch runs ----
    ("train-results-is-a-file", [*T[:-4], "--results", "{d}/f", "--data-root", "{d}"], {"f": "x"}, {},
     "--results '"),
    ("train-checkpoint-dir-file", [*T, "--checkpoint-dir", "{d}/f"], {"f": "x"}, {}, "--checkpoint-dir '"),
    ("train-epochs-zero", [*T, "--epochs", "0"], {}, {}, "--epochs must be an integer in [1, 10000], got 0"),
    ("train-warmup-above-epochs", [*T, "--epochs", "2", "--warmup-epochs", "5"], {}, {}, "--warmup-epochs must be an integer in [0, 2]"),
    ("train-subset-zero", [*T, "--train-subset", "0"], {}, {}, "--train-subset must be an integer in [1, 2147483647], got 0"),
    ("train-workers-negative", [*T, "--num-workers", "-1"], {}, {}, "--num-workers must be an integer in [0, 256], got -1"),
    ("train-lr-nan", [*T, "--lr", "nan"], {}, {}, "--lr must be a finite number"),
    ("train-momentum", [*T, "--momentum", "-5"], {}, {}, "--momentum must be in [0, 1]"),
    ("train-batch-zero", [*T, "--batch-size", "0"], {}, {}, "--batch-size must be a positive integer"),
    ("train-host-memory", [*T, "--image-size", "60000"], {}, {}, "cannot fit in host memory"),
    pytest.param("train-cuda-without-gpu", [*T, "--device", "cuda"], {}, {}, "no CUDA device is available",
                 marks=NO_CUDA),
    # ---- sweep options and environment ----
    ("jobs-zero", [*S, "--jobs", "0"], {"s.toml": GOOD_SUITE}, {}, "--jobs must be an integer >= 1, got 0"),
    ("jobs-negative", [*S, "--jobs", "-2"], {"s.toml": GOOD_SUITE}, {}, "--jobs must be an integer >= 1"),
    ("timeout-negative", [*S, "--timeout", "-5"], {"s.toml": GOOD_SUITE}, {}, "--timeout must be in (0, 31536000], got -5.0"),
    ("timeout-zero", [*S, "--timeout", "0"], {"s.toml": GOOD_SUITE}, {}, "--timeout must be in (0, 31536000], got 0.0"),
    ("timeout-nan", [*S, "--timeout", "nan"], {"s.toml": GOOD_SUITE}, {}, "--timeout must be a finite number"),
    ("results-is-a-file", [*S[:2], "--results", "{d}/f"], {"s.toml": GOOD_SUITE, "f": "x"}, {},
     "--results '"),
    ("table-rows-negative", [*S, "--table-rows", "-1"], {"s.toml": GOOD_SUITE}, {}, "--table-rows must be"),
    ("inject-garbage", S, {"s.toml": GOOD_SUITE}, {"HPFF_BENCH_INJECT": "explode"}, "bad entry 'explode'"),
    ("inject-no-task", S, {"s.toml": GOOD_SUITE}, {"HPFF_BENCH_INJECT": "crash:nothing"}, "matches no task"),
    ("threads-env", S, {"s.toml": GOOD_SUITE}, {"HPFF_BENCH_THREADS": "two"}, "HPFF_BENCH_THREADS='two'"),
    ("preset-unknown", [*S, "--preset", "fast"], {"s.toml": GOOD_SUITE}, {}, "unknown preset 'fast'"),
    ("only-unknown-key", [*S, "--only", "colour=red"], {"s.toml": GOOD_SUITE}, {}, "unknown key 'colour'"),
    ("only-matches-nothing", [*S, "--only", "kind=train"], {"s.toml": GOOD_SUITE}, {}, "matches none"),
    # ---- suite files ----
    ("suite-missing", ["sweep", "{d}/none.toml", "--results", "{d}/res"], {}, {}, "no such suite file"),
    ("suite-is-a-directory", ["sweep", "{d}/sd", "--results", "{d}/res"], {"sd/x": ""}, {}, "is a directory"),
    ("suite-binary", S, {"s.toml": b"\xff\xfe\x00\x81binary"}, {}, "not a text file"),
    ("suite-bad-toml", S, {"s.toml": "[suite\nname ="}, {}, "not valid TOML"),
    ("suite-jobs-text", S, {"s.toml": suite('jobs = "two"')}, {}, "[suite] jobs must be an integer >= 1, got 'two'"),
    ("suite-jobs-zero", S, {"s.toml": suite("jobs = 0")}, {}, "[suite] jobs must be an integer >= 1"),
    ("suite-timeout", S, {"s.toml": suite("timeout_s = -1")}, {}, "[suite] timeout_s must be in (0, 31536000], got -1"),
    ("suite-name-number", S, {"s.toml": suite().replace('name = "t"', "name = 42")}, {}, "name must be a non-empty string"),
    ("suite-kinds-empty", S, {"s.toml": suite().replace('kinds = ["estimate"]', "kinds = []")}, {}, "kinds = [] runs nothing"),
    ("suite-kind-unknown", S, {"s.toml": suite().replace('kinds = ["estimate"]', 'kinds = ["bench"]')}, {}, "unknown kind(s)"),
    ("suite-train-data-root", S, {"s.toml": suite(extra="[kind.train]\ndata_root = 5\n")}, {},
     "--data-root must be a non-empty string, got 5"),
    ("suite-train-epochs", S, {"s.toml": suite(extra="[kind.train]\nepochs = 0\n")}, {}, "--epochs must be an integer in [1, 10000], got 0"),
    ("suite-kind-timeout", S, {"s.toml": suite(extra="[kind.estimate]\ntimeout_s = 0\n")}, {}, "timeout_s must be in (0, 31536000], got 0"),
    ("suite-base-lr-nan", S, {"s.toml": suite().replace("batch_size = 4", "batch_size = 4\nlr = nan")}, {},
     "--lr must be a finite number"),
    ("suite-base-momentum", S, {"s.toml": suite().replace("batch_size = 4", "batch_size = 4\nmomentum = -1.0")}, {},
     "--momentum must be in [0, 1]"),
    ("suite-field-type", S, {"s.toml": suite(extra='[kind.estimate]\nbatch_size = "x"\n')}, {}, "batch_size = 'x' is not an integer"),
    ("suite-unknown-axis", S, {"s.toml": suite(axes='colour = ["red"]')}, {}, "unknown axis"),
    ("suite-empty-axis", S, {"s.toml": suite(axes="method = []")}, {}, "no values"),
    ("suite-base-not-table", S, {"s.toml": '[suite]\nname = "t"\nbase = 3\n[axes]\nmethod = ["bp"]\n'}, {},
     "unknown key(s) ['base']"),
    ("suite-pff-grid", S, {"s.toml": suite(axes='method = ["dgl"]\nk = [4]\nsplit = ["uniform"]\npff_grid = [4]\n'
                                           "image_size = [36]")}, {}, "cannot split the output of module"),
    pytest.param("suite-profile-cuda-without-gpu", S,
                 {"s.toml": suite(axes='method = ["bp"]\ndevice = ["cuda"]').replace('["estimate"]', '["profile"]')},
                 {}, "no CUDA device is available", marks=NO_CUDA),
    ("suite-profile-host-memory", S,
     {"s.toml": suite(axes='method = ["bp"]\nimage_size = [60000]\ndevice = ["cpu"]').replace('["estimate"]', '["profile"]')},
     {}, "cannot fit in host memory"),
    # ---- report: no valid record is an error, not an empty report ----
    ("report-missing", [*R, "{d}/none.jsonl"], {}, {}, "no such file or directory"),
    ("report-empty-dir", [*R, "{d}/e"], {"e/readme.txt": "x"}, {}, "no .jsonl or .json results files"),
    ("report-output-is-a-file", ["report", "-o", "{d}/f", "{d}/r.jsonl"], {"f": "x", "r.jsonl": record()}, {},
     "-o/--output '"),
    ("report-readme-as-json", [*R, "{d}/README.json"], {"README.json": "# hpff-bench\n\nSome *markdown*.\n"}, {},
     "no valid result record"),
    ("report-random-bytes", [*R, "{d}/r.jsonl"], {"r.jsonl": bytes(range(256)) * 4}, {}, "no valid result record"),
    ("report-list-of-numbers", [*R, "{d}/r.json"], {"r.json": "[1, 2, 3]"}, {}, "no valid result record"),
    ("report-status-maybe", [*R, "{d}/r.jsonl"], {"r.jsonl": record(status="maybe")}, {}, "unknown status 'maybe'"),
    ("report-kind-unknown", [*R, "{d}/r.jsonl"], {"r.jsonl": record(kind="guess")}, {}, "unknown kind 'guess'"),
    ("report-config-is-text", [*R, "{d}/r.jsonl"], {"r.jsonl": record(config="resnet32")}, {}, "config must be an object"),
    ("report-modules-text", [*R, "{d}/r.jsonl"], {"r.jsonl": record(modules="two")}, {}, "modules must be a number"),
    ("report-benchmark-config-text", [*R, "{d}/b.json"],
     {"b.json": json.dumps({"benchmarks": [{"name": "t", "stats": {"median": 0.1},
                                            "extra_info": {"record": {"config": "resnet32"}}}]})},
     {}, "config is not an object"),
    ("report-title-empty", [*R, "{d}/r.jsonl", "--title", ""], {"r.jsonl": record()}, {}, "--title must be a non-empty string"),
    # ---- numbers past what the run can represent or finish; values that look like options ----
    ("budget-past-float", [*E, "--budget", "1e400"], {}, {}, "--budget must be > 0 and at most 1 PiB"),
    ("budget-negative-size", [*E, "--budget", "-1GiB"], {}, {}, "--budget must be > 0 and at most 1 PiB (2^50 B, a size such as 24GiB or 80GB), got '-1GiB'"),
    ("plan-budget-negative", ["plan", "--budget", "-1GiB"], {}, {}, "--budget must be > 0"),
    ("context-bytes-negative", [*E, "--cuda-context-bytes", "-5MiB"], {}, {}, "--cuda-context-bytes must be >= 0"),
    ("lr-minus-inf", [*P, "--lr", "-inf"], {}, {}, "--lr must be a finite number > 0, got -inf"),
    ("lr-negative-exponent", [*P, "--lr", "-1e-3"], {}, {}, "--lr must be > 0, got -0.001"),
    ("seed-past-64-bits", [*E, "--seed", "99999999999999999999999"], {}, {},
     "--seed must be an integer in [0, 4294967295], got 99999999999999999999999"),
    ("steps-twenty-digits", [*P, "--steps", "9" * 20], {}, {}, "--steps must be an integer in [1, 1000000]"),
    ("warmup-twenty-digits", [*P, "--warmup", "9" * 20], {}, {}, "--warmup must be an integer in [0, 1000000]"),
    ("batch-past-32-bits", [*E, "--batch-size", "9" * 12], {}, {}, "--batch-size must be a positive integer or"),
    ("batch-superscript-digit", [*E, "--batch-size", "\u00b2"], {}, {}, "--batch-size must be a positive integer or"),
    ("cuts-superscript-digit", [*P, "--method", "dgl", "--cuts", "1.\u00b2"], {}, {}, "each cut is STAGE.BLOCK"),
    ("train-epochs-huge", [*T, "--epochs", "9" * 20], {}, {}, "--epochs must be an integer in [1, 10000]"),
    ("train-subset-huge", [*T, "--train-subset", "9" * 20], {}, {}, "--train-subset must be an integer in [1, 2147483647]"),
    ("timeout-past-a-year", [*S, "--timeout", "1e300"], {"s.toml": GOOD_SUITE}, {}, "--timeout must be in (0, 31536000]"),
    # ---- argparse's own errors: one line (and a hint, see test_argparse_errors_are_short) ----
    ("argparse-float", [*E, "--lr", "abc"], {}, {}, "hpff-bench estimate: error: argument --lr: invalid float value: 'abc'"),
    ("argparse-int", [*P, "--seed", "1.5"], {}, {}, "hpff-bench profile: error: argument --seed: invalid int value: '1.5'"),
    ("argparse-unknown-flag", [*T, "--warmup", "3"], {}, {}, "hpff-bench train: error: unrecognized arguments: --warmup 3"),
    ("argparse-unknown-command", ["bench"], {}, {}, "hpff-bench: error: argument COMMAND: invalid choice: 'bench'"),
    ("argparse-newline-in-value", [*R, "{d}/r.jsonl", "--colour", "red\nblue"], {"r.jsonl": record()}, {},
     "unrecognized arguments: --colour red\\nblue"),
    ("path-with-newline", [*R, "{d}/a\r\nb"], {}, {}, "a\\r\\nb: no such file or directory"),
    # ---- side effects: a refused run creates nothing (the table checks the directory is unchanged) ----
    ("train-data-root-missing", [*T[:-2], "--dataset", "cifar10", "--data-root", "{d}/missing/a/b", "--no-download"],
     {}, {}, "CIFAR-10 is not available under"),
    ("sweep-results-below-proc", [*S[:2], "--results", "/proc/hpff-bench-test/res"], {"s.toml": GOOD_SUITE}, {},
     "--results '/proc/hpff-bench-test/res"),
    ("train-results-below-proc", [*T[:-4], "--results", "/proc/hpff-bench-test/res", "--data-root", "{d}"], {}, {},
     "--results '/proc/hpff-bench-test/res"),
    ("report-output-below-proc", ["report", "-o", "/proc/hpff-bench-test/out", "{d}/r.jsonl"], {"r.jsonl": record()},
     {}, "-o/--output '/proc/hpff-bench-test/out"),
    # ---- suite files of the wrong shape ----
    ("suite-is-a-number", S, {"s.toml": "suite = 5\n"}, {}, "[suite] must be a table, got 5"),
    ("suite-kinds-number", S, {"s.toml": suite().replace('kinds = ["estimate"]', "kinds = 5")}, {},
     "[suite] kinds must be a string or an array of strings, got 5"),
    ("suite-grid-number", S, {"s.toml": 'grid = 3\n[suite]\nname = "t"\n'}, {}, "[[grid]] must be a table or an array of tables"),
    ("suite-exclude-text", S, {"s.toml": 'exclude = "bp"\n' + suite()}, {}, "exclude must be a table or an array of tables, got 'bp'"),
    ("suite-set-text", S, {"s.toml": 'set = ["x"]\n' + suite()}, {}, "set must be a table or an array of tables"),
    ("suite-kind-only-text", S, {"s.toml": suite(extra='[kind.estimate]\nonly = "bp"\n')}, {},
     "[kind].estimate only must be a table or an array of tables"),
    ("suite-bundle-name-number", S, {"s.toml": suite(axes='level = [{ name = 3, hilo = true }]')}, {},
     "a bundle's name must be a string, got 3"),
    ("suite-preset-grids-number", [*S, "--preset", "q"], {"s.toml": suite(extra="[preset.q]\ngrids = [1]\n")}, {},
     "[preset.q] grids must be a string or an array of strings"),
    ("suite-timeout-inf", S, {"s.toml": suite("timeout_s = inf")}, {}, "[suite] timeout_s must be a finite number"),
    ("suite-seed-huge", S, {"s.toml": suite().replace("batch_size = 4", "batch_size = 4\nseed = 9223372036854775807")},
     {}, "--seed must be an integer in [0, 4294967295]"),
    # ---- report: a field of the wrong type is a note naming it, not a silently missing value ----
    ("report-k-text", [*R, "{d}/r.jsonl"], {"r.jsonl": record(config={"k": "abc"})}, {},
     "config.k must be an integer, got str 'abc'"),
    ("report-peak-text", [*R, "{d}/r.jsonl"], {"r.jsonl": record(peak_memory_bytes="lots")}, {},
     "peak_memory_bytes must be a number, got str 'lots'"),
    ("report-memory-peak-text", [*R, "{d}/r.jsonl"], {"r.jsonl": record(memory={"peak_allocated_bytes": "1 GiB"})}, {},
     "memory.peak_allocated_bytes must be a number, got str '1 GiB'"),
    ("report-top1-bool", [*R, "{d}/r.jsonl"], {"r.jsonl": record(accuracy={"top1": True})}, {},
     "accuracy.top1 must be a number, got bool"),
    ("report-step-times-text", [*R, "{d}/r.jsonl"], {"r.jsonl": record(timing={"step_seconds_all": ["fast"]})}, {},
     "timing.step_seconds_all must be a list of numbers, got list"),
    ("report-hostname-list", [*R, "{d}/r.jsonl"], {"r.jsonl": record(env={"hostname": ["a"]})}, {},
     "env.hostname must be text or a number, got list"),
    ("report-int-past-64-bits", [*R, "{d}/r.jsonl"], {"r.jsonl": record(params=10**30)}, {},
     "params must be a number, got int 1000000000000000000000000000000"),
    ("report-int-past-json-limit", [*R, "{d}/r.jsonl"], {"r.jsonl": '{"schema": 1, "params": ' + "9" * 5000 + "}\n"}, {},
     "not readable JSON"),
]


def _ids(case):
    return case.values[0] if hasattr(case, "values") else case[0]


def test_the_table_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("name,argv,files,env,phrase", CASES, ids=[_ids(c) for c in CASES])
def test_bad_input_is_one_line_and_exit_2(name, argv, files, env, phrase, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative default (reports/, results/) stays inside tmp_path
    for rel, content in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rc = main([a.replace("{d}", str(tmp_path)) for a in argv])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2, (rc, captured.err[-2000:])
    assert len(err) == 1, err
    assert phrase in err[0], err[0]
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, "a refused input must write nothing"


def test_report_default_output_is_never_the_current_directory(tmp_path, monkeypatch):
    """`report ..` without -o: reports/<the directory's own name>, not reports/.. (= the current directory)."""
    from hpff_bench.commands.report import default_output

    cwd = tmp_path / "results" / "sweep"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    assert default_output("..") == Path("reports/results")
    assert default_output(".") == Path("reports/sweep")
    assert default_output("..json") == Path("reports/report")  # a file's stem '.'
    assert default_output("r.jsonl") == Path("reports/r")
    assert default_output("/") == Path("reports/report")


def test_a_failed_download_leaves_no_directories(tmp_path, monkeypatch):
    """A download that fails removes the directory chain it created for the data root."""
    import torchvision

    from hpff_bench.data.datasets import availability

    def offline(url, root, *args, **kwargs):  # as torchvision's: the root first, then a partial file
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"partial")
        raise OSError("offline")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", offline)
    why = availability("cifar10", tmp_path / "a" / "b" / "c", download=True)
    assert why is not None and "download failed (OSError: offline)" in why
    assert list(tmp_path.iterdir()) == []
