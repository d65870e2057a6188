"""The GPU check: the probes and the prediction's assumed terms measured on a real GPU, once.

    python -m hpff_bench.gpu_check                # ~4.5 min on an H200; stops itself at --budget-s
    python -m hpff_bench.gpu_check --plan         # the parts, their estimated times and the fit, no GPU needed
    python -m hpff_bench.gpu_check --all          # + the benchmarks and the rows the default leaves out

Why here (above profiling): it drives whole profiles (hpff_bench.profiling) and the
prediction, so it sits with the commands, not inside memory/.
- plan: what runs (the parts, the groups the report shows together) and how long each should
  take on an H200, from its FLOPs; whether a run fits a GPU session twice;
- child: one part in a fresh process (a new CUDA context and caching allocator);
- report: relative errors, each group's table, gpu_check.json and gpu_check.md;
- runner: the parts in order within a time budget, the files rewritten after each part.
"""
