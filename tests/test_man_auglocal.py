"""MAN and AugLocal: gradients that must (not) flow, the moving average, the sampled aux nets,
their predictions against BP's, and the inputs they refuse."""

from __future__ import annotations

import copy

import pytest
import torch

from hpff_bench.aux.auglocal import AugLocalAuxNet, pyramid_depths, sampled_layers, unit_widths
from hpff_bench.aux.man import MomentumAux
from hpff_bench.config import RunConfig
from hpff_bench.methods import build_method, synthetic_batch
from hpff_bench.networks.cifar_resnet import BasicBlock


def cfg(**kw) -> RunConfig:
    """4 modules: MAN at K=4 (uniform split), AugLocal at K=6 with depth 2."""
    k = 6 if kw.get("method") == "auglocal" else 4
    return RunConfig(**{"network": "resnet20", "batch_size": 4, "image_size": 16, "seed": 3, "k": k, **kw})


@pytest.fixture(scope="module")
def batch():
    return synthetic_batch(cfg(), "cpu")


def grads(method, x, y) -> dict[str, torch.Tensor]:
    method.compute_gradients(x, y)
    return {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ("man", "auglocal"))
def test_a_module_learns_only_from_its_own_aux_net(method, batch):
    x, y = batch
    m = build_method(cfg(method=method))
    state = copy.deepcopy(m.state_dict())
    before = grads(m, x, y)
    m.load_state_dict(state)  # MAN's step moves its averages: start again from the same ones
    with torch.no_grad():  # change module 1's aux net only
        for p in m.aux_nets["independent1"].parameters():
            p.mul_(1.5)
    after = grads(m, x, y)
    assert before.keys() == after.keys()
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == name.startswith(("modules_.1.", "aux_nets.independent1.")), name


@pytest.mark.parametrize("method", ("man", "auglocal"))
def test_the_last_module_learns_from_the_network_cross_entropy_only(method, batch):
    x, y = batch
    m = build_method(cfg(method=method))
    last = len(m.modules_) - 1
    state = copy.deepcopy(m.state_dict())
    before = {n: g for n, g in grads(m, x, y).items() if n.startswith(f"modules_.{last}.")}
    m.load_state_dict(state)
    with torch.no_grad():
        for p in m.aux_nets.parameters():
            p.mul_(1.5)
    after = {n: g for n, g in grads(m, x, y).items() if n.startswith(f"modules_.{last}.")}
    assert before and all(torch.equal(before[n], after[n]) for n in before)


def test_the_moving_average_on_known_tensors():
    aux = MomentumAux(BasicBlock(16, 16, 1), 32, "1c2f", "ce", 10)
    block = BasicBlock(16, 16, 1)
    with torch.no_grad():
        for p in aux.ema.parameters():
            p.fill_(2.0)
        for p in block.parameters():
            p.fill_(4.0)
    aux.update_ema(block, 0.75)
    assert all(torch.equal(p, torch.full_like(p, 2.5)) for p in aux.ema.parameters())  # 2·0.75 + 4·0.25
    assert all(torch.equal(p, torch.full_like(p, 4.0)) for p in block.parameters())


def test_man_step_moves_the_average_towards_the_next_block_as_it_was_before_the_step(batch):
    x, y = batch
    m = build_method(cfg(method="man", man_momentum=0.9))
    ema = [[p.detach().clone() for p in m.aux_nets[f"independent{j}"].ema.parameters()] for j in range(3)]
    nxt = [[p.detach().clone() for p in m.modules_[j + 1][0].parameters()] for j in range(3)]
    m.train_step(x, y)
    for j in range(3):
        now = list(m.aux_nets[f"independent{j}"].ema.parameters())
        for e, b, p in zip(ema[j], nxt[j], now, strict=True):
            assert torch.equal(p, e * 0.9 + b * (1 - 0.9))
        changed = [not torch.equal(a, b) for a, b in zip(nxt[j], m.modules_[j + 1][0].parameters())]
        assert any(changed)  # the optimizer moved the block after the average was taken


def test_man_bias_is_learnable_and_the_average_is_not(batch):
    x, y = batch
    m = build_method(cfg(method="man"))
    aux = m.aux_nets["independent0"]
    before = [p.detach().clone() for p in aux.bias.parameters()]
    m.train_step(x, y)
    assert all(p.requires_grad and p.grad is not None and p.grad.abs().max() > 0 for p in aux.bias.parameters())
    assert all(not p.requires_grad and p.grad is None for p in aux.ema.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, aux.bias.parameters()))


