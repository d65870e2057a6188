"""`hpff-bench sweep SUITE`: run every configuration of a suite into the results store."""

from __future__ import annotations

import argparse
import sys

HELP = """\
Run a suite (a TOML file in suites/, see hpff_bench/runner/suite.py for the format): every
configuration's kinds (estimate, profile, train), each task in a worker process, so a crash,
an out-of-memory or a kill loses only that task (recorded as `error` / `oom` with the reason).
Every result is appended, as soon as it exists, to RESULTS/<suite>/<run-name>.jsonl; Ctrl-C
keeps everything finished, and --resume skips what already finished `ok`.

--only filters runs: comma-separated terms, all of which must match; `key=v1|v2` compares a
config field, an axis, `grid` or `kind` (e.g. `method=dgl|infopro,k=16,kind=estimate`); any
other term is a glob or substring of the run name (e.g. `resnet32*hpff`).

Training runs whose dataset is not under --data-root and cannot be downloaded are recorded as
`skipped` with the reason; the rest of the suite runs.

Launchers: `--launcher local` (default) runs the tasks here, --jobs N at a time, or one per GPU
with `--gpus 0,1,2,3` / `--gpus all` (each worker sees only its device). `--launcher slurm`
submits every task as a Slurm job through submitit (pip install 'hpff-bench[slurm]'): jobs
write their records themselves, Ctrl-C leaves them running, --resume waits for the live ones
and records dead ones as `error` with Slurm's reason. --status shows every task's state."""


SLURM_OPTIONS = ("slurm_partition", "slurm_gpus_per_task", "slurm_time", "slurm_array_parallelism", "slurm_executor")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="run a suite of configurations into results/", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("suite", metavar="SUITE", help="suite file (suites/NAME.toml, or just NAME)")
    p.add_argument("--preset", default=None, help="one of the suite's presets (e.g. quick, paper)")
    p.add_argument("--only", default=None, metavar="FILTER", help="run only matching tasks (see above)")
    p.add_argument("--results", default="results", metavar="DIR", help="results root (default %(default)s/)")
    p.add_argument("--resume", action="store_true", help="skip tasks already recorded `ok`; continue training checkpoints")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="tasks at a time (default: the suite's `jobs`, else 1)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="training data root (default: the suite's, else ./data)")
    p.add_argument("--no-download", action="store_true", help="never try to download datasets")
    p.add_argument("--isolate", default="auto", choices=("auto", "always"),
                   help="auto: a fresh process per GPU task, one shared worker for the rest; "
                   "always: a fresh process per task (default %(default)s)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="stop a task after S seconds and record it as error (default: the suite's, else none)")
    p.add_argument("--launcher", default="local", metavar="NAME",
                   help="local (worker processes here, default) or slurm (a job per task through submitit)")
    p.add_argument("--gpus", default=None, metavar="LIST",
                   help="local: one worker slot per GPU, by NVML index (as nvidia-smi numbers them): 0,1,2,3 or all")
    g = p.add_argument_group("--launcher slurm")
    g.add_argument("--slurm-partition", default=None, metavar="P", help="partition to submit to (default: the cluster's)")
    g.add_argument("--slurm-gpus-per-task", default=None, metavar="N",
                   help="GPUs for each profile/train job (estimates and device=cpu runs get none; default 0)")
    g.add_argument("--slurm-time", default=None, metavar="T",
                   help="job time limit (minutes, HH:MM:SS or D-HH:MM:SS; default: the task's timeout + 2 min)")
    g.add_argument("--slurm-array-parallelism", default=None, metavar="N", help="array jobs running at once")
    g.add_argument("--slurm-executor", default=None, metavar="E",
                   help="slurm (default) or local: submitit's LocalExecutor, each job a process on this machine")
    p.add_argument("--status", action="store_true",
                   help="print every task's state (queued, running, done, failed, ...) and exit")
    p.add_argument("--list", action="store_true", help="print the tasks and exit (nothing runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-cost-estimate", action="store_true",
                   help="start training at once, without first timing a few steps of each training "
                   "configuration to print what the training will cost")
    p.add_argument("--table-rows", type=int, default=60, metavar="N",
                   help="rows of the final results table (default %(default)s; 0 = none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpff_bench import validation as V
    from hpff_bench.runner import store
    from hpff_bench.runner.suite import load_suite
    from hpff_bench.runner.sweep import run_sweep

    V.integer("--table-rows", args.table_rows, low=0)
    if args.status:
        from hpff_bench.runner.launchers.status import status_lines

        plan = load_suite(args.suite).plan(args.preset, args.only)
        for line in status_lines(plan.tasks, f"{args.results}/{plan.suite}"):
            print(line)
        return 0
    if args.list:
        plan = load_suite(args.suite).plan(args.preset, args.only)
        done = store.finished_keys(f"{args.results}/{plan.suite}") if args.resume else set()
        for t in plan.tasks:
            mark = "done " if t.key in done else ""
            print(f"{mark}{t.label}  [{t.config.label}, batch {t.config.batch_size}, {t.run.grid}]")
        print(f"{len(plan.tasks)} task(s) over {len(plan.runs)} configuration(s)"
              + (f", {sum(t.key in done for t in plan.tasks)} already ok" if args.resume else ""))
        for note in plan.notes:
            print(f"note: {note}")
        return 0

    res = run_sweep(
        args.suite,
        preset=args.preset,
        only=args.only,
        results=args.results,
        resume=args.resume,
        jobs=args.jobs,
        data_root=args.data_root,
        download=False if args.no_download else None,
        isolate=args.isolate,
        timeout_s=args.timeout,
        launcher=args.launcher,
        gpus=args.gpus,
        slurm_options={k: getattr(args, k) for k in SLURM_OPTIONS},
        progress=not args.no_progress,
        exit_after_interrupt=True,  # after Ctrl-C, more Ctrl-C cannot cut the summary short
        estimate_cost=not args.no_cost_estimate,
    )
    return _print_summary(args, res)


def _print_summary(args, res) -> int:
    from hpff_bench.runner import store
    from hpff_bench.runner.sweep import results_table, summary_lines

    if args.table_rows and res.results_dir.exists():
        records = store.read_records([res.results_dir]).records
        if records:
            print(results_table(records, args.table_rows))
            print()
    for line in summary_lines(res):
        print(line)
    logs = res.results_dir / ("jobs" if args.launcher == "slurm" else "logs")
    print(f"results: {res.results_dir}/ (one .jsonl per configuration; {'job' if args.launcher == 'slurm' else 'worker'} logs in {logs}/)")
    print(f"report:  hpff-bench report {res.results_dir} -o reports/{res.suite}")
    sys.stdout.flush()
    if res.interrupted:
        return 130
    return 1 if any(r["status"] == "error" for r in res.records) else 0
