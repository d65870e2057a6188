"""DGL's aux net, ours against the official code's, timed side by side at the module outputs of
resnet32 (16x32x32, 32x16x16, 64x8x8), batch 128.

    pytest suites/test_aux_speed.py --benchmark-only --hpff-threads 2 -s --hpff-official-dgl DGL

Why: DGL's step is the furthest of all methods from BP's FLOP rate (suites/test_method_speed.py),
and the time is its aux nets'; the official DGL code trains VGG-style nets only, so there is no
official ResNet step to time beside ours, but its CIFAR aux net (`auxillary_classifier2` of
`auxiliary_nets_study/models.py`, `mlp-sr`: n_lin=3, mlp_layers=3) is the one our head follows.
One round = one step of each net at each shape, in an order shuffled anew each round (seeded);
a step is what DGL runs per module: forward from a fresh leaf input, cross-entropy, backward to
the weights and to that input (the module output's gradient). extra_info per shape: median
milliseconds of each, ours ÷ official (of medians, and the median of the per-round ratios),
FLOPs per step of each (torch's FlopCounterMode: equal, a linear's bias is not counted), and
parameter counts (ours has no linear bias before a BatchNorm1d and no unused BatchNorm2d:
12C + 2C fewer). Without --hpff-official-dgl it is skipped (the official code is not part of
hpff-bench); under --benchmark-disable it times batch 4, one round.
"""

from __future__ import annotations

import random
import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from hpff_bench.aux.heads import DGLHead
from hpff_bench.official_code_run import DGL_CODE, load_official_model_module

SHAPES = ((16, 32), (32, 16), (64, 8))  # resnet32's module outputs: channels, spatial size
FULL = {"batch_size": 128, "rounds": 15, "warmup_rounds": 2}
SMOKE = {"batch_size": 4, "rounds": 1, "warmup_rounds": 0}
CLASSES = 10


def official_dgl_head(path: str, channels: int, spatial: int) -> torch.nn.Module:
    """The official code's `mlp-sr` aux net for a module output of this shape."""
    models = load_official_model_module(path, DGL_CODE)
    return models.auxillary_classifier2(input_features=channels, in_size=spatial, num_classes=CLASSES,
                                        n_lin=3, mlp_layers=3)


def _step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    feature = x.detach().requires_grad_()
    F.cross_entropy(net(feature), y).backward()


def time_heads(heads: dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor, rounds: int,
               warmup_rounds: int, seed: int = 0) -> dict:
    """{name: {"step_seconds": [...], "flops": n, "params": n}}: a FLOP-counted step each, then
    `warmup_rounds` untimed and `rounds` timed rounds, each in its own shuffled order."""
    out = {}
    for name, net in heads.items():
        net.train()
        with FlopCounterMode(display=False) as counter:
            _step(net, x, y)
        out[name] = {"step_seconds": [], "flops": counter.get_total_flops(),
                     "params": sum(p.numel() for p in net.parameters())}
    names = list(heads)
    for r in range(warmup_rounds + rounds):
        for name in random.Random(seed + r).sample(names, len(names)):
            t0 = time.perf_counter()
            _step(heads[name], x, y)
            if r >= warmup_rounds:
                out[name]["step_seconds"].append(time.perf_counter() - t0)
    return out


def compare(measured: dict) -> dict:
    """Ours against the official net: medians, their quotient and the median per-round quotient."""
    ours, theirs = measured["ours"], measured["official"]
    per_round = [a / b for a, b in zip(ours["step_seconds"], theirs["step_seconds"])]
    return {
        "ours_ms": statistics.median(ours["step_seconds"]) * 1e3,
        "official_ms": statistics.median(theirs["step_seconds"]) * 1e3,
        "ours_vs_official": statistics.median(ours["step_seconds"]) / statistics.median(theirs["step_seconds"]),
        "ours_vs_official_paired": statistics.median(per_round),
        "flops_ours": ours["flops"], "flops_official": theirs["flops"],
        "params_ours": ours["params"], "params_official": theirs["params"],
    }


def test_dgl_head_against_the_official_aux_net(benchmark, hpff_official_dgl, request):
    if hpff_official_dgl is None:
        pytest.skip("needs --hpff-official-dgl DIR (a eugenium/DGL checkout)")
    size = SMOKE if request.config.getoption("benchmark_disable", False) else FULL
    b = size["batch_size"]
    table = {}

    def run():
        for c, s in SHAPES:
            torch.manual_seed(0)
            heads = {"ours": DGLHead(c, s, CLASSES), "official": official_dgl_head(hpff_official_dgl, c, s)}
            x, y = torch.randn(b, c, s, s), torch.randint(0, CLASSES, (b,))
            table[f"{c}x{s}x{s}"] = compare(time_heads(heads, x, y, size["rounds"], size["warmup_rounds"]))

    benchmark.group = f"DGL aux net, batch={b}"
    benchmark.pedantic(run, rounds=1, iterations=1)
    for shape, row in table.items():  # the same arithmetic: equal FLOPs, ours 14·C parameters fewer
        c = int(shape.split("x")[0])
        assert row["flops_ours"] == row["flops_official"] > 0, shape
        assert row["params_official"] - row["params_ours"] == 14 * c, shape
    benchmark.extra_info.update({"batch_size": b, "rounds": size["rounds"], "threads": torch.get_num_threads(),
                                 "official_path": str(hpff_official_dgl), "shapes": table})
    print(f"\n{'shape':10} {'ours ms':>8} {'official ms':>11} {'ours/official':>13} {'paired':>6} {'MFLOP':>7}")
    for shape, row in table.items():
        print(f"{shape:10} {row['ours_ms']:8.2f} {row['official_ms']:11.2f} {row['ours_vs_official']:13.3f}"
              f" {row['ours_vs_official_paired']:6.3f} {row['flops_ours'] / 1e6:7.1f}")
