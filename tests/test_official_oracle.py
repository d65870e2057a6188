"""Our InfoPro step against the official InfoPro code's own, on the same weights.

The official code is not part of hpff-bench (and CI cannot download it), so these run only
where a checkout is named: HPFF_BENCH_OFFICIAL_INFOPRO=".../InfoPro-Pytorch/Experiments on
CIFAR-SVHN-STL10" pytest tests/test_official_oracle.py. What they show is what the speed
benchmark's "official infopro code infopro" row relies on: that it computes our "infopro"
case's step (resnet32 K=16, its module table, `1c2f`, cross-entropy, the recipe's λ's).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hpff_bench.flops import ScopedFlopCounter
from hpff_bench.methods import build_method, synthetic_batch
from hpff_bench.official_code_run import INFOPRO_CODE, OfficialCodeStep
from hpff_bench.speed_cases import speed_configs

CHECKOUT = os.environ.get("HPFF_BENCH_OFFICIAL_INFOPRO")
pytestmark = pytest.mark.skipif(
    not CHECKOUT or not (Path(CHECKOUT) / INFOPRO_CODE.model_file).is_file(),
    reason="no official InfoPro checkout ($HPFF_BENCH_OFFICIAL_INFOPRO: its 'Experiments on CIFAR-SVHN-STL10')",
)
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


def test_the_official_infopro_step_has_our_parameters_but_its_decoder_biases():
    ours, theirs, _ = _pair(8)
    biases = [n for n, p in theirs.named_parameters() if n.startswith("decoder_") and n.endswith(("0.bias", "3.bias"))]
    assert len(biases) == 2 * DECODERS
    assert sum(p.numel() for p in theirs.parameters()) - sum(p.numel() for p in ours.parameters()) == DECODERS * (12 + 3)
    assert len(_matched(ours, theirs)) == len(list(ours.parameters()))


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
