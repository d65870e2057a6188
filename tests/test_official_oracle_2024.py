"""Our MAN and AugLocal against their official CIFAR code's own steps, on the same weights.

The official code is not part of hpff-bench, so these run only where a checkout is named:
HPFF_BENCH_OFFICIAL_MAN=".../MAN/Exp on CIFAR-SVHN-STL" and HPFF_BENCH_OFFICIAL_AUGLOCAL=
".../AugLocal" (its top directory) pytest tests/test_official_oracle_2024.py. At resnet32 K=16
(the papers' recipes) they show: the same parameters (MAN's official model also builds nets its
forward never runs, counted exactly), after one step the same gradients and (MAN) the same
moving averages in float64, and the same FLOPs per step.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

from hpff_bench.config import HPFF_INFOPRO_LAMBDAS, RunConfig
from hpff_bench.flops import ScopedFlopCounter
from hpff_bench.methods import build_method, synthetic_batch
from hpff_bench.official_code_run import AUGLOCAL_CODE, MAN_CODE, OfficialCodeStep


def _checkout(variable: str, code):
    path = os.environ.get(variable)
    missing = not path or not (Path(path) / code.model_file).is_file()
    return path, pytest.mark.skipif(missing, reason=f"no official {code.name} checkout (${variable}: "
                                                    f"{code.directory} directory)")


MAN_CHECKOUT, needs_man = _checkout("HPFF_BENCH_OFFICIAL_MAN", MAN_CODE)
AUGLOCAL_CHECKOUT, needs_auglocal = _checkout("HPFF_BENCH_OFFICIAL_AUGLOCAL", AUGLOCAL_CODE)
MAN_CONFIG = RunConfig(network="resnet32", method="man", k=16, batch_size=8, aux="2c2f", local_loss="ce",
                       lambdas=HPFF_INFOPRO_LAMBDAS)  # the README command
AUGLOCAL_CONFIG = RunConfig(network="resnet32", method="auglocal", k=16, batch_size=8, aux_net_depth=2)
BACKBONE = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")


@contextlib.contextmanager
def _float64():
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)


def _params(model, prefixes) -> list[torch.nn.Parameter]:
    return [p for prefix in prefixes for n, p in model.named_parameters() if n.startswith(prefix)]


def _man_pairs(ours, theirs):
    """(official, ours): the backbone and its `fc64`, then per module the learnable block (`LB`),
    the moving-average block (`EMA_Net`), the decoder and classifier at the next block."""
    pairs = list(zip(_params(theirs, (*BACKBONE, "fc64.")), ours.backbone_parameters(), strict=True))
    for j, (stage, block) in enumerate(theirs.infopro_config[:-1]):
        stage, block = (stage + 1, 0) if block == len(theirs.layer1) - 1 else (stage, block + 1)
        official = _params(theirs, (f"LB.{j}.", f"EMA_Net.{j}.", f"decoder_{stage}_{block}.",
                                    f"aux_classifier_{stage}_{block}."))
        mine = _params(ours, (f"aux_nets.independent{j}.bias.", f"aux_nets.independent{j}.ema.",
                              f"aux_nets.independent{j}.decoder.", f"aux_nets.independent{j}.classifier."))
        assert [p.shape for p in official] == [p.shape for p in mine]
        pairs += zip(official, mine)
    return pairs


def _copy(pairs) -> None:
    with torch.no_grad():
        for official, mine in pairs:
            mine.copy_(official)


def _flops(step, x, y) -> int:
    with ScopedFlopCounter() as counter:
        step(x, y)
    return counter.split()["total"]


@needs_man
def test_the_official_man_model_has_our_parameters_and_unused_nets():
    torch.manual_seed(0)
    ours = build_method(MAN_CONFIG)
    theirs = OfficialCodeStep(MAN_CHECKOUT, MAN_CONFIG, "cpu", code=MAN_CODE).model
    pairs = _man_pairs(ours, theirs)
    assert len(pairs) == len(list(ours.parameters()))
    # what its forward never runs: the decoder and classifier at block [1, 0] (no module ends
    # before it) and `fc` (the head it runs is `fc64`)
    unused = _params(theirs, ("decoder_1_0.", "aux_classifier_1_0.", "fc."))
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters()) + sum(
        p.numel() for p in unused) == 2_274_624 + 22_207


@needs_man
def test_the_official_man_step_gives_our_gradients_and_moving_averages_in_float64():
    with _float64():
        torch.manual_seed(0)
        ours = build_method(MAN_CONFIG)
        theirs = OfficialCodeStep(MAN_CHECKOUT, MAN_CONFIG, "cpu", code=MAN_CODE).model
        pairs = _man_pairs(ours, theirs)
        _copy(pairs)
        x, y = synthetic_batch(MAN_CONFIG, "cpu")
        theirs.zero_grad()
        theirs(img=x.double(), target=y, ixx_1=5.0, ixy_1=0.5, ixx_2=0.0, ixy_2=0.0)
        ours.zero_grad()
        ours.compute_gradients(x.double(), y)
    ema = {id(p) for j in range(len(ours.modules_) - 1) for p in ours.aux_nets[f"independent{j}"].ema.parameters()}
    assert [m.grad is None for _, m in pairs] == [o.grad is None for o, _ in pairs] \
        == [id(m) in ema for _, m in pairs]  # only the moving averages have no gradient
    assert all(torch.equal(o, m) for o, m in pairs if id(m) in ema)  # the same moving averages
    assert all(torch.equal(o.grad, m.grad) for o, m in pairs if id(m) not in ema)


@needs_man
def test_the_official_man_step_does_our_flops():
    torch.manual_seed(0)
    ours = build_method(MAN_CONFIG)
    official = OfficialCodeStep(MAN_CHECKOUT, MAN_CONFIG, "cpu", code=MAN_CODE)
    x, y = synthetic_batch(MAN_CONFIG, "cpu")
    assert _flops(ours.train_step, x, y) == _flops(official.train_step, x, y) > 0


def _auglocal_pairs(ours, theirs):
    """(official, ours): the backbone and its `fc`, then each module's aux net in order."""
    official = _params(theirs, (*BACKBONE, "fc.", "aux_classifier_"))
    assert [p.shape for p in official] == [p.shape for p in ours.parameters()]
    return list(zip(official, ours.parameters(), strict=True))


