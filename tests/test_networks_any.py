"""`--network PKG.MODULE:CALLABLE`: models cut into units by structure, aux nets for any unit
output (maps, channels-last maps, tokens), and one-line errors for bad specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpff_bench.aux.layout import ChannelsLastToMap, TokensToMap, map_adapter
from hpff_bench.config import RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.methods import build_method, synthetic_batch
from hpff_bench.networks import get_network
from hpff_bench.networks.cutting import as_units

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def tiny_models_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))


@pytest.mark.parametrize("name, stages, names", [
    ("tiny_cnn", (1, 1, 1, 1), ("0.0", "1.0.0", "1.1", "2.0.0", "2.1", "head")),
    ("tiny_vit", (3,), ("conv_proj", *(f"encoder.layers.encoder_layer_{i}" for i in range(3)), "head")),
    ("tiny_swin", (1, 1, 1), ("features.0.0", "features.1.0", "features.2", "features.3.0", "head")),
])
def test_cut_by_structure_computes_the_model(name, stages, names):
    """Units follow the blocks (residual blocks stay whole, the classifier is the head) and chained
    they compute exactly the model's forward, with the model's own parameters."""
    import tiny_models

    torch.manual_seed(0)
    model = getattr(tiny_models, name)(num_classes=5).eval()
    net = as_units(model, name, _head_from(name))
    assert net.stage_blocks == stages and net.names == names
    assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)


def _head_from(name):
    return get_network(f"tiny_models:{name}")._probe[1]


def test_units_method_and_lists_are_taken_as_is():
    spec = get_network("tiny_models:WithUnits")
    net = spec.build(10)
    assert spec.stage_blocks == (2,) and len(net.units) == 4
    assert net.units[0] is not None and type(net.units[-1]).__name__ == "Sequential"
    with pytest.raises(ConfigError, match=r"^--network x: the list it returns has int, not an nn.Module$"):
        as_units([torch.nn.Linear(1, 1), 3], "x")


@pytest.mark.parametrize("spec, message", [
    ("tiny_models", "unknown --network 'tiny_models'; allowed: resnet20, "),
    ("torchvision.models:", "--network 'torchvision.models:': a network from your code is PKG.MODULE:CALLABLE, "
                            "e.g. torchvision.models:mobilenet_v2"),
    ("no_such_module_x:f", "--network no_such_module_x:f: cannot import module 'no_such_module_x' "
                           "(ModuleNotFoundError: No module named 'no_such_module_x')"),
    ("tiny_models:nope", "--network tiny_models:nope: module 'tiny_models' has no attribute 'nope'"),
    ("tiny_models:NOT_CALLABLE", "--network tiny_models:NOT_CALLABLE: NOT_CALLABLE is not callable (it is of type int)"),
    ("tiny_models:not_a_model", "--network tiny_models:not_a_model returned int, not an nn.Module (or a list of modules)"),
    ("tiny_models:fails", "--network tiny_models:fails: calling it failed (RuntimeError: no weights here)"),
    ("tiny_models:Branchy", "--network tiny_models:Branchy: cannot cut Branchy into units: torch.fx cannot trace its "
                            "forward (symbolically traced variables cannot be used as inputs to control flow); return "
                            "an nn.Sequential of blocks, or give the model a units() method returning its modules in "
                            "order (stem first, head last)"),
    ("tiny_models:fixed_classes", "--network tiny_models:fixed_classes returns 7 outputs per image, the dataset has "
                                  "10 classes; pass --num-classes to match it"),
])
def test_bad_network_specs_are_one_line_exit_2(cli, spec, message):
    code, out, err = cli("estimate", "--network", spec, "--batch-size", "2")
    assert (code, out) == (2, "")
    if spec == "tiny_models":  # the list of registered networks follows
        assert err.startswith(f"hpff-bench estimate: error: {message}") and err.count("\n") == 1
    else:
        assert err == f"hpff-bench estimate: error: {message}\n"


def test_image_size_the_model_cannot_take_is_one_line(cli):
    code, _, err = cli("estimate", "--network", "tiny_models:tiny_vit", "--image-size", "48", "--batch-size", "2")
    assert code == 2 and err.count("\n") == 1
    assert "--network tiny_models:tiny_vit does not run on 48x48 images (" in err


def test_layout_adapters_on_known_tensors():
    tokens = torch.arange(2 * 5 * 3.0).view(2, 5, 3)  # class token + a 2x2 grid of width 3
    adapter, shape = map_adapter((5, 3), "here")
    assert isinstance(adapter, TokensToMap) and shape == (3, 2, 2)
    m = adapter(tokens)
    assert m.shape == (2, 3, 2, 2) and m.data_ptr() == tokens[:, 1:].data_ptr()  # a view
    assert torch.equal(m[1, 2], tokens[1, 1:, 2].view(2, 2))
    nhwc = torch.randn(2, 4, 4, 6)
    adapter, shape = map_adapter((4, 4, 6), "here")
    assert isinstance(adapter, ChannelsLastToMap) and shape == (6, 4, 4)
    assert torch.equal(adapter(nhwc), nhwc.permute(0, 3, 1, 2))
    assert map_adapter((6, 4, 4), "here") == (None, (6, 4, 4))
    with pytest.raises(ConfigError, match=r"^here is 8 tokens of 3, which are no square patch grid"):
        map_adapter((8, 3), "here")
    with pytest.raises(ConfigError, match=r"^here is a 2-D tensor \[B, 12\]; local aux nets take a map"):
        map_adapter((12,), "here")


ALL = ("bp", "gc", "greedy", "dgl", "infopro", "predsim")


@pytest.mark.parametrize("network, method", [
    *(("tiny_vit", m) for m in ALL), ("tiny_swin", "dgl"), ("tiny_swin", "infopro"), ("tiny_cnn", "bp"),
    ("tiny_cnn", "predsim"),
])
def test_every_method_trains_any_layout(network, method):
    """Every parameter gets a gradient; a local method's first module is isolated from the last
    module (its gradient does not change when the last module's weights do), BP's is not."""
    cfg = RunConfig(network=f"tiny_models:{network}", method=method, k=3, batch_size=4, seed=1)
    m = build_method(cfg)
    x, y = synthetic_batch(cfg)

    def first_grads():
        m.compute_gradients(x, y)
        return [p.grad.clone() for p in m.modules_[0].parameters()]

    before = first_grads()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    with torch.no_grad():
        for p in m.modules_[-1].parameters():
            p.mul_(1.5).add_(0.1)
    after = first_grads()
    same = all(torch.equal(a, b) for a, b in zip(before, after))
    assert same == (method not in ("bp", "gc"))
    m.train_step(x, y)


def test_token_and_channels_last_outputs_get_map_aux_nets():
    vit = build_method(RunConfig(network="tiny_models:tiny_vit", method="infopro", k=2, batch_size=2))
    swin = build_method(RunConfig(network="tiny_models:tiny_swin", method="dgl", k=2, batch_size=2))
    assert isinstance(vit.aux_nets["independent0"].adapter, TokensToMap)
    assert vit.aux_nets["independent0"].adapter.grid == 4
    assert isinstance(swin.aux_nets["independent0"].adapter, ChannelsLastToMap)


def test_estimate_and_plan_run_an_imported_network(cli_json, cli):
    r = cli_json("estimate", "--network", "tiny_models:tiny_vit", "--method", "dgl", "--k", "3", "--batch-size", "4")
    assert r["split"]["modules"] == 3 and r["predicted"]["peak_allocated_bytes"] > 0
    code, out, err = cli("plan", "--network", "tiny_models:tiny_cnn", "--batch-size", "4", "--budget", "1GiB",
                         "--methods", "bp,dgl", "--k", "2")
    assert code == 0, err
    assert "configurations fit" in out and "\ndgl " in out


def test_networks_command_lists_the_registry_and_a_networks_units(cli):
    code, out, _ = cli("networks")
    assert code == 0
    assert "resnet110         18x18x18      cifar     hpff_bench.networks.cifar_resnet" in out
    code, out, _ = cli("networks", "--network", "tiny_models:tiny_vit")
    assert code == 0
    assert out.splitlines()[:6] == [
        "tiny_models:tiny_vit: 5 units (3 blocks in stages [3])",
        " unit     cut  starts with",
        "    0     0.0  conv_proj",
        "    1     1.0  encoder.layers.encoder_layer_0",
        "    2     1.1  encoder.layers.encoder_layer_1",
        "    3          encoder.layers.encoder_layer_2",
    ]


def test_pff_on_tokens_streamed_equals_batched():
    """HPFF's patches on a ViT's token grid: both executions give the same gradients through the
    token adapter (the patches are cut from the [B, D, g, g] view of the tokens)."""
    base = RunConfig(network="tiny_models:tiny_vit", method="dgl", k=3, batch_size=4, seed=2, hilo=True, pff_grid=2)
    got = []
    for exec_mode in ("batched", "streamed"):
        m = build_method(base.replace(pff_exec=exec_mode))
        m.compute_gradients(*synthetic_batch(base))
        got.append([p.grad.clone() for p in m.modules_.parameters()])
    for a, b in zip(*got):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_one_pixel_maps_under_batchnorm_build_and_train():
    """The meta forwards that find unit and module shapes run a batch of 2: training-mode
    BatchNorm refuses a batch of one 1x1 map."""
    cfg = RunConfig(network="tiny_models:to_one_pixel", method="dgl", k=4, image_size=8, batch_size=4)
    m = build_method(cfg)
    assert [tuple(s) for s in m._module_output_shapes()] == [(4, 4, 4), (4, 2, 2), (4, 1, 1), (10,)]
    m.train_step(*synthetic_batch(cfg))
