"""Our steps against the official code's own, on the same weights: InfoPro's InfoPro against
our "infopro" case, HPFF's InfoPro+HPFF against `--variant official`.

The official code is not part of hpff-bench (and CI cannot download it), so these run only
where a checkout is named: HPFF_BENCH_OFFICIAL_INFOPRO=".../InfoPro-Pytorch/Experiments on
CIFAR-SVHN-STL10" and HPFF_BENCH_OFFICIAL_HPFF=".../HPFF/Exp on CIFAR_SVHN_STL" pytest
tests/test_official_oracle.py. What they show is what the speed benchmark's official rows rely
on: that each computes the step of the case it is compared with (resnet32 K=16, the recipe).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hpff_bench.flops import ScopedFlopCounter
from hpff_bench.methods import build_method, synthetic_batch
from hpff_bench.official_code import MODULE_ENDS
from hpff_bench.official_code_run import HPFF_CODE, INFOPRO_CODE, OfficialCodeStep
from hpff_bench.speed_cases import speed_configs


def _checkout(variable: str, code):
    """The checkout $variable names and a skip marker for when it names none."""
    path = os.environ.get(variable)
    missing = not path or not (Path(path) / code.model_file).is_file()
    return path, pytest.mark.skipif(missing, reason=f"no official {code.name} checkout (${variable}: "
                                                    f"{code.directory} directory)")


CHECKOUT, needs_infopro = _checkout("HPFF_BENCH_OFFICIAL_INFOPRO", INFOPRO_CODE)
HPFF_CHECKOUT, needs_hpff = _checkout("HPFF_BENCH_OFFICIAL_HPFF", HPFF_CODE)
DECODERS = 15  # K=16: one decoder per module but the last


def _pair(batch: int):
    """(our method, the official model, config), both freshly built at the speed case's recipe."""
    cfg = speed_configs("resnet32", 16, batch, "cpu")["infopro"]
    torch.manual_seed(0)
    ours = build_method(cfg, device="cpu")
    theirs = OfficialCodeStep(CHECKOUT, cfg, "cpu", code=INFOPRO_CODE).model
    return ours, theirs, cfg


def _matched(ours, theirs) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
    """(official, ours) parameter pairs: the backbone in order, then per module its decoder and
    its classifier in the official table's order; the official decoder convolutions' biases
    (ours have none) are left out."""
    def backbone(model, aux_prefixes):
        return [p for n, p in model.named_parameters() if not n.startswith(aux_prefixes)]

    official_aux = []
    for stage, block in theirs.infopro_config:
        for net in (f"decoder_{stage}_{block}.", f"aux_classifier_{stage}_{block}."):
            official_aux += [p for n, p in theirs.named_parameters() if n.startswith(net)
                             and not (net.startswith("decoder") and n.endswith(("0.bias", "3.bias")))]
    official = backbone(theirs, ("decoder_", "aux_classifier_")) + official_aux
    mine = backbone(ours, ("aux_nets",)) + [p for n, p in ours.named_parameters() if n.startswith("aux_nets")]
    assert [p.shape for p in official] == [p.shape for p in mine]
    return list(zip(official, mine))


def _lambdas(cfg) -> dict:
    lam = cfg.lambdas
    return {"ixx_1": lam.ixx_1, "ixy_1": lam.ixy_1, "ixx_2": lam.ixx_2, "ixy_2": lam.ixy_2}


@needs_infopro
def test_the_official_infopro_step_has_our_parameters_but_its_decoder_biases():
    ours, theirs, _ = _pair(8)
    biases = [n for n, p in theirs.named_parameters() if n.startswith("decoder_") and n.endswith(("0.bias", "3.bias"))]
    assert len(biases) == 2 * DECODERS
    assert sum(p.numel() for p in theirs.parameters()) - sum(p.numel() for p in ours.parameters()) == DECODERS * (12 + 3)
    assert len(_matched(ours, theirs)) == len(list(ours.parameters()))


