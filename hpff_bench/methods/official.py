"""`--variant official`: the official HPFF CIFAR code's training step (Zeudfish/HPFF,
`Exp on CIFAR_SVHN_STL/network/resnetInfoPro_HPFF.py`), rebuilt from its description so that
"the paper's method" runs the paper's own code path: same aux nets, losses, λ, gradients and,
because the same tensors are held by the same references, the same live bytes.

One step, for modules 0 … n-1 (n = len(module ends); the paper's K is `local_module_num`):
- the stem runs once; the window ("y") path starts from a clone of its output, so the stem is
  trained through the first window. Module 0 has no loss of its own (its x-path forward only
  feeds module 1).
- at every position i = 1 … n-2: the x path runs module i on the detached output of module
  i-1 and feeds the independent aux net (InfoPro: the classifier alone); the y path recomputes
  module i-1 from its own detached input, then module i, and feeds the cascade aux nets
  (InfoPro: the quadrant decoders against the de-normalised image and a second classifier;
  with HiLo alone, InfoPro's own whole-map decoder in their place: aux/official.WholeDecoder).
  One backward of `w_IL·IL + w_CL·(λ1·decoder + λ2·classifier)` per position, with
  λ ratio i/(K-2) for the paper's K. Until it, every graph of the position is alive.
- the last module: x path through module n-1, y path through n-2 and n-1, both closed by the
  network's classifier: `w_IL·CE_x + w_CL·CE_y`, one backward.
Python references are kept as the official code keeps them (the previous position's window
output stays alive while the next one is computed), since they are live bytes too.
The official model de-normalises with a mean and std expanded to the batch and then copied to the
device (`.view(1, 3, 1, 1).expand(batch_size, 3, H, W).cuda()`): a device copy of an expanded
tensor is materialised, so it holds 2 x B x 3 x H x W floats for its whole life (25,165,824 B at
batch 1024 on CIFAR). They are buffers here, made the same way.
The official model also builds aux nets it never uses (a decoder `net_decoder_*` per module,
the aux nets at the first and last module end, an unused `fc`); their parameters are in its
optimizer and so in its memory: they are built here as `unused` (InfoPro only: DGL, Greedy SL
and PredSim have no official HPFF code and run the same execution with their own heads).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from hpff_bench.aux.heads import DGLHead, GreedyHead, PredSimPrediction, PredSimSimilarity
from hpff_bench.aux.losses import cross_entropy, similarity_matching
from hpff_bench.aux.official import OfficialClassifier, QuadrantDecoder, WholeDecoder
from hpff_bench.aux.official import official_init as _official_init
from hpff_bench.methods.base import Method, StepOutput
from hpff_bench.networks.cifar_resnet import WIDTHS
from hpff_bench.official_code import MODULE_ENDS
from hpff_bench.scope import scope


class HeadLoss(nn.Module):
    """An aux net and its loss as one module returning the loss (the official code's shape)."""

    def __init__(self, terms: list[tuple[nn.Module, float, object]]):
        super().__init__()
        self.nets = nn.ModuleList(net for net, _, _ in terms)
        self.coefs = [coef for _, coef, _ in terms]
        self.losses = [loss for _, _, loss in terms]

    def forward(self, x, y):
        return sum(c * loss(net(x), y) for net, c, loss in zip(self.nets, self.coefs, self.losses))


def _decoder(channels: int, image_size: int, pff_grid: int) -> nn.Module:
    """The official code's PFF (quadrant decoders) at n=2; InfoPro's whole-map decoder swapped in
    for HiLo without PFF (n=1), a path the official code does not have."""
    return QuadrantDecoder(channels, image_size) if pff_grid == 2 else WholeDecoder(channels, image_size)


class InfoProCascade(nn.Module):
    """The cascade level's InfoPro aux: decoder (quadrants with PFF) + classifier, λ applied by the caller."""

    def __init__(self, channels: int, image_size: int, kind: str, loss: str, classes: int, pff_grid: int = 2):
        super().__init__()
        self.decoder = _decoder(channels, image_size, pff_grid)
        self.classifier = OfficialClassifier(channels, kind, loss, classes)


class OfficialHiLo(Method):
    def __init__(self, config, device="cpu", foreach=None):
        super().__init__(config, device, foreach)
        c = config
        self.name = c.method
        ends = MODULE_ENDS[c.network][c.k]
        n = len(ends)
        classes, size = c.resolved_num_classes, c.resolved_image_size
        stem, *rest = list(self.modules_[0])
        # module 0 in two parts (a tuple: not registered twice), the stem runs once per step
        self._parts = (stem, nn.Sequential(*rest))
        with torch.device(self.device):
            self.independent = nn.ModuleDict()
            self.cascade = nn.ModuleDict()
            for i in range(1, n - 1):
                self.independent[str(i)] = self._independent_net(ends[i])
                self.cascade[str(i)] = self._cascade_net(ends[i])
                self.aux_nets[f"independent{i}"] = self.independent[str(i)]
                self.aux_nets[f"cascade{i}"] = self.cascade[str(i)]
            self.unused = nn.ModuleDict()
            if c.method == "infopro":
                loss = c.local_loss
                for j, end in enumerate(ends):
                    ch = WIDTHS[end[0] - 1]
                    self.unused[f"net_decoder{j}"] = _decoder(ch, size, c.pff_grid)
                    if j in (0, n - 1):
                        self.unused[f"net_classifier{j}"] = OfficialClassifier(ch, c.aux, loss, classes)
                        self.unused[f"aux{j}"] = InfoProCascade(ch, size, c.aux, loss, classes, c.pff_grid)
                self.unused["fc"] = nn.Linear(WIDTHS[-1], classes)
        for m in [*self.aux_nets.values(), self.unused]:
            _official_init(m)
        shape = (c.batch_size, 3, size, size)
        # `.to(copy=True)` of an expanded tensor allocates every element, as `.cuda()` does
        self.register_buffer("_batch_mean", self._mean.expand(shape).to(copy=True), persistent=False)
        self.register_buffer("_batch_std", self._std.expand(shape).to(copy=True), persistent=False)
        self._build_optimizer()

    @property
    def module_count(self) -> int:
        return len(self.modules_)

    def _spatial(self, stage: int) -> int:
        return self.config.resolved_image_size // (2 ** (stage - 1))

    def _independent_net(self, end) -> nn.Module:
        """IL: the head alone (InfoPro: the classifier; PredSim: its prediction head)."""
        c = self.config
        ch, sp, classes = WIDTHS[end[0] - 1], self._spatial(end[0]), c.resolved_num_classes
        if c.method == "infopro":
            return OfficialClassifier(ch, c.aux, c.local_loss, classes)
        if c.method == "predsim":
            return HeadLoss([(PredSimPrediction(ch, sp, classes), 1.0, cross_entropy)])
        head = DGLHead if c.method == "dgl" else GreedyHead
        return HeadLoss([(head(ch, sp, classes), 1.0, cross_entropy)])

    def _cascade_net(self, end) -> nn.Module:
        """CL: the full aux (InfoPro: decoder + classifier; PredSim: prediction + similarity)."""
        c = self.config
        ch, sp, classes = WIDTHS[end[0] - 1], self._spatial(end[0]), c.resolved_num_classes
        if c.method == "infopro":
            return InfoProCascade(ch, c.resolved_image_size, c.aux, c.local_loss, classes, c.pff_grid)
        if c.method == "predsim":
            b = c.predsim_beta
            return HeadLoss([
                (PredSimPrediction(ch, sp, classes), 1 - b, cross_entropy),
                (PredSimSimilarity(ch, sp), b, functools.partial(similarity_matching, num_classes=classes)),
            ])
        return self._independent_net(end)  # DGL / Greedy SL: one head, its own weights

    # ----- training step -----------------------------------------------------------------
    def _run(self, k: int, x: torch.Tensor, part: nn.Module | None = None) -> torch.Tensor:
        with scope("backbone", k, f"module{k}"):
            self.forward_calls += part is not self._parts[0]
            return (part or self.modules_[k])(x)

    def _aux(self, name: str, fn):
        """Runs fn at once inside the aux scope (so the loop variables its lambda reads are current)."""
        with scope("aux", None, name):
            return fn()

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The official `_image_restore`: through the batch-sized mean and std."""
        n = x.shape[0]
        return x.mul(self._batch_std[:n]) + self._batch_mean[:n]

    def _forward_backward(self, img, target):
        c = self.config
        n = len(self.modules_)
        wx, wy = c.w_independent, c.w_cascade
        stem, first_rest = self._parts
        x = self._run(0, img, stem)
        y = torch.clone(x)  # the window path starts here: the stem is trained through it
        x = self._run(0, x, first_rest)
        x = x.detach()  # module 0 has no loss of its own
        for i in range(1, n - 1):
            x = self._run(i, x)
            y = self._run(i - 1, y, first_rest if i == 1 else None)
            z = self._run(i, y)
            lam1, lam2 = c.lambdas.at_official(i, c.k)
            loss_x = self._aux(f"aux/independent/{i}", lambda: self.independent[str(i)](x, target))  # noqa: B023
            if c.method == "infopro":
                cl = self.cascade[str(i)]
                loss_y1 = self._aux(f"aux/cascade/{i}", lambda: cl.decoder(z, self.denormalize(img)))  # noqa: B023
                loss_y2 = self._aux(f"aux/cascade/{i}", lambda: cl.classifier(z, target))  # noqa: B023
                loss_y = lam1 * loss_y1 + lam2 * loss_y2
            else:
                loss_y = self._aux(f"aux/cascade/{i}", lambda: self.cascade[str(i)](z, target))  # noqa: B023
            loss = wx * loss_x + wy * loss_y
            loss.backward()
            x = x.detach()
            y = y.detach()
        x = self._run(n - 1, x)
        y = self._run(n - 2, y, first_rest if n == 2 else None)
        y = self._run(n - 1, y)
        with scope("loss"):
            loss_x = cross_entropy(x, target)
            loss_y = cross_entropy(y, target)
            loss = wx * loss_x + wy * loss_y
        loss.backward()  # as every position's: outside any scope, so its FLOPs go where its nodes were made
        return StepOutput(loss_y.detach(), y.detach())
