"""Running the official HPFF and InfoPro code's own step from a checkout
(hpff_bench/official_code_run.py).

The official code is not here (no download on CI), so stand-in checkouts are written with the
same layout and the same calling conventions: a `network/` (HPFF) or `networks/` (InfoPro)
directory without `__init__.py` whose model file imports a sibling relatively, copies tensors
with `.cuda()` in its constructor, and backpropagates inside its own forward; HPFF's returns
three values, InfoPro's two."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hpff_bench.config import HPFF_INFOPRO_LAMBDAS, RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.official_code_run import (
    AUGLOCAL_CODE,
    DGL_CODE,
    INFOPRO_CODE,
    MAN_CODE,
    OfficialCodeStep,
    check_official_dir,
    load_official_model_module,
)

REPO = Path(__file__).resolve().parents[1]

MODEL = '''
import torch
from torch import nn
from .config import SEEN

class Net(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        SEEN.update(kwargs)
        self.fc = nn.Linear(3 * 32 * 32, kwargs["class_num"])
        self.mask = torch.ones(kwargs["batch_size"], 3).cuda()  # the official constructor's copies

    def forward(self, img, target=None, **lambdas):
        SEEN["lambdas"] = lambdas
        logits = self.fc(img.flatten(1))
        loss = nn.functional.cross_entropy(logits, target)
        loss.backward()  # the official forward backpropagates itself
        return logits, logits, loss

def resnet32(**kwargs):
    return Net(**kwargs)
'''


def checkout(root: Path) -> Path:
    net = root / "Exp on CIFAR_SVHN_STL" / "network"
    net.mkdir(parents=True)
    (net / "config.py").write_text("SEEN = {}\n")
    (net / "resnetInfoPro_HPFF.py").write_text(textwrap.dedent(MODEL))
    return net.parent


def infopro_checkout(root: Path) -> Path:
    net = root / "Experiments on CIFAR-SVHN-STL10" / "networks"
    net.mkdir(parents=True)
    (net / "configs.py").write_text("SEEN = {}\n")
    model = MODEL.replace("from .config import", "from .configs import").replace("return logits, logits, loss",
                                                                                  "return logits, loss")
    (net / "resnet.py").write_text(textwrap.dedent(model))
    return net.parent


def hpff_config(**kw) -> RunConfig:
    base = dict(network="resnet32", method="infopro", k=16, hilo=True, pff_grid=2, split="hpff", aux="2c2f",
                variant="official", hilo_exec="official", batch_size=4, lambdas=HPFF_INFOPRO_LAMBDAS)
    return RunConfig(**{**base, **kw})


def test_a_directory_without_the_model_file_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"'.*nowhere' has no network/resnetInfoPro_HPFF.py.*Exp on CIFAR_SVHN_STL"):
        check_official_dir(tmp_path / "nowhere")


def test_the_step_builds_its_model_with_the_recipe_and_updates_its_weights(tmp_path):
    code = checkout(tmp_path)
    step = OfficialCodeStep(code, hpff_config(), "cpu")
    seen = load_official_model_module(code).SEEN
    assert {k: seen[k] for k in ("local_module_num", "batch_size", "aux_net_config", "local_loss_mode",
                                 "class_num", "wx", "wy")} == {
        "local_module_num": 16, "batch_size": 4, "aux_net_config": "2c2f", "local_loss_mode": "cross_entropy",
        "class_num": 10, "wx": 0.001, "wy": 0.999}
    assert step.model.mask.device.type == "cpu"  # `.cuda()` went to the step's device
    before = step.model.fc.weight.detach().clone()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = step.train_step(x, y)
    assert seen["lambdas"] == {"ixx_1": 5.0, "ixy_1": 0.5, "ixx_2": 0.0, "ixy_2": 0.0}
    assert torch.isfinite(loss) and not loss.requires_grad
    assert not torch.equal(before, step.model.fc.weight)  # its backward ran, then SGD stepped
    assert not hasattr(torch.Tensor.cuda, "__wrapped__") and torch.Tensor.cuda.__qualname__ != "<lambda>"


def test_the_infopro_code_steps_without_the_cascade_weights_and_returns_its_loss(tmp_path):
    code = infopro_checkout(tmp_path)
    config = RunConfig(network="resnet32", method="infopro", k=16, batch_size=4)
    step = OfficialCodeStep(code, config, "cpu", code=INFOPRO_CODE)
    seen = load_official_model_module(code, INFOPRO_CODE).SEEN
    assert "wx" not in seen and "wy" not in seen  # InfoPro's constructor has no cascade
    assert {k: seen[k] for k in ("local_module_num", "batch_size", "aux_net_config", "local_loss_mode")} == {
        "local_module_num": 16, "batch_size": 4, "aux_net_config": "1c2f", "local_loss_mode": "cross_entropy"}
    before = step.model.fc.weight.detach().clone()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = step.train_step(x, y)  # the last of two values, a scalar
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert seen["lambdas"] == {"ixx_1": 5.0, "ixy_1": 0.05, "ixx_2": 0.2, "ixy_2": 0.5}  # our recipe, passed on
    assert not torch.equal(before, step.model.fc.weight)


@pytest.mark.parametrize("change, message", [
    ({"hilo": True, "split": "hpff"}, "runs InfoPro without HiLo or PFF, not infopro with hilo=True"),
    ({"pff_grid": 2}, "runs InfoPro without HiLo or PFF, not infopro with hilo=False, pff_grid=2"),
    ({"method": "dgl"}, "runs InfoPro without HiLo or PFF, not dgl"),
    ({"k": 5}, "official InfoPro code has local_module_num 1, 2, 3, 4, 8, 16 for resnet32, not 5"),
    ({"network": "resnet20", "split": "uniform"}, "official InfoPro code has resnet32, resnet110, not resnet20"),
])
def test_what_the_infopro_code_has_no_path_for_is_refused(tmp_path, change, message):
    config = RunConfig(**{**dict(network="resnet32", method="infopro", k=16, batch_size=4), **change})
    with pytest.raises(ConfigError, match=message):
        OfficialCodeStep(infopro_checkout(tmp_path), config, "cpu", code=INFOPRO_CODE)


def test_an_infopro_directory_without_its_model_file_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"has no networks/resnet.py; give the 'Experiments on CIFAR-SVHN-STL10' "
                                          r"directory of a blackfeather-wang/InfoPro-Pytorch checkout"):
        check_official_dir(checkout(tmp_path), INFOPRO_CODE)  # HPFF's directory is not InfoPro's


def test_two_checkouts_load_side_by_side(tmp_path):
    a, b = checkout(tmp_path / "a"), checkout(tmp_path / "b")
    assert load_official_model_module(a) is not load_official_model_module(b)
    assert load_official_model_module(a) is load_official_model_module(a)


@pytest.mark.parametrize("change, message", [
    ({"network": "resnet20"}, "has resnet32, resnet110, not resnet20"),
    ({"k": 5}, "local_module_num 1, 2, 3, 4, 8, 16 for resnet32, not 5"),
])
def test_what_the_official_code_has_no_path_for_is_refused(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        OfficialCodeStep(checkout(tmp_path), hpff_config(**change), "cpu")


@pytest.mark.parametrize("option, message", [
    (["--hpff-official-code", "{tmp}"], "--hpff-official-code: official code directory '{tmp}' has no "
                                        "network/resnetInfoPro_HPFF.py"),
    (["--hpff-official-infopro", "{tmp}"], "--hpff-official-infopro: official code directory '{tmp}' has no "
                                           "networks/resnet.py"),
    (["--hpff-official-dgl", "{tmp}"], "--hpff-official-dgl: official code directory '{tmp}' has no "
                                       "auxiliary_nets_study/models.py"),
    (["--hpff-threads", "0"], "--hpff-threads 0: must be a whole number >= 1"),
    (["--hpff-threads", "two"], "--hpff-threads two: must be a whole number >= 1"),
    (["--hpff-rounds", "0"], "--hpff-rounds 0: must be a whole number >= 1"),
    (["--hpff-rounds", "2.5"], "--hpff-rounds 2.5: must be a whole number >= 1"),
    (["--hpff-preset", "huge"], "--hpff-preset huge: must be one of paper, quick"),
    (["--hpff-device", "tpu"], "--hpff-device tpu: must be one of auto, cpu, cuda"),
])
def test_the_benchmark_options_refuse_bad_values_before_anything_runs(tmp_path, option, message):
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "suites" / "test_method_speed.py"),
         "--benchmark-disable", *(o.format(tmp=tmp_path) for o in option)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert r.returncode == 2, r.stdout + r.stderr  # as the CLI's bad values, not pytest's usage error (4)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], r.stderr
    assert "passed" not in r.stdout and "skipped" not in r.stdout  # refused before anything ran


def _suite(name: str):
    """A suites/ benchmark module, imported from its file (suites/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_suite_{name}", REPO / "suites" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_speed_benchmark_steps_each_official_code_it_was_given_beside_ours(tmp_path):
    suite = _suite("test_method_speed")
    hpff, infopro = checkout(tmp_path / "h"), infopro_checkout(tmp_path / "i")
    steps = suite.official_code_configs("resnet32", 16, 2, "cpu", str(hpff), str(infopro))
    assert {name: (code.name, cfg.k, cfg.method, cfg.hilo) for name, (code, _, cfg) in steps.items()} == {
        "official code bp": ("HPFF", 1, "infopro", True),  # its E2E path
        "official code infopro+hpff": ("HPFF", 16, "infopro", True),
        "official infopro code infopro": ("InfoPro", 16, "infopro", False)}
    assert set(suite.official_code_configs("resnet32", 16, 2, "cpu", None, str(infopro))) == {"official infopro code infopro"}
    assert suite.official_code_configs("resnet32", 5, 2, "cpu", str(hpff), str(infopro)) == {}  # neither has K=5
    ours = {"bp": RunConfig(network="resnet32", k=16, batch_size=2, split="uniform")}
    measured = suite.measure_side_by_side(ours, torch.device("cpu"), rounds=2, official=steps)
    for name in [*ours, *steps]:
        assert len(measured[name]["step_seconds"]) == 2 and measured[name]["flops"]["total"] > 0, name
    # the stand-ins are one Linear(3072, 10) on an image that needs no gradient: a forward and a
    # weight-gradient matmul, 2 x batch x 3072 x 10 FLOPs each
    assert measured["official infopro code infopro"]["flops"]["total"] == 2 * (2 * 2 * 3072 * 10)


DGL_MODELS = '''
import math
import torch.nn as nn
import torch.nn.functional as F

class auxillary_classifier2(nn.Module):
    def __init__(self, input_features=256, in_size=32, cnn=False, num_classes=10, n_lin=0, mlp_layers=0):
        super().__init__()
        self.seen = dict(input_features=input_features, in_size=in_size, num_classes=num_classes,
                         n_lin=n_lin, mlp_layers=mlp_layers)
        self.fc = nn.Linear(input_features * 4, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(x, (2, 2)).flatten(1))
'''


def dgl_checkout(root: Path) -> Path:
    study = root / "auxiliary_nets_study"
    study.mkdir(parents=True)
    (study / "models.py").write_text(textwrap.dedent(DGL_MODELS))
    return root


def test_the_dgl_aux_net_is_built_as_mlp_sr_and_timed_beside_our_head(tmp_path):
    suite = _suite("test_aux_speed")
    theirs = suite.official_dgl_head(str(dgl_checkout(tmp_path)), 32, 16)
    assert theirs.seen == {"input_features": 32, "in_size": 16, "num_classes": 10, "n_lin": 3, "mlp_layers": 3}
    from hpff_bench.aux.heads import DGLHead

    heads = {"ours": DGLHead(32, 16, 10), "official": theirs}
    x, y = torch.randn(4, 32, 16, 16), torch.tensor([0, 1, 2, 3])
    measured = suite.time_heads(heads, x, y, rounds=3, warmup_rounds=1)
    assert all(len(m["step_seconds"]) == 3 for m in measured.values())
    # the stand-in: one Linear(128, 10) on pooled features that need the input's gradient:
    # forward, input-gradient and weight-gradient matmuls, 2 x 4 x 128 x 10 FLOPs each
    assert measured["official"]["flops"] == 3 * (2 * 4 * 128 * 10)
    assert measured["official"]["params"] == 128 * 10 + 10
    row = suite.compare(measured)
    assert row["ours_vs_official"] == pytest.approx(row["ours_ms"] / row["official_ms"])
    assert row["params_ours"] == sum(p.numel() for p in heads["ours"].parameters())


def test_a_dgl_checkout_without_its_aux_net_study_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"has no auxiliary_nets_study/models.py; give the top directory of a "
                                          r"eugenium/DGL checkout"):
        check_official_dir(tmp_path, DGL_CODE)


