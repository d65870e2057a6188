"""torchvision ImageNet networks as units, the papers' ImageNet splits, PredSim, mixed precision."""

import pytest
import torch
import torchvision

from hpff_bench.config import RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.methods import build_method, synthetic_batch
from hpff_bench.networks import NETWORKS, build_network
from hpff_bench.networks.splits import resolve_cuts


def test_torchvision_resnet_is_unchanged_when_cut_into_units():
    torch.manual_seed(0)
    net = build_network("resnet34", 7)
    ref = torchvision.models.resnet34(num_classes=7)
    ref.load_state_dict({k: v for k, v in zip(ref.state_dict(), net.state_dict().values())})
    x = torch.randn(2, 3, 64, 64)
    net.eval(), ref.eval()
    torch.testing.assert_close(net(x), ref(x))
    assert len(net.units) == 3 + 4 + 6 + 3 + 2


@pytest.mark.parametrize(
    "network,split,k,cut_units",
    [
        ("resnet101", "infopro", 2, [(2, 0)]),
        ("resnet152", "infopro", 2, [(2, 5)]),
        ("resnext101_32x8d", "infopro", 2, [(2, 2)]),
        ("resnet101", "hpff", 4, [(3, 0), (3, 9), (3, 17)]),
        ("resnet152", "hpff", 8, [(2, 0), (3, 1), (3, 5), (3, 9), (3, 13), (3, 17), (3, 21)]),
        ("resnext101_32x8d", "hpff", 8, [(2, 0), (3, 1), (3, 5), (3, 9), (3, 13), (3, 17), (3, 21)]),
        ("resnet34", "hpff", 4, [(2, 0), (3, 0), (3, 5)]),
    ],
)
def test_imagenet_split_tables(network, split, k, cut_units):
    spec = NETWORKS[network]
    got = resolve_cuts(network, split, k)
    assert got.cuts == tuple(spec.unit_index(s, b) for s, b in cut_units)
    assert got.modules == k
    source = "Experiments on ImageNet/networks/resnet.py" if split == "infopro" else "Exp on Imagenet/networks/configs.py"
    assert source in got.reason


def test_uniform_works_on_imagenet_networks_and_bad_k_is_named():
    assert resolve_cuts("resnet152", "uniform", 51).modules == 51
    with pytest.raises(ConfigError, match="--k 52 is out of range for resnet152: K is 1 to 51"):
        resolve_cuts("resnet152", "uniform", 52)


@pytest.mark.parametrize("method", ["greedy", "dgl", "infopro", "predsim"])
def test_local_methods_run_on_an_imagenet_network(method):
    cfg = RunConfig(network="resnet34", dataset="imagenet", image_size=64, num_classes=5,
                    method=method, k=3, batch_size=4)
    m = build_method(cfg)
    x, y = synthetic_batch(cfg)
    assert torch.isfinite(m.train_step(x, y).loss)
    assert m.predict(x).shape == (4, 5)


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_runs_modules_in_low_precision(precision, dtype):
    cfg = RunConfig(network="resnet20", method="dgl", k=3, batch_size=8, precision=precision)
    m = build_method(cfg)
    seen = []
    m.modules_[0].register_forward_hook(lambda mod, i, o: seen.append(o.dtype))
    x, y = synthetic_batch(cfg)
    out = m.train_step(x, y)
    assert seen == [dtype] and torch.isfinite(out.loss)
    assert m.scaler.is_enabled() == (precision == "fp16")
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in m.parameters())


def test_fp16_gradients_are_unscaled_by_the_optimizer_step():
    """fp16 grads are computed at the loss scale; after unscaling they match fp32's closely."""
    base = dict(network="resnet20", method="greedy", k=2, batch_size=8)
    x, y = synthetic_batch(RunConfig(**base))
    m32 = build_method(RunConfig(**base))
    m32.compute_gradients(x, y)
    m16 = build_method(RunConfig(**base, precision="fp16"))
    m16.compute_gradients(x, y)
    m16.scaler.unscale_(m16.optimizer)
    g32 = m32.modules_[1][-1].fc.weight.grad
    g16 = m16.modules_[1][-1].fc.weight.grad
    torch.testing.assert_close(g16, g32, atol=2e-2, rtol=5e-2)


def test_predsim_beta_weights_the_two_terms():
    cfg = RunConfig(network="resnet20", method="predsim", k=2, batch_size=8, predsim_beta=1.0)
    m = build_method(cfg)
    x, y = synthetic_batch(cfg)
    m.compute_gradients(x, y)
    pred_head = m.aux_nets["independent0"].terms[0].net
    assert pred_head.fc.weight.grad.abs().max() == 0  # beta = 1: the prediction term is off
    assert m.aux_nets["independent0"].terms[1].net.conv.weight.grad.abs().max() > 0
