"""Running the official HPFF code's own step from a checkout (hpff_bench/official_code_run.py).

The official code is not here (no download on CI), so a stand-in checkout is written with the
same layout and the same calling conventions: a `network/` directory without `__init__.py`
whose model file imports a sibling relatively, copies tensors with `.cuda()` in its
constructor, and backpropagates inside its own forward."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hpff_bench.config import HPFF_INFOPRO_LAMBDAS, RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.official_code_run import (
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
