"""Aux-net parameter counts, ours vs the official code's, per cut channel count.

The official numbers were measured by building the official modules on CPU (fake inputs) and
summing `numel()` of their parameters: InfoPro-Pytorch `Experiments on CIFAR-SVHN-STL10/
networks/auxiliary_nets.py` (AuxClassifier, cross-entropy, 10 classes; Decoder, 32² images) and
`Experiments on ImageNet/networks/resnet.py` (Decoder(512), the model's `head`), HPFF
`Exp on Imagenet/networks/InfoProAux.py` (the used sub-decoder; AuxClassifier), DGL
`auxiliary_nets_study/models.py` (auxillary_classifier2, mlp-sr = n_lin 3, mlp_layers 3) and
local-loss `train.py` (LocalLossBlockConv's decoder_y + conv_loss, --loss-sup predsim), MAN
(JunhaoSu0/MAN at a6d20c55, `Exp on CIFAR-SVHN-STL/networks/`: two copies of its BasicBlock, the
LB and EMA_Net, + Decoder + AuxClassifier 2c2f) and AugLocal (ChenxiangMA/AugLocal at 98c90d61,
`networks/auxiliary_nets.py` AuxNetwork 'unifSamp' with its configs.py net_dim). Where ours
differs, `difference` names the mechanism.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from hpff_bench.aux import heads, imagenet
from hpff_bench.aux.auglocal import AugLocalAuxNet, unit_widths
from hpff_bench.aux.man import MomentumAux
from hpff_bench.networks.cifar_resnet import BasicBlock


@dataclass(frozen=True)
class Row:
    method: str
    net: str
    channels: int
    spatial: int
    build: Callable[[], list[nn.Module]]
    official: int
    source: str
    difference: str = ""  # why ours differs ("" = it must not)

    def ours(self) -> int:
        return sum(p.numel() for m in self.build() for p in m.parameters())


_IP = "InfoPro-Pytorch CIFAR auxiliary_nets.py"
_IPI = "InfoPro-Pytorch ImageNet resnet.py"
_HP = "HPFF ImageNet InfoProAux.py"
_DGL = "DGL auxiliary_nets_study/models.py"
_LL = "local-loss train.py"
_CIFAR = ((16, 32), (32, 16), (64, 8))
_MAN = "MAN @a6d20c55 resnetInfoPro_MAN.py"
_AUG = "AugLocal @98c90d61 auxiliary_nets.py"


def _man(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [MomentumAux(BasicBlock(cin, cout, stride), 32, "2c2f", "ce", 10)]


def _rows_2024() -> list[Row]:
    """MAN's aux net at each kind of next block (its EMA and learnable copies + decoder + 2c2f
    classifier, at the next block's width), AugLocal's at sampled layers of resnet32 (depth 2, its
    command's; and 1) and resnet110 (3). Counted by building the official modules on the CPU."""
    rows = [Row("man", f"block {cin}->{cout} s{s}", cout, 32 // (2 ** (cout // 32)), lambda a=(cin, cout, s): _man(*a),
                n, _MAN) for cin, cout, s, n in ((16, 16, 1, 30_901), (16, 32, 2, 98_037), (32, 32, 1, 106_101),
                                                  (32, 64, 2, 206_325), (64, 64, 1, 238_837))]
    for net, blocks, layer, depth, n in (("resnet32", (5, 5, 5), 0, 2, 72_906), ("resnet32", (5, 5, 5), 6, 2, 76_938),
                                         ("resnet32", (5, 5, 5), 11, 2, 148_618), ("resnet32", (5, 5, 5), 0, 1, 48_266),
                                         ("resnet110", (18, 18, 18), 0, 3, 77_578)):
        widths = unit_widths(blocks)
        rows.append(Row("auglocal", f"{net} u{layer} d{depth}", widths[layer], 32 >> (widths[layer] // 32),
                        lambda w=widths, u=layer, d=depth: [AugLocalAuxNet(w, u, d, 10)], n, _AUG))
    return rows


def _rows() -> list[Row]:
    rows: list[Row] = []
    official = {
        "greedy": (170, 330, 650), "1c2f": (10_186, 28_170, 46_602), "2c2f": (19_466, 65_162, 83_594),
        "decoder": (2_091, 3_819, 7_275), "dgl": (14_410, 54_922, 214_282), "predsim": (43_274, 50_186, 77_834),
    }
    for i, (c, s) in enumerate(_CIFAR):
        rows += [
            Row("greedy", "0c1f", c, s, lambda c=c, s=s: [heads.GreedyHead(c, s, 10)], official["greedy"][i], _IP),
            Row("dgl", "mlp-sr", c, s, lambda c=c, s=s: [heads.DGLHead(c, s, 10)], official["dgl"][i], _DGL,
                f"ours {14 * c} fewer: no bias in the 3 linear layers before BatchNorm1d (12C) and no "
                "unused BatchNorm2d (2C; the official builds it, never calls it)"),
            Row("infopro", "1c2f", c, s, lambda c=c, s=s: [heads.InfoProClassifier(c, s, 10, "1c2f")], official["1c2f"][i], _IP),
            Row("infopro", "2c2f", c, s, lambda c=c, s=s: [heads.InfoProClassifier(c, s, 10, "2c2f")], official["2c2f"][i], _IP),
            Row("infopro", "decoder", c, s, lambda c=c: [heads.Decoder(c, 32)], official["decoder"][i], _IP,
                "ours 15 fewer: no bias in its two convs (12 + 3)"),
            Row("predsim", "pred + sim", c, s,
                lambda c=c, s=s: [heads.PredSimPrediction(c, s, 10), heads.PredSimSimilarity(c, s)],
                official["predsim"][i], _LL),
        ]
    rows += [
        Row("infopro", "imagenet decoder", 512, 28, lambda: [imagenet.InfoProImageNetDecoder(512, 224)], 106_699, _IPI),
        Row("infopro", "imagenet head", 512, 28, lambda: [imagenet.InfoProImageNetHead(512, 1000)], 4_643_560, _IPI),
    ]
    for c, r, n in ((256, 4, 52_067), (512, 8, 107_971), (1024, 16, 228_995), (2048, 32, 342_915)):
        # the official Decoder builds all four sub-decoders and uses the one for its input size;
        # this counts that one (its 7² one is unreachable there: `features.size(4)`)
        rows.append(Row("infopro --hpff", "imagenet decoder", c, 224 // r,
                        lambda c=c, r=r: [imagenet.HPFFImageNetDecoder(c, r, 224)], n, _HP))
    for c, s, n in ((256, 56, 4_610_792), (512, 28, 4_643_560), (1024, 14, 5_135_336), (2048, 7, 12_278_760)):
        diff = ("ours 2,048 more: the official's BatchNorm widths (256, 256, 512) do not match its "
                "convs (512, 512, 1024), so its forward fails; ours match the convs") if c == 2048 else ""
        rows.append(Row("infopro --hpff", "imagenet head", c, s, lambda c=c: [imagenet.HPFFImageNetHead(c, 1000)], n, _HP, diff))
    return rows


ROWS = _rows() + _rows_2024()


def markdown() -> str:
    """The README table."""
    lines = ["| method | aux net | C | s | ours | official | source | difference |", "|---|---|---:|---:|---:|---:|---|---|"]
    for r in ROWS:
        lines.append(f"| {r.method} | {r.net} | {r.channels} | {r.spatial} | {r.ours():,} | {r.official:,} | "
                     f"{r.source} | {r.difference or 'equal'} |")
    return "\n".join(lines)
