"""MAN, the Momentum Auxiliary Network (Su et al., ECCV 2024), as its official CIFAR code trains
it (JunhaoSu0/MAN, `Exp on CIFAR-SVHN-STL/networks/resnetInfoPro_MAN.py`, `train.py`).

The aux net of module j (every module but the last) starts with the block that follows the
module in the backbone, twice: an exponential moving average of that block's parameters (no
gradient; after module j's backward, EMA <- m·EMA + (1-m)·block with the block's values of
this step, before the optimizer step) and a learnable copy of the block's shape with its own
weights, the "learnable bias" that corrects the EMA's feature mismatch; their outputs are
summed. On that sum run InfoPro's two heads: the decoder (BCE against the de-normalised image)
and the classifier (`--aux`, `--local-loss`), weighted λ1, λ2. One backward per module, then its
output is detached. The last module is closed by the network's classifier.

As in the official code: the two blocks are initialised independently of the block they follow
(its init loop draws every conv anew after the copies are made); the λ ratio is `stage / (K - 2)`
with `stage` the following block's stage (1-3) and K the paper's `local_module_num`, not the
module index (InfoPro's), so with `--ixx-2 0 --ixy-2 0` at K=16 the weights fall by stage only.
The official model also builds a decoder and a classifier at every block of stages 1-3, and an
`fc`, that its forward never runs: they are left out here (tests/test_official_oracle.py counts
them), as are its batch-sized copies of the de-normalisation mean and std.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hpff_bench.aux.losses import LOCAL_LOSSES
from hpff_bench.aux.man import MomentumAux
from hpff_bench.methods.base import Method, StepOutput, full_precision
from hpff_bench.networks import get_network
from hpff_bench.scope import scope


def _stage_of(stage_blocks: tuple[int, ...], unit: int) -> int:
    """The stage (1, 2, …) of block unit `unit` (units count the stem as 0)."""
    u = unit - 1
    for stage, blocks in enumerate(stage_blocks, start=1):
        if u < blocks:
            return stage
        u -= blocks
    raise IndexError(unit)


class MAN(Method):
    def __init__(self, config, device="cpu", foreach=None):
        super().__init__(config, device, foreach)
        c = config
        self.name = c.method
        spec = get_network(c.network)
        n = len(self.modules_)
        self._stage = []  # the stage of the block that follows each module: its λ ratio's numerator
        with torch.device(self.device):
            for j in range(n - 1):
                block = self.modules_[j + 1][0]
                self.aux_nets[f"independent{j}"] = MomentumAux(
                    block, c.resolved_image_size, c.aux, c.local_loss, c.resolved_num_classes)
                self._stage.append(_stage_of(spec.stage_blocks, self.unit_ranges[j + 1].start))
        self._build_optimizer()

    @property
    def module_count(self) -> int:
        return len(self.modules_)

    def lambdas(self, j: int) -> tuple[float, float]:
        """λ1 (decoder), λ2 (classifier) of module j: ratio stage / (K - 2), the official code's."""
        return self.config.lambdas.at_official(self._stage[j], self.config.k)

    def _forward_backward(self, x, y):
        c = self.config
        n = len(self.modules_)
        loss_fn = LOCAL_LOSSES[c.local_loss]
        h = x
        for j in range(n - 1):
            out = self.run_module(j, h)
            aux = self.aux_nets[f"independent{j}"]
            lam1, lam2 = self.lambdas(j)
            with scope("aux", None, f"aux/independent/{j}"):
                # in the official order, which sets what is live at the aux step's peak: the sum,
                # the target (made anew at every module, before the decoder runs, as its
                # `decoder(y, self._image_restore(img))`), decoder and its loss, then classifier
                with self.autocast():
                    z = aux(out)
                target = self.denormalize(x)
                with self.autocast():
                    image = aux.decoder(z)
                loss_ixx = F.binary_cross_entropy(full_precision(image), target)
                del image, target
                with self.autocast():
                    logits = aux.classifier.head(z)
                loss = lam1 * loss_ixx + lam2 * loss_fn(full_precision(logits), y)
                (loss * self._scale).backward()
                del z, logits, loss, loss_ixx
            h = out.detach()
            del out
            with scope("aux", None, f"aux/independent/{j}"):
                aux.update_ema(self.modules_[j + 1][0], c.man_momentum)
        out = self.run_module(n - 1, h)
        with scope("loss"):
            loss = F.cross_entropy(full_precision(out), y)
            (loss * self._scale).backward()
        return StepOutput(loss.detach(), out.detach())
