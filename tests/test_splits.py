"""Split tables give the documented module counts; networks cut where the tables say."""

import pytest
import torch

from hpff_bench.config import RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.networks import NETWORKS, build_network
from hpff_bench.networks.splits import resolve_cuts


@pytest.mark.parametrize("network", ["resnet32", "resnet110"])
@pytest.mark.parametrize("k", [2, 4, 8, 16])
def test_infopro_table_k_is_the_real_module_count(network, k):
    split = resolve_cuts(network, "infopro", k)
    assert split.modules == k and split.scheme == "infopro"
    assert list(split.cuts) == sorted(set(split.cuts))


def test_infopro_cuts_land_on_the_documented_blocks():
    spec = NETWORKS["resnet110"]
    assert resolve_cuts("resnet110", "infopro", 4).cuts == (
        spec.unit_index(1, 11), spec.unit_index(2, 7), spec.unit_index(3, 3)
    )
    assert spec.unit_index(1, 11) == 12 and spec.unit_index(2, 7) == 1 + 18 + 7
    # resnet32 K=16 cuts after the stem and every block but the last: same as uniform K=16
    assert resolve_cuts("resnet32", "infopro", 16).cuts == tuple(range(15))


@pytest.mark.parametrize("network,k,modules", [("resnet32", 16, 15), ("resnet110", 55, 54)])
def test_hpff_counting_folds_the_stem(network, k, modules):
    split = resolve_cuts(network, "hpff", k)
    assert split.modules == modules
    assert split.cuts[0] == 1  # the stem rides with the first block


def test_uniform_reaches_every_block_and_auto_falls_back():
    assert resolve_cuts("resnet110", "uniform", 55).modules == 55
    assert resolve_cuts("resnet110", "auto", 55).scheme == "hpff"
    assert resolve_cuts("resnet32", "auto", 16).scheme == "infopro"
    assert resolve_cuts("resnet20", "auto", 3).scheme == "uniform"
    cuts = resolve_cuts("resnet20", "uniform", 5).cuts
    assert len(cuts) == 4 and all(0 <= c < 9 for c in cuts)


@pytest.mark.parametrize(
    "network,split,k,message",
    [
        ("resnet32", "uniform", 17, "out of range for resnet32: uniform allows 1 to 16"),
        ("resnet32", "infopro", 5, r"infopro split table has no K=5 for resnet32; it has K in \[2, 4, 8, 16\]"),
        ("resnet20", "infopro", 2, "has no K=2 for resnet20"),
        ("resnet32", "hpff", 8, "hpff split table has no K=8"),
    ],
)
def test_bad_splits_name_the_value_and_what_is_allowed(network, split, k, message):
    with pytest.raises(ConfigError, match=message):
        resolve_cuts(network, split, k)


@pytest.mark.parametrize("depth,blocks", [(20, 9), (32, 15), (44, 21), (56, 27), (110, 54)])
def test_cifar_resnets_have_6n_plus_2_layers(depth, blocks):
    net = build_network(f"resnet{depth}", 10)
    assert len(net.units) == blocks + 2
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth  # 3x3 convs + the final linear
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(network="resnet33"), "unknown --network 'resnet33'; allowed: resnet20"),
        (dict(method="sgd"), "unknown --method 'sgd'; allowed: bp, gc, greedy, dgl, infopro"),
        (dict(split="even"), "unknown --split 'even'"),
        (dict(batch_size=0), "--batch-size must be a positive integer, got 0"),
        (dict(steps=-1), "--steps must be a positive integer"),
        (dict(method="bp", hilo=True, k=4), "need a local method"),
        (dict(method="dgl", k=1, hilo=True), "needs K >= 2"),
        (dict(method="dgl", k=4, pff_grid=3), "unknown --pff-grid 3; allowed: 1, 2, 4"),
        (dict(method="dgl", k=4, independent=False), "needs --hilo"),
        (dict(method="dgl", k=4, pff_grid=2, pff_on="cascade"), "needs --hilo"),
    ],
)
def test_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes).validate()


def test_labels_and_ablations():
    c = RunConfig(method="infopro", k=4)
    assert (c.label, c.ablation) == ("InfoPro", "IL")
    assert c.replace(hilo=True, pff_grid=2).label == "InfoPro+HPFF (n=2)"
    assert c.replace(hilo=True, pff_grid=2).ablation == "IL+CL+PFF"
    assert c.replace(hilo=True, independent=False).ablation == "CL"
    assert c.replace(hilo=True).ablation == "IL+CL"
    assert RunConfig(method="bp").ablation is None
    assert c.config_id() == RunConfig(method="infopro", k=4, image_size=32).config_id()
