"""Split tables give the documented module counts; networks cut where the tables say."""

import pytest
import torch

from hpff_bench.config import RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.methods import build_method
from hpff_bench.networks import NETWORKS, build_network
from hpff_bench.networks.splits import resolve_cuts


@pytest.mark.parametrize("network", ["resnet32", "resnet110"])
@pytest.mark.parametrize("k", [2, 3, 4, 8, 16])
def test_infopro_table_k_is_the_real_module_count(network, k):
    split = resolve_cuts(network, "infopro", k)
    assert split.modules == k and split.scheme == "infopro"
    assert list(split.cuts) == sorted(set(split.cuts))
    assert "InfoPro-Pytorch: Experiments on CIFAR-SVHN-STL10/networks/configs.py" in split.reason


@pytest.mark.parametrize(
    "dataset,k,cuts",
    [
        ("cifar10", 2, "1.14"), ("cifar10", 3, "1.9,2.2"), ("cifar10", 4, "1.6,1.14,2.8"),
        ("stl10", 2, "1.14"), ("stl10", 3, "1.8,2.1"), ("stl10", 4, "1.6,1.14,2.8"),
    ],
)
def test_infopro_balanced_is_per_dataset(dataset, k, cuts):
    split = resolve_cuts("resnet110", "infopro-balanced", k, dataset)
    assert (split.scheme, split.modules, split.cuts_text) == ("infopro-balanced", k, cuts)
    assert f"InfoPro_balanced_memory['resnet110']['{dataset}']" in split.reason


@pytest.mark.parametrize(
    "network,k,modules",
    [("resnet32", 2, 2), ("resnet32", 3, 3), ("resnet32", 8, 8), ("resnet110", 16, 16),
     ("resnet110", 32, 32), ("resnet110", 4, 4)],
)
def test_hpff_cifar_table_every_k(network, k, modules):
    split = resolve_cuts(network, "hpff", k)
    assert split.modules == modules and "Zeudfish/HPFF: Exp on CIFAR_SVHN_STL/network/config.py" in split.reason


def test_hpff_cifar_entries_equal_infopro_where_both_list_them():
    """HPFF's config repeats InfoPro's cuts (as module ends) except K=16, where it drops the stem cut."""
    for net in ("resnet32", "resnet110"):
        for k in (2, 3, 4, 8):
            assert resolve_cuts(net, "hpff", k).cuts == resolve_cuts(net, "infopro", k).cuts
    assert resolve_cuts("resnet110", "hpff", 16).cuts == resolve_cuts("resnet110", "infopro", 16).cuts
    assert resolve_cuts("resnet32", "hpff", 16).cuts == resolve_cuts("resnet32", "infopro", 16).cuts[1:]


def test_auto_says_what_it_chose_and_why():
    k32 = resolve_cuts("resnet110", "auto", 32)
    assert k32.scheme == "hpff" and k32.reason.startswith("auto: HPFF's table has resnet110 K=32")
    fallback = resolve_cuts("resnet110", "auto", 7)
    assert fallback.scheme == "uniform"
    assert fallback.reason == "auto: neither InfoPro's nor HPFF's table has resnet110 K=7"
    assert "split uniform: 7 module(s), cuts after 1.6," in fallback.describe()
    assert resolve_cuts("resnet32", "auto", 3).scheme == "infopro"


def test_user_cuts_land_where_they_say():
    spec = NETWORKS["resnet110"]
    split = resolve_cuts("resnet110", "auto", 3, cuts="1.14,2.8")
    assert split.scheme == "cuts" and split.cuts == (spec.unit_index(1, 14), spec.unit_index(2, 8))
    assert resolve_cuts("resnet20", "auto", 2, cuts="0.0").cuts == (0,)  # after the stem
    c = RunConfig(network="resnet110", method="dgl", k=3, cuts="1.14,2.8").validate()
    assert build_method(c).split.cuts == split.cuts and len(build_method(c).modules_) == 3


