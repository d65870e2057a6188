"""Training methods behind one interface (see base.Method); which class trains which --method is
hpff_bench.method_registry's."""

from __future__ import annotations

import torch

from hpff_bench.config import RunConfig
from hpff_bench.method_registry import METHODS
from hpff_bench.methods.base import Method, StepOutput, synthetic_batch
from hpff_bench.methods.official import OfficialHiLo


def build_method(config: RunConfig, device: torch.device | str = "cpu", foreach: bool | None = None) -> Method:
    """Validate `config`, then build its method (backbone, aux nets, optimizer) on `device`."""
    config.validate()
    torch.manual_seed(config.seed)
    cls = OfficialHiLo if config.variant == "official" else METHODS[config.method].method_class()
    return cls(config, device, foreach)


__all__ = ["Method", "StepOutput", "build_method", "synthetic_batch"]
