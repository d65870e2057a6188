"""The training cost a sweep prints before it starts: the arithmetic on timed parts, and the
grouping of seeds into one configuration."""

from __future__ import annotations

import pytest

from hpff_bench.config import RunConfig
from hpff_bench.runner import train_cost as TC
from hpff_bench.runner.suite import Run, Task


def _task(cfg: RunConfig, **options) -> Task:
    run = Run(f"r{cfg.seed}", cfg, "g", {}, frozenset())
    return Task(run, "train", cfg, {"epochs": 3, "train_subset": 64, **options}, {})


def test_cost_is_epochs_times_batches_times_step_and_load_and_seeds_share_a_timing(monkeypatch):
    timed = []
    monkeypatch.setattr(TC, "_time_steps", lambda cfg, eval_batch: timed.append((cfg.seed, eval_batch)) or (0.5, 0.25))
    monkeypatch.setattr(TC, "_time_loading", lambda cfg, opts: (0.1, 20, 4))
    cfg = RunConfig(network="resnet20", method="dgl", k=2, dataset="fake", batch_size=32, device="cpu").validate()
    tasks = [_task(cfg.replace(seed=s)) for s in (0, 1, 2)]
    cost = TC.estimate_train_cost(tasks, jobs=2, threads=1, data_root=None, download=None)
    assert timed == [(0, 256)]  # one configuration timed for three seeds; eval batch min 256
    (c,) = cost.per_config
    # 3 epochs x (20 batches x (0.5 + 0.1) + 4 eval batches x (0.25 + 0.1)) = 3 x 13.4
    assert c.runs == 3 and c.run_s == pytest.approx(40.2)
    assert cost.work_s == pytest.approx(120.6) and cost.wall_s == pytest.approx(60.3)
    assert cost.lines()[0].startswith("training: 3 run(s) of 1 configuration(s), about 60 s at 2 job(s) x 1 thread(s), done around ")


def test_wall_time_is_never_below_the_longest_run():
    cost = TC.TrainCost([TC.ConfigCost("A", 1, 1.0, 0.0, 0.0, 600.0), TC.ConfigCost("B", 1, 1.0, 0.0, 0.0, 60.0)], jobs=4)
    assert cost.wall_s == 600.0 and "about 10 min" in cost.lines()[0]


def test_gpu_runs_are_not_timed_in_the_sweeps_process(monkeypatch):
    monkeypatch.setattr(TC, "_time_steps", lambda *a: pytest.fail("timed a GPU task"))
    cfg = RunConfig(network="resnet20", method="bp", dataset="fake", batch_size=32, device="cuda")
    cost = TC.estimate_train_cost([_task(cfg)], jobs=1, threads=2, data_root=None, download=None)
    assert cost.per_config == [] and cost.lines() == [
        "training: 1 run(s) not estimated: they run on a GPU, which the sweep's own process leaves to its workers"]


def test_a_configuration_that_cannot_step_does_not_stop_the_sweep(monkeypatch):
    from hpff_bench.runner import sweep

    def broken(*a, **k):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied\nmore")

    monkeypatch.setattr(TC, "estimate_train_cost", broken)
    cfg = RunConfig(network="resnet20", method="bp", dataset="fake", batch_size=32, device="cpu")
    lines = []
    sweep._log_train_cost([_task(cfg)], 1, 2, None, None, lines.append)
    assert lines[-1] == ("training: cost not estimated (RuntimeError: mat1 and mat2 shapes cannot be multiplied); "
                         "its task will record the failure")