@pytest.mark.parametrize(
    "cuts,k,message",
    [
        ("3.17", 2, r"--cuts 3.17: resnet110: stage 3 has blocks 0 to 17, and 3.17 is the network's last "
                    r"block \(the head stays with it\); allowed cuts in stage 3: 3.0 to 3.16"),
        ("1.18", 2, "--cuts 1.18: resnet110: stage 1 has blocks 0 to 17; allowed cuts in stage 1: 1.0 to 1.17"),
        ("4.0", 2, r"--cuts 4.0: resnet110 has stages 0 \(the stem\) to 3"),
        ("0.1", 2, "--cuts 0.1: resnet110: the stem has block 0 only"),
        ("2.3,1.5", 3, "--cuts 1.5: cuts must be strictly increasing, and 1.5 does not come after 2.3"),
        ("1.4,1.4", 3, "--cuts 1.4: cuts must be strictly increasing"),
        ("1.x", 2, "--cuts '1.x': each cut is STAGE.BLOCK"),
        ("1.2,,2.3", 4, "--cuts '': each cut is STAGE.BLOCK"),
        ("-1.2", 2, "--cuts '-1.2': each cut is STAGE.BLOCK with non-negative integers"),
        ("1.2,2.3", 2, r"--k 2 does not match --cuts 1.2,2.3 \(3 modules\); leave --k out or give --k 3"),
    ],
)
def test_bad_cuts_name_the_cut_and_the_allowed_range(cuts, k, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(network="resnet110", method="dgl", k=k, cuts=cuts).validate()


def test_cuts_and_a_split_table_exclude_each_other():
    with pytest.raises(ConfigError, match="--cuts gives the split itself; leave --split out"):
        RunConfig(network="resnet110", method="dgl", k=2, split="infopro", cuts="1.2").validate()


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
    assert resolve_cuts("resnet20", "auto", 3).reason.startswith("auto: neither")
    cuts = resolve_cuts("resnet20", "uniform", 5).cuts
    assert len(cuts) == 4 and all(0 <= c < 9 for c in cuts)


@pytest.mark.parametrize(
    "network,split,k,message",
    [
        ("resnet32", "uniform", 17, r"--k 17 is out of range for resnet32: K is 1 to 16 \(the stem and 15 blocks\)"),
        ("resnet32", "infopro", 17, "--k 17 is out of range for resnet32"),
        ("resnet32", "infopro", 5, r"infopro split table has no K=5 for resnet32; it has K in \[2, 3, 4, 8, 16\]"),
        ("resnet20", "infopro", 2, "has no K=2 for resnet20"),
        ("resnet32", "hpff", 5, "hpff split table has no K=5"),
        ("resnet32", "infopro-balanced", 2, "the infopro-balanced split table has no resnet32; it has only resnet110"),
        ("resnet110", "infopro-balanced", 5, r"has no K=5 for resnet110 on cifar10; it has K in \[2, 3, 4\]"),
    ],
)
def test_bad_splits_name_the_value_and_what_is_allowed(network, split, k, message):
    with pytest.raises(ConfigError, match=message):
        resolve_cuts(network, split, k, "cifar10")


def test_infopro_balanced_names_its_datasets():
    with pytest.raises(ConfigError, match="has resnet110 for --dataset cifar10 and stl10 only, got --dataset svhn"):
        RunConfig(network="resnet110", method="infopro", k=2, split="infopro-balanced", dataset="svhn").validate()


@pytest.mark.parametrize("depth,blocks", [(20, 9), (32, 15), (44, 21), (56, 27), (110, 54)])
def test_cifar_resnets_have_6n_plus_2_layers(depth, blocks):
    net = build_network(f"resnet{depth}", 10)
    assert len(net.units) == blocks + 2
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth  # 3x3 convs + the final linear
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("block,projection", [(1, False), (4, True)])  # resnet20's unit 4 enters stage 2
def test_a_block_sums_its_shortcut_into_the_bn_output_as_the_official_code_does(block, projection):
    """`out += residual` (the official HPFF/InfoPro blocks, torchvision's): the sum and the ReLU
    after it take bn2's output memory, so a block allocates no extra map for the sum, and the
    gradients are those of the out-of-place sum."""
    torch.manual_seed(0)
    unit = build_network("resnet20", 10).units[block].train()
    assert (unit.shortcut is not None) == projection
    x = torch.randn(4, unit.conv1.in_channels, 16, 16, requires_grad=True)
    seen = {}
    handle = unit.bn2.register_forward_hook(lambda m, i, o: seen.update(bn2=o.data_ptr()))
    out = unit(x)
    handle.remove()
    assert out.data_ptr() == seen["bn2"]
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *unit.parameters()], g)

    def out_of_place(x):
        o = unit.bn2(unit.conv2(unit.relu(unit.bn1(unit.conv1(x)))))
        return torch.relu(o + (x if unit.shortcut is None else unit.shortcut(x)))

    expected = torch.autograd.grad(out_of_place(x), [x, *unit.parameters()], g)
    for a, b in zip(grads, expected, strict=True):
        assert torch.equal(a, b)


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


