"""Training methods behind one interface (see base.Method)."""

from __future__ import annotations

import torch

from hpff_bench.config import RunConfig
from hpff_bench.methods.auglocal import AugLocal
from hpff_bench.methods.backprop import Backprop, Checkpointed
from hpff_bench.methods.base import Method, StepOutput, synthetic_batch
from hpff_bench.methods.local import LocalLearning
from hpff_bench.methods.man import MAN
from hpff_bench.methods.official import OfficialHiLo

METHOD_CLASSES: dict[str, type[Method]] = {
    "bp": Backprop,
    "gc": Checkpointed,
    "greedy": LocalLearning,
    "dgl": LocalLearning,
    "infopro": LocalLearning,
    "predsim": LocalLearning,
    "man": MAN,
    "auglocal": AugLocal,
}


def build_method(config: RunConfig, device: torch.device | str = "cpu", foreach: bool | None = None) -> Method:
    """Validate `config`, then build its method (backbone, aux nets, optimizer) on `device`."""
    config.validate()
    torch.manual_seed(config.seed)
    cls = OfficialHiLo if config.variant == "official" else METHOD_CLASSES[config.method]
    return cls(config, device, foreach)


__all__ = ["METHOD_CLASSES", "Method", "StepOutput", "build_method", "synthetic_batch"]
