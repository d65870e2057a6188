"""ImageNet InfoPro aux nets (InfoPro's and HPFF's designs): shapes, where they are used, memory."""

import pytest
import torch

from hpff_bench.aux.imagenet import (
    HPFFImageNetDecoder,
    HPFFImageNetHead,
    InfoProImageNetDecoder,
    InfoProImageNetHead,
    hpff_head_widths,
)
from hpff_bench.config import RunConfig
from hpff_bench.methods import build_method


def test_infopro_decoder_reduces_first_and_upsamples_in_steps():
    dec = InfoProImageNetDecoder(512, 64)
    convs = [m for m in dec.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (512, 128, 1), (128, 32, 3), (32, 12, 3), (12, 3, 3)
    ]
    sizes = [m.size for m in dec.net if type(m).__name__ == "_Upsample"]
    assert sizes == [16, 32, 64]  # image/4, /2, /1 (56, 112, 224 at 224²)
    out = dec(torch.randn(2, 512, 8, 8))
    assert out.shape == (2, 3, 64, 64) and 0 < out.min() and out.max() < 1


def test_infopro_head_strides_down_twice_before_pooling():
    head = InfoProImageNetHead(512, 7)
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.stride[0]) for c in convs] == [(128, 1), (256, 2), (512, 2), (2048, 1)]
    assert head(torch.randn(2, 512, 8, 8)).shape == (2, 7)


@pytest.mark.parametrize("channels,widths", [(256, (128, 256, 512)), (512, (128, 256, 512)),
                                             (1024, (256, 256, 512)), (2048, (512, 512, 1024))])
def test_hpff_head_widths_follow_its_aux_classifier(channels, widths):
    assert hpff_head_widths(channels) == widths
    assert HPFFImageNetHead(channels, 5)(torch.randn(2, channels, 4, 4)).shape == (2, 5)


@pytest.mark.parametrize("ratio", [4, 8, 16, 32])
def test_hpff_decoder_for_every_stage(ratio):
    assert HPFFImageNetDecoder(64, ratio, 64)(torch.randn(1, 64, 64 // ratio, 64 // ratio)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("ratio, nearest", [(1, 4), (2, 4), (5, 4), (6, 8), (12, 16), (64, 32)])
def test_hpff_decoder_takes_the_nearest_of_its_four(ratio, nearest):
    """Maps of other networks get the decoder of the nearest ResNet stage (log scale), which
    still ends at the image size."""
    from hpff_bench.aux.imagenet import HPFF_DECODER_STEPS, nearest_ratio

    assert nearest_ratio(ratio) == nearest
    dec = HPFFImageNetDecoder(8, ratio, 64)
    ups = [m.size for m in dec.net if type(m).__name__ == "_Upsample"]
    assert ups == [round(64 * f) for f, _, _ in HPFF_DECODER_STEPS[nearest]]
    assert dec(torch.randn(2, 8, max(1, 64 // ratio), max(1, 64 // ratio))).shape == (2, 3, 64, 64)


def _aux_types(cfg):
    m = build_method(cfg)
    return {type(t.net).__name__ for obj in m.aux_nets.values() for t in obj.terms}


def test_torchvision_networks_get_the_imagenet_nets_cifar_ones_keep_theirs():
    base = dict(method="infopro", k=2, batch_size=2)
    imagenet = RunConfig(network="resnet34", dataset="imagenet", image_size=64, num_classes=5, **base)
    assert _aux_types(imagenet) == {"InfoProImageNetDecoder", "InfoProImageNetHead"}
    assert _aux_types(imagenet.replace(hilo=True, pff_grid=2, aux="2c2f")) == {"HPFFImageNetDecoder", "HPFFImageNetHead"}
    assert _aux_types(RunConfig(network="resnet20", **base)) == {"Decoder", "InfoProClassifier"}


@pytest.mark.parametrize("hpff", [False, True])
def test_imagenet_infopro_trains_a_step(hpff):
    cfg = RunConfig(network="resnet34", dataset="imagenet", image_size=64, num_classes=5, method="infopro",
                    k=3, batch_size=2, hilo=hpff, pff_grid=2 if hpff else 1)
    m = build_method(cfg)
    x = torch.rand(2, 3, 64, 64)
    y = torch.tensor([0, 3])
    assert torch.isfinite(m.train_step(x, y).loss)
    decoder = m.aux_nets["independent0"].terms[0].net
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())


def test_imagenet_infopro_k2_is_predicted_below_backprop():
    """The papers' ImageNet aux nets reduce channels before upsampling: InfoPro K=2 on resnet101
    needs less than BP, and the aux nets' activations are no part of the peak (the second
    module's backward is). Batch 16 keeps the test fast (at 64² images the aux nets' 4.7 M
    parameters outweigh the activations saved); the README reports batch 128."""
    from hpff_bench.profiling import estimate_config

    base = dict(network="resnet101", dataset="imagenet", num_classes=1000, batch_size=16)
    bp = estimate_config(RunConfig(method="bp", **base))["predicted"]
    ip = estimate_config(RunConfig(method="infopro", k=2, **base))["predicted"]
    assert ip["peak_allocated_bytes"] < bp["peak_allocated_bytes"]
    b = ip["breakdown_bytes"]
    assert b["aux_activations"] < 0.1 * b["backbone_activations"]
