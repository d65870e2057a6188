"""Two epochs on real CIFAR-10 images learn something: bp and one local method (DGL) on resnet20.

Uses the JPEG subset of CIFAR-10 (ImageFolder layout) found through $HPFF_BENCH_CIFAR_SUBSET or
at ../shared/data/cifar10-subset next to the repository; skipped where neither exists. To stay
fast on a CPU it trains on 2,000 images at 16x16 (DataLoader resize) with one thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hpff_bench.config import RunConfig
from hpff_bench.runner.train import TrainOptions, train

REPO = Path(__file__).resolve().parents[1]


def cifar_subset() -> Path | None:
    env = os.environ.get("HPFF_BENCH_CIFAR_SUBSET")
    for p in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data" / "cifar10-subset"]:
        if (p / "train").is_dir() and (p / "test").is_dir():
            return p
    return None


SUBSET = cifar_subset()
pytestmark = pytest.mark.skipif(SUBSET is None, reason="CIFAR-10 subset not found ($HPFF_BENCH_CIFAR_SUBSET or ../shared/data/cifar10-subset)")


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is faster than two contended ones
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("method,k", [("bp", 1), ("dgl", 2)])
def test_two_epochs_clearly_above_chance(method, k, one_thread, tmp_path):
    cfg = RunConfig(network="resnet20", method=method, k=k, dataset="cifar10", image_size=16,
                    batch_size=64, lr=0.1, device="cpu", seed=0)
    opts = TrainOptions(epochs=2, warmup_epochs=0, data_root=str(SUBSET), train_subset=2000,
                        test_subset=1000, num_workers=0, progress=False, checkpoint_dir=str(tmp_path / "ckpt"))
    result = train(cfg, opts)
    assert result.status == "ok"
    assert result.data_source.startswith("ImageFolder")  # the JPEG copy stands in for the binary release
    assert [e["epoch"] for e in result.per_epoch] == [1, 2]
    # chance is 10 %; with 1,000 test images a classifier at chance stays below ~13 % (3 sigma)
    assert result.top1 > 0.2, result.per_epoch
    assert result.per_epoch[-1]["train_loss"] < result.per_epoch[0]["train_loss"]
    assert result.modules == k
    assert (tmp_path / "ckpt" / "last.pt").exists()
