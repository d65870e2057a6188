"""AugLocal (Ma et al., "Scaling Supervised Local Learning with Augmented Auxiliary Networks",
ICLR 2024) as its official CIFAR code trains it (ChenxiangMA/AugLocal `train.py` with
`--rule AugLocal`, `networks/resnet.py` LocalResNet).

Its `--local_module_num K` with `--aux_net_depth d` trains K - d modules: one per unit from the
stem, the last holding the remaining units and the head (networks/splits.py, auglocal_split).
Module j's aux net mirrors d units sampled uniformly from those after it (aux/auglocal.py;
with `--pyramid`, d shrinks towards the later modules). Its loss is cross-entropy weighted
ixy_r = ixy_1·(1-r) + ixy_2·r with ixy_1 = ixy_2 = 1 (train.py's defaults) and r = j / (m-2)
for m = K - d modules; the code's other term is multiplied by ixx_r = 0. One backward per
module, then its output is detached; the last module is closed by the network's classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hpff_bench.aux.auglocal import AugLocalAuxNet, pyramid_depths, unit_widths
from hpff_bench.config import InfoProLambdas
from hpff_bench.methods.base import Method, StepOutput, full_precision
from hpff_bench.networks import get_network
from hpff_bench.scope import scope

# train.py's defaults (the README commands set neither): the task term only, weight 1 throughout
_WEIGHTS = InfoProLambdas(ixx_1=0.0, ixy_1=1.0, ixx_2=0.0, ixy_2=1.0)


class AugLocal(Method):
    def __init__(self, config, device="cpu", foreach=None):
        super().__init__(config, device, foreach)
        c = config
        self.name = c.method
        n = len(self.modules_)
        widths = unit_widths(get_network(c.network).stage_blocks)
        self.depths = pyramid_depths(c.aux_net_depth, n, c.pyramid_coeff) if c.pyramid else [c.aux_net_depth] * (n - 1)
        with torch.device(self.device):
            for j in range(n - 1):
                aux = AugLocalAuxNet(widths, self.unit_ranges[j].stop - 1, self.depths[j], c.resolved_num_classes)
                aux.forward_calls = 0
                self.aux_nets[f"independent{j}"] = aux
        self._build_optimizer()

    @property
    def module_count(self) -> int:
        return len(self.modules_)

    def weights(self, j: int) -> tuple[float, float]:
        """(ixx_r, ixy_r) of module j, as the official forward computes them."""
        return _WEIGHTS.at_official(j, len(self.modules_))

    def _forward_backward(self, x, y):
        n = len(self.modules_)
        h = x
        for j in range(n - 1):
            out = self.run_module(j, h)
            aux = self.aux_nets[f"independent{j}"]
            _, ixy = self.weights(j)
            with scope("aux", None, f"aux/independent/{j}"):
                with self.autocast():
                    logits = aux(out)
                aux.forward_calls += 1
                loss = ixy * F.cross_entropy(full_precision(logits), y)
                (loss * self._scale).backward()
                del logits, loss
            h = out.detach()
            del out
        out = self.run_module(n - 1, h)
        with scope("loss"):
            loss = F.cross_entropy(full_precision(out), y)
            (loss * self._scale).backward()
        return StepOutput(loss.detach(), out.detach())
