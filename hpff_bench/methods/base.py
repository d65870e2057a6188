"""The one interface every training method implements.

A Method owns the backbone (cut into modules by the split), its auxiliary nets and one SGD
optimizer over all of them. `train_step` is a whole training step: zero_grad, every forward
and backward, optimizer.step. Everything downstream (profiling, prediction, training,
benchmarks) drives methods only through this interface.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake

from hpff_bench.config import RunConfig
from hpff_bench.data.normalization import MEAN_STD
from hpff_bench.networks import get_network
from hpff_bench.networks.splits import Split, module_unit_ranges, split_of
from hpff_bench.scope import scope


class StepOutput(NamedTuple):
    loss: torch.Tensor  # 0-d, detached: the network's final cross-entropy
    logits: torch.Tensor  # detached


class Method(nn.Module):
    name = "method"

    def __init__(self, config: RunConfig, device: torch.device | str = "cpu", foreach: bool | None = None):
        super().__init__()
        self.config = config
        self.device = torch.device(device)
        self.split: Split = split_of(config)
        spec = get_network(config.network)
        with torch.device(self.device):
            network = spec.build(config.resolved_num_classes)
        units = list(network.units)
        self.unit_ranges = module_unit_ranges(len(units), self.split.cuts)
        self.modules_ = nn.ModuleList(nn.Sequential(*(units[u] for u in r)) for r in self.unit_ranges)
        self.aux_nets = nn.ModuleDict()
        self.forward_calls = 0
        self._foreach = foreach
        mean, std = MEAN_STD[config.dataset]
        self.register_buffer("_mean", torch.tensor(mean, device=self.device).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std, device=self.device).view(1, 3, 1, 1), persistent=False)
        self.optimizer: torch.optim.Optimizer | None = None
        self._amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.precision]
        self._scale: float | torch.Tensor = 1.0
        self.grad_sync = None  # set by hpff_bench.distributed.attach under torchrun

    # ----- construction helpers ----------------------------------------------------------
    def _build_optimizer(self) -> None:
        c = self.config
        self.optimizer = torch.optim.SGD(
            self.parameters(),
            lr=c.lr,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
            nesterov=c.momentum > 0,
            foreach=self._foreach,
        )
        # fp16 needs loss scaling; the scaler's inf checks read values, impossible on fake
        # tensors, so predictions leave it out (its state is a few scalars).
        fake = any(is_fake(p) for p in self.parameters())
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.config.precision == "fp16" and not fake
        )

    def autocast(self):
        """Mixed-precision context for forwards (a no-op in fp32)."""
        return torch.autocast(
            self.device.type, dtype=self._amp_dtype or torch.float32, enabled=self._amp_dtype is not None
        )

    @property
    def module_count(self) -> int:
        """Real number of gradient-isolated modules."""
        return 1

    @property
    def split_modules(self) -> int:
        """Modules of the split (= checkpoint segments for gc)."""
        return len(self.modules_)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.modules_.parameters())

    def aux_parameters(self) -> list[nn.Parameter]:
        return list(self.aux_nets.parameters())

    def reset_counters(self) -> None:
        self.forward_calls = 0
        for aux in self.aux_nets.values():
            aux.forward_calls = 0

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The image in [0, 1], InfoPro's reconstruction target."""
        return x * self._std + self._mean

    def run_module(self, k: int, x: torch.Tensor) -> torch.Tensor:
        with scope("backbone", k, f"module{k}"), self.autocast():
            self.forward_calls += 1
            return self.modules_[k](x)

    # ----- the interface -----------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        out = self.compute_gradients(x, y)
        with scope("optimizer"):
            if self.grad_sync is not None:  # once per step, after every local backward
                self.grad_sync()
            if self.scaler.is_enabled():
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        return out

    def compute_gradients(self, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        """A training step without the optimizer step: every parameter's .grad is left set."""
        if not self.training:  # predict() leaves eval mode; train() walks every submodule (~3 ms
            self.train()       # per step for DGL+HPFF's ~800 on the CPU), so only when it changes
        with scope("optimizer"):
            self.optimizer.zero_grad(set_to_none=True)
            # every backward seed is multiplied by the loss scale (1 unless fp16 on a real device)
            if self.scaler.is_enabled():
                self._scale = self.scaler.scale(torch.ones((), device=self.device))
        return self._forward_backward(x, y)

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.eval()
        with self.autocast():
            for module in self.modules_:
                x = module(x)
        return x.float()


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """An autocast output in float32 for its loss; float32 and float64 tensors as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def synthetic_batch(
    config: RunConfig, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised batch of uniform-noise images with random labels: profiling needs no data."""
    size = config.resolved_image_size
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    images = torch.rand(config.batch_size, 3, size, size, generator=generator)
    labels = torch.randint(0, config.resolved_num_classes, (config.batch_size,), generator=generator)
    mean, std = MEAN_STD[config.dataset]
    x = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.to(device), labels.to(device)
