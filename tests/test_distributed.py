"""Two gloo processes on the CPU: gradients averaged once per step equal the single-process
mean of the per-shard gradients, for backprop and for local learning with HiLo."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from hpff_bench import distributed
from hpff_bench.config import RunConfig
from hpff_bench.methods import build_method, synthetic_batch

CONFIGS = {
    "bp": RunConfig(network="resnet20", method="bp", batch_size=8, seed=1),
    "dgl+hilo": RunConfig(network="resnet20", method="dgl", k=3, hilo=True, batch_size=8, seed=1),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, name, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = distributed.setup("cpu")
    cfg = CONFIGS[name]
    m = build_method(cfg)
    distributed.attach(m, ctx)
    x, y = synthetic_batch(cfg)
    shard = slice(rank * 4, rank * 4 + 4)
    m.compute_gradients(x[shard], y[shard])
    m.grad_sync()
    torch.save({n: p.grad for n, p in m.named_parameters() if p.grad is not None},
               os.path.join(out_dir, f"rank{rank}.pt"))
    counts = distributed.sum_across([float(rank + 1), 1.0], ctx)
    peaks = distributed.gather({"rank": rank}, ctx)
    assert counts == [3.0, 2.0] and [p["rank"] for p in peaks] == [0, 1]
    distributed.shutdown()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gradients_are_averaged_once_per_step(name, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), name, str(tmp_path)), nprocs=2, join=True)
    g0 = torch.load(tmp_path / "rank0.pt")
    g1 = torch.load(tmp_path / "rank1.pt")
    cfg = CONFIGS[name]
    x, y = synthetic_batch(cfg)
    single = build_method(cfg)
    expected = {}
    for shard in (slice(0, 4), slice(4, 8)):
        single.compute_gradients(x[shard], y[shard])
        for n, p in single.named_parameters():
            if p.grad is not None:
                expected[n] = expected.get(n, 0) + p.grad / 2
    assert g0.keys() == g1.keys() == expected.keys()
    for n in expected:
        torch.testing.assert_close(g0[n], g1[n], atol=0, rtol=0)  # every rank holds the same
        torch.testing.assert_close(g0[n], expected[n], atol=1e-4, rtol=1e-3)  # summation order


def test_alone_it_is_a_no_op(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    ctx = distributed.setup("cpu")
    assert not ctx.enabled and ctx.is_main
    m = build_method(CONFIGS["bp"])
    distributed.attach(m, ctx)
    assert m.grad_sync is None