def test_the_paired_ratio_comes_with_a_bootstrap_interval_of_its_median():
    median_ci = _suite("test_method_speed").median_ci
    assert median_ci([1.2] * 15) == [1.2, 1.2]  # no spread, no interval
    rounds = [1.10, 1.12, 1.13, 1.15, 1.16, 1.17, 1.18, 1.20, 1.21, 1.22, 1.25, 1.30, 1.35, 1.40, 2.50]
    low, high = median_ci(rounds)
    assert 1.10 <= low < 1.20 < high <= 1.35  # around the median, 1.20; the one slow round barely moves it
    assert median_ci(rounds) == [low, high]  # seeded
    assert median_ci(rounds, level=0.5)[0] >= low and median_ci(rounds, level=0.5)[1] <= high


def man_checkout(root: Path) -> Path:
    net = root / "Exp on CIFAR-SVHN-STL" / "networks"
    net.mkdir(parents=True)
    (net / "config.py").write_text("SEEN = {}\n")
    (net / "resnetInfoPro_MAN.py").write_text(textwrap.dedent(MODEL.replace("return logits, logits, loss",
                                                                            "return logits, loss")))
    return net.parent


def auglocal_checkout(root: Path) -> Path:
    net = root / "networks"
    net.mkdir(parents=True)
    (net / "configs.py").write_text("SEEN = {}\n")
    model = MODEL.replace("from .config import", "from .configs import").replace(
        "return logits, logits, loss", "return logits, loss, [], [], []")  # its five values, the loss second
    (net / "resnet.py").write_text(textwrap.dedent(model))
    return root


