"""Cost of the live-tensor tracker on a CPU training step (timing: a benchmark, not a test).

resnet32, batch 64, SGD foreach (as `profile` runs it). The tracker's cost is per dispatched op
(~490 per step): a Python dispatch mode alone costs ~20 us an op, the bookkeeping ~15 us more.
The target is < 10 % of a step; `extra_info["overhead"]` is what was measured.
"""

import pytest

from hpff_bench.config import RunConfig
from hpff_bench.memory.tracker import LiveTensorTracker
from hpff_bench.methods import build_method, synthetic_batch


@pytest.fixture(scope="module")
def step():
    cfg = RunConfig(network="resnet32", batch_size=64)
    method = build_method(cfg, device="cpu", foreach=True)
    x, y = synthetic_batch(cfg)
    method.train_step(x, y)
    return lambda: method.train_step(x, y)


def test_train_step_plain(benchmark, step):
    benchmark.group = "tracker overhead (resnet32, batch 64, CPU)"
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


def test_train_step_tracked(benchmark, step):
    benchmark.group = "tracker overhead (resnet32, batch 64, CPU)"

    def tracked():
        with LiveTensorTracker(record_events=False):
            step()

    benchmark.pedantic(tracked, rounds=5, warmup_rounds=1)