@needs_auglocal
def test_the_official_auglocal_model_has_our_parameters_and_depths():
    torch.manual_seed(0)
    ours = build_method(AUGLOCAL_CONFIG)
    theirs = OfficialCodeStep(AUGLOCAL_CHECKOUT, AUGLOCAL_CONFIG, "cpu", code=AUGLOCAL_CODE).model
    assert len(_auglocal_pairs(ours, theirs)) == len(list(theirs.parameters()))
    assert ours.depths == theirs.aux_depth_list[: len(ours.modules_) - 1]
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters()) == 1_807_964


@needs_auglocal
def test_the_official_auglocal_step_gives_our_gradients_in_float64():
    with _float64():
        torch.manual_seed(0)
        ours = build_method(AUGLOCAL_CONFIG)
        theirs = OfficialCodeStep(AUGLOCAL_CHECKOUT, AUGLOCAL_CONFIG, "cpu", code=AUGLOCAL_CODE).model
        pairs = _auglocal_pairs(ours, theirs)
        _copy(pairs)
        x, y = synthetic_batch(AUGLOCAL_CONFIG, "cpu")
        theirs.zero_grad()
        theirs(img=x.double(), target=y, ixx_1=0.0, ixy_1=1.0, ixx_2=0.0, ixy_2=1.0)
        ours.zero_grad()
        ours.compute_gradients(x.double(), y)
    assert all(o.grad is not None and m.grad is not None for o, m in pairs)
    assert all(torch.equal(o.grad, m.grad) for o, m in pairs)


@needs_auglocal
def test_the_official_auglocal_step_does_our_flops():
    torch.manual_seed(0)
    ours = build_method(AUGLOCAL_CONFIG)
    official = OfficialCodeStep(AUGLOCAL_CHECKOUT, AUGLOCAL_CONFIG, "cpu", code=AUGLOCAL_CODE)
    x, y = synthetic_batch(AUGLOCAL_CONFIG, "cpu")
    assert _flops(ours.train_step, x, y) == _flops(official.train_step, x, y) > 0
