"""Running benchmarks: training for accuracy, suites and sweeps, and the results store.

- `store`: result records (one JSON line per run), the file-locked appender, the loader.
- `env`: what machine and software a record was produced on.
- `suite`: TOML suite files -> the validated set of runs.
- `sweep`: runs a suite, each run in a worker process (`worker`), into the store.
- `train`: the papers' training recipe, checkpoints and resume.
"""