def test_the_man_code_gets_its_momentum_and_the_recipe(tmp_path):
    code = man_checkout(tmp_path)
    config = RunConfig(network="resnet32", method="man", k=16, batch_size=4, aux="2c2f",
                       lambdas=HPFF_INFOPRO_LAMBDAS, man_momentum=0.99)
    step = OfficialCodeStep(code, config, "cpu", code=MAN_CODE)
    seen = load_official_model_module(code, MAN_CODE).SEEN
    assert {k: seen[k] for k in ("local_module_num", "momentum", "aux_net_config", "local_loss_mode")} == {
        "local_module_num": 16, "momentum": 0.99, "aux_net_config": "2c2f", "local_loss_mode": "cross_entropy"}
    loss = step.train_step(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert loss.dim() == 0 and seen["lambdas"] == {"ixx_1": 5.0, "ixy_1": 0.5, "ixx_2": 0.0, "ixy_2": 0.0}


def test_the_auglocal_code_gets_k_minus_depth_modules_and_its_own_weights(tmp_path):
    code = auglocal_checkout(tmp_path)
    config = RunConfig(network="resnet32", method="auglocal", k=16, batch_size=4, aux_net_depth=3)
    step = OfficialCodeStep(code, config, "cpu", code=AUGLOCAL_CODE)
    seen = load_official_model_module(code, AUGLOCAL_CODE).SEEN
    assert {k: seen[k] for k in ("local_module_num", "aux_net_depth", "is_pyramid", "paramid_coeff", "rule",
                                 "aux_net_config")} == {
        "local_module_num": 13, "aux_net_depth": 3, "is_pyramid": True, "paramid_coeff": 0.5, "rule": "AugLocal",
        "aux_net_config": "unifSamp"}
    loss = step.train_step(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert loss.dim() == 0  # the second of its five values
    assert seen["lambdas"] == {"ixx_1": 0.0, "ixy_1": 1.0, "ixx_2": 0.0, "ixy_2": 1.0}  # train.py's defaults
    with pytest.raises(ConfigError, match="the official AugLocal code runs AugLocal without HiLo or PFF, not man"):
        OfficialCodeStep(code, RunConfig(network="resnet32", method="man", k=16, batch_size=4), "cpu",
                         code=AUGLOCAL_CODE)


def test_the_speed_benchmark_steps_the_2024_codes_beside_their_cases(tmp_path):
    suite = _suite("test_method_speed")
    man, aug = man_checkout(tmp_path / "m"), auglocal_checkout(tmp_path / "a")
    steps = suite.official_code_configs("resnet32", 16, 2, "cpu", None, None, str(man), str(aug))
    assert {name: (code.name, cfg.method, cfg.k) for name, (code, _, cfg) in steps.items()} == {
        "official man code man": ("MAN", "man", 16), "official auglocal code auglocal": ("AugLocal", "auglocal", 16)}
    # AugLocal at K=4 (depth 2: 2 modules) cannot run its pyramid; MAN has no resnet32 K=5
    assert suite.official_code_configs("resnet32", 4, 2, "cpu", None, None, None, str(aug)) == {}
    assert suite.official_code_configs("resnet32", 5, 2, "cpu", None, None, str(man), None) == {}