def test_man_lambda_ratio_is_the_next_blocks_stage_over_k_minus_2():
    m = build_method(cfg(method="man", network="resnet32", k=16, batch_size=2))  # HPFF's table: 15 modules
    lam = m.config.lambdas
    assert [m.lambdas(j) for j in (0, 3, 4, 9, 13)] == [
        lam.at_ratio(s / 14) for s in (1, 1, 2, 3, 3)]  # next blocks [1,1], [1,4], [2,0], [3,0], [3,4]


def test_auglocal_samples_later_layers_uniformly():
    widths = unit_widths((5, 5, 5))
    assert widths == [16] * 6 + [32] * 5 + [64] * 5
    assert sampled_layers(16, 0, 2) == [8, 15]  # round(7.5) = 8
    assert sampled_layers(16, 13, 3) == [14, 15]  # fewer layers left than the depth: all of them
    net = AugLocalAuxNet(widths, 0, 2, 10)
    convs = [b.conv1 for b in net.head if isinstance(b, BasicBlock)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [(16, 32, (2, 2)), (32, 64, (2, 2))]
    assert not any(isinstance(mod, torch.nn.BatchNorm1d) for mod in net.modules())
    assert net(torch.zeros(2, 16, 32, 32)).shape == (2, 10)
    # a width jump of 4x strides once; depth 1 adds a BatchNorm1d before the classifier
    one = AugLocalAuxNet(widths, 5, 1, 10)
    block = one.head[0]
    assert (block.conv1.in_channels, block.conv1.out_channels, block.conv1.stride) == (16, 64, (2, 2))
    assert isinstance(one.head[-2], torch.nn.BatchNorm1d)


def test_auglocal_pyramid_rounds_halves_to_even():
    # resnet110 K=55, depth 3: 52 modules; depth 3 - i/50, and 2.5 (i = 25) rounds to 2
    assert pyramid_depths(3, 52, 0.5) == [3] * 25 + [2] * 26
    assert pyramid_depths(2, 14, 0.5) == [2] * 13  # resnet32 K=16: 1.5 at the end rounds to 2


def test_auglocal_modules_are_k_minus_depth():
    m = build_method(cfg(method="auglocal", network="resnet32", k=16, aux_net_depth=2, batch_size=2))
    assert m.module_count == 14 and [len(r) for r in m.unit_ranges] == [1] * 13 + [4]


def test_predicted_peaks_are_below_bp_at_the_papers_resnet32_k16():
    from hpff_bench.profiling import estimate_config

    base = RunConfig(network="resnet32", k=16, batch_size=1024)
    peak = {m: estimate_config(base.replace(method=m))["predicted"]["peak_allocated_bytes"]
            for m in ("bp", "man", "auglocal")}
    assert peak["man"] < peak["bp"] and peak["auglocal"] < peak["bp"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (("--method", "man", "--hilo"), "compose with greedy, dgl, infopro, predsim only"),
        (("--method", "auglocal", "--hpff"), "compose with greedy, dgl, infopro, predsim only"),
        (("--method", "man", "--network", "resnet34"), "CIFAR ResNets (basic blocks) only"),
        (("--method", "auglocal", "--split", "hpff"), "leave --split and --cuts out"),
        (("--method", "auglocal", "--k", "4", "--aux-net-depth", "2"), "allowed 3 to 10"),
        (("--method", "auglocal", "--aux-net-depth", "0"), "--aux-net-depth must be an integer >= 1"),
        (("--method", "man", "--k", "1"), "--method man needs --k >= 2"),
        (("--method", "man", "--man-momentum", "1.5"), "--man-momentum must be in [0, 1]"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, cli):
    code, out, err = cli("estimate", "--network", "resnet20", "--k", "8", "--batch-size", "4", *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_estimate_and_profile_run_both(cli_json):
    for method, k in (("man", "4"), ("auglocal", "6")):
        est = cli_json("estimate", "--network", "resnet20", "--method", method, "--k", k, "--batch-size", "4")
        prof = cli_json("profile", "--network", "resnet20", "--method", method, "--k", k, "--batch-size", "4",
                        "--steps", "1", "--warmup", "0")
        assert est["modules"] == prof["modules"] == 4
        assert est["label"] == prof["label"] == {"man": "MAN", "auglocal": "AugLocal"}[method]
        assert "aux/independent/0" in est["predicted"]["per_module_peak_bytes"]


def test_plan_candidates_compose_no_hpff_and_keep_auglocal_modules():
    from hpff_bench.commands.plan import configurations

    got = {(c.method, c.split, c.hilo) for c in configurations("resnet32", "cifar10", 64, ["man", "auglocal"], [16])}
    assert got == {("man", "infopro", False), ("man", "hpff", False), ("man", "balanced", False),
                   ("auglocal", "auto", False)}