@pytest.mark.parametrize(
    "argv,message",
    [
        (("--cuts", "3.17"), "--cuts 3.17: resnet110: stage 3 has blocks 0 to 17"),
        (("--cuts", "2.3,1.5"), "--cuts 1.5: cuts must be strictly increasing"),
        (("--cuts", "1.2", "--k", "4"), "--k 4 does not match --cuts 1.2"),
        (("--cuts", "1.2", "--split", "hpff"), "--cuts gives the split itself"),
        (("--split", "infopro-balanced", "--k", "5"), "infopro-balanced split table has no K=5"),
        (("--split", "infopro-balanced", "--k", "2", "--dataset", "svhn"), "cifar10 and stl10 only"),
        (("--split", "hpff", "--k", "9"), "the hpff split table has no K=9 for resnet110"),
        (("--k", "56"), "--k 56 is out of range for resnet110: K is 1 to 55"),
    ],
)
def test_bad_cuts_splits_and_k_are_one_line_and_exit_2(argv, message, cli):
    code, out, err = cli("estimate", "--network", "resnet110", "--method", "dgl", *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_suites_accept_cuts_and_count_k_from_them():
    import tomllib

    from hpff_bench.runner.suite import Suite, SuiteError

    text = '[suite]\nkinds = ["estimate"]\n[base]\nnetwork = "resnet110"\nmethod = "dgl"\n' \
           '[axes]\ncuts = ["1.14,2.8", "0.0"]\n'
    runs = Suite(tomllib.loads(text), "t.toml").plan().runs
    assert sorted((r.config.cuts, r.config.k) for r in runs) == [("0.0", 2), ("1.14,2.8", 3)]
    assert any("cuts-1.14-2.8" in r.name for r in runs)
    bad = Suite(tomllib.loads(text.replace('"0.0"', '"3.17"')), "t.toml")
    with pytest.raises(ConfigError, match="--cuts 3.17"):
        bad.plan()
    with pytest.raises(SuiteError, match="cuts = 1.5 is not a string"):
        Suite(tomllib.loads(text.replace('["1.14,2.8", "0.0"]', "[1.5]")), "t.toml").plan()


def test_records_say_the_resolved_split_and_why():
    from hpff_bench.runner.store import make_record

    rec = make_record("estimate", "ok", config=RunConfig(network="resnet110", method="dgl", k=7))
    assert rec["split"]["scheme"] == "uniform" and rec["split"]["reason"].startswith("auto: neither")
    assert rec["modules"] == 7
    # the new `cuts` field leaves ids of configs without cuts as they were before it existed
    assert RunConfig(method="dgl", k=4).config_id() == "ab77061bccf12319"
    assert RunConfig(method="dgl", k=2, cuts="2.1").config_id() != RunConfig(method="dgl", k=2).config_id()


def test_a_registered_split_scheme_is_a_split_choice_everywhere():
    """@register_split adds a --split value that validation, resolve_cuts and the error's list know."""
    from hpff_bench.networks.splits import SPLIT_SCHEMES, Split, register_split

    @register_split("after-stem")
    def after_stem(r):
        units = tuple(range(r.k - 1))  # the stem, then one block per extra module
        return Split("after-stem", r.k, units, "test scheme", tuple((0, 0) if u == 0 else (1, u - 1) for u in units))

    try:
        assert SPLIT_SCHEMES.source("after-stem") == __name__
        split = resolve_cuts("resnet20", "after-stem", 3)
        assert (split.scheme, split.cuts, split.cuts_text) == ("after-stem", (0, 1), "0.0,1.0")
        assert RunConfig(network="resnet20", method="dgl", split="after-stem", k=3).validate()
        with pytest.raises(ConfigError, match=r"unknown --split 'x'; allowed: auto, infopro, infopro-balanced, "
                                              r"hpff, uniform, balanced, after-stem$"):
            RunConfig(split="x").validate()
    finally:
        SPLIT_SCHEMES.remove("after-stem")