@needs_infopro
def test_the_official_infopro_step_gives_our_gradients_on_the_same_weights():
    ours, theirs, cfg = _pair(8)
    pairs = _matched(ours, theirs)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if name.startswith("decoder_") and name.endswith(("0.bias", "3.bias")):
                p.zero_()  # ours has no such bias: at 0 the two nets compute the same function
        for official, mine in pairs:
            mine.copy_(official)
    x, y = synthetic_batch(cfg, "cpu")
    theirs.zero_grad()
    theirs(img=x, target=y, **_lambdas(cfg))
    ours.zero_grad()
    ours.compute_gradients(x, y)
    worst = max(((o.grad - m.grad).abs().max() / o.grad.abs().max()).item() for o, m in pairs)
    assert worst < 1e-4  # float32 rounding of a different summation order (5.1e-6 measured)
    assert sum(torch.equal(o.grad, m.grad) for o, m in pairs) > len(pairs) // 4  # many to the bit


@needs_infopro
def test_the_official_infopro_step_does_our_flops():
    ours, _, cfg = _pair(8)
    official = OfficialCodeStep(CHECKOUT, cfg, "cpu", code=INFOPRO_CODE)
    x, y = synthetic_batch(cfg, "cpu")
    counts = []
    for step in (ours.train_step, official.train_step):
        with ScopedFlopCounter() as counter:
            step(x, y)
        counts.append(counter.split()["total"])
    assert counts[0] == counts[1] > 0


def _hpff_pairs(ours, theirs) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
    """(ours, official) parameter pairs of `--variant official` and the official HPFF model, module
    by module: position i's independent net is its `net_classifier`, its cascade net its
    `aux_decoder` + `aux_classifier`; what the official forward never runs is ours `unused`
    (every `net_decoder`, both nets at the first and last end, its `fc`: the head it runs is `fc64`)."""
    ends = [f"{s}_{b}" for s, b in MODULE_ENDS["resnet32"][16]]
    groups = [(["modules_"], ["conv1", "bn1", "layer1", "layer2", "layer3", "fc64"])]
    for i in range(1, len(ends) - 1):
        groups += [([f"aux_nets.independent{i}"], [f"net_classifier_{ends[i]}"]),
                   ([f"aux_nets.cascade{i}"], [f"aux_decoder_{ends[i]}", f"aux_classifier_{ends[i]}"])]
    groups += [([f"unused.net_decoder{j}"], [f"net_decoder_{ends[j]}"]) for j in range(len(ends))]
    for j in (0, len(ends) - 1):
        groups += [([f"unused.net_classifier{j}"], [f"net_classifier_{ends[j]}"]),
                   ([f"unused.aux{j}"], [f"aux_decoder_{ends[j]}", f"aux_classifier_{ends[j]}"])]
    groups.append((["unused.fc"], ["fc"]))

    def params(model, prefixes):
        return [p for prefix in prefixes for n, p in model.named_parameters() if n.startswith(prefix + ".")]

    pairs = []
    for mine, official in groups:
        a, b = params(ours, mine), params(theirs, official)
        assert a and [p.shape for p in a] == [p.shape for p in b], (mine, official)
        pairs += zip(a, b)
    assert len(pairs) == len(list(ours.parameters())) == len(list(theirs.parameters()))
    return pairs


@needs_hpff
def test_the_official_hpff_step_gives_the_official_variants_gradients_to_the_bit_in_float64():
    cfg = speed_configs("resnet32", 16, 4, "cpu")["infopro+hpff official"]
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # both build in float64: equal sums, not just close ones
    try:
        torch.manual_seed(0)
        ours = build_method(cfg, device="cpu")
        theirs = OfficialCodeStep(HPFF_CHECKOUT, cfg, "cpu", code=HPFF_CODE).model
        pairs = _hpff_pairs(ours, theirs)
        with torch.no_grad():
            for mine, official in pairs:
                mine.copy_(official)
        x, y = synthetic_batch(cfg, "cpu")
        theirs.zero_grad()
        theirs(img=x.double(), target=y, **_lambdas(cfg))
        ours.zero_grad()
        ours.compute_gradients(x.double(), y)
    finally:
        torch.set_default_dtype(dtype)
    trained = [(m, o) for m, o in pairs if o.grad is not None]
    assert [m.grad is None for m, _ in pairs] == [o.grad is None for _, o in pairs]  # the same unused ones
    assert 0 < len(trained) < len(pairs)
    assert all(torch.equal(m.grad, o.grad) for m, o in trained)
