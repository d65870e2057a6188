"""Networks from a callable that returns a model: `--network PKG.MODULE:CALLABLE`, the
`hpff_bench.networks` entry points and `@register_network`.

Importing the module runs the user's code: naming it is the user's explicit choice. The callable
is called with `num_classes=` when its signature accepts it, and the model it returns is cut
into units by structure (networks/cutting.py). It is first built once on the meta device (no
memory, no compute) to find its units and stages, so a bad callable fails before any real
model is built. Under a fake-tensor prediction the model is built on the meta device and its
tensors made fake; a callable that computes with tensors while it builds (torchvision's RegNet
derives its widths so) is built on the CPU then, and its tensors replaced.
"""

from __future__ import annotations

import functools
import importlib

import torch
from torch import nn
from torch._subclasses.fake_tensor import unset_fake_temporarily

from hpff_bench.errors import ConfigError
from hpff_bench.networks.cutting import accepts_num_classes, as_units, unit_input_ranks
from hpff_bench.networks.units import NetworkSpec, UnitNetwork

IMPORT_HELP = ("PKG.MODULE:CALLABLE imports PKG.MODULE (running its code: your explicit choice) and "
               "calls CALLABLE(num_classes=...) for the model, which is cut into units by structure")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def resolve_callable(spec: str):
    """`pkg.module:attr.path` -> the object; ConfigError (one line) for a bad spec."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ConfigError(f"--network {spec!r}: a network from your code is PKG.MODULE:CALLABLE, e.g. "
                          "torchvision.models:mobilenet_v2")
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001  (any failure of the user's module)
        raise ConfigError(f"--network {spec}: cannot import module {module_name!r} ({_one_line(e)})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"--network {spec}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"--network {spec}: {attr} is not callable (it is of type {type(obj).__name__})")
    return obj


class CallableNetwork:
    """A NetworkSpec's interface for a model builder: stages and units from one meta build."""

    family = "any"

    def __init__(self, name: str, fn):
        self.name = name
        self.fn = fn

    @functools.cached_property
    def _probe(self) -> tuple[NetworkSpec, int | None, tuple[str, ...] | None]:
        net = self._cut(self._construct(None, meta=True), None)
        blocks = net.stage_blocks if net.stage_blocks is not None else (len(net.units) - 2,)
        return NetworkSpec(self.name, tuple(blocks), self.build, "any"), net.head_from, net.names

    @property
    def unit_names(self) -> tuple[str, ...] | None:
        """The module each unit starts with (traced networks; None for given unit lists)."""
        return self._probe[2]

    @property
    def stage_blocks(self) -> tuple[int, ...]:
        return self._probe[0].stage_blocks

    @property
    def num_blocks(self) -> int:
        return self._probe[0].num_blocks

    def unit_index(self, stage: int, block: int) -> int:
        return self._probe[0].unit_index(stage, block)

    def unit_name(self, unit: int) -> str:
        return self._probe[0].unit_name(unit)

    def build(self, num_classes: int) -> UnitNetwork:
        return self._cut(self._construct(num_classes), self._probe[1])

    def _cut(self, model, head_from: int | None) -> UnitNetwork:
        net = as_units(model, self.name, head_from)
        net.spec_name = self.name
        return net

    def _construct(self, num_classes: int | None, meta: bool = False):
        """The callable's model: as it builds it, or with meta tensors (meta=True, or the default
        device is meta) or fake ones (inside a fake-tensor mode)."""
        fake = torch._guards.detect_fake_mode()
        target = torch.get_default_device()
        if not (meta or fake is not None or target.type == "meta"):
            return self._call(num_classes)
        with unset_fake_temporarily():
            try:
                with torch.device("meta"):
                    model = self._call(num_classes, wrap=False)
            except Exception:  # noqa: BLE001  (builds that compute with tensors: build on the CPU)
                with torch.device("cpu"):
                    model = self._call(num_classes)
                model = _to_empty(model, "meta")
        if fake is not None and not meta:
            with fake:
                return _to_empty(model, target)
        return model

    def _call(self, num_classes: int | None, wrap: bool = True):
        kwargs = {"num_classes": num_classes} if num_classes is not None and accepts_num_classes(self.fn) else {}
        try:
            model = self.fn(**kwargs)
        except Exception as e:  # noqa: BLE001  (the user's code)
            if not wrap:
                raise
            raise ConfigError(f"--network {self.name}: calling it failed ({_one_line(e)})") from None
        if not isinstance(model, (nn.Module, list, tuple)):
            raise ConfigError(f"--network {self.name} returned {type(model).__name__}, not an nn.Module "
                              "(or a list of modules)")
        return model

    def check(self, num_classes: int, image_size: int) -> None:
        """ConfigError unless the network takes a [B, 3, size, size] batch and returns [B, num_classes]."""
        _check(self, num_classes, image_size)


@functools.lru_cache(maxsize=64)
def _check(spec: CallableNetwork, num_classes: int, image_size: int) -> None:
    net = spec._cut(spec._construct(num_classes, meta=True), spec._probe[1])
    try:
        with unset_fake_temporarily(), torch.device("meta"):
            out = net(torch.empty(2, 3, image_size, image_size))
    except Exception as e:  # noqa: BLE001  (the user's model at this size)
        raise ConfigError(f"--network {spec.name} does not run on {image_size}x{image_size} images "
                          f"({_one_line(e)}); choose --image-size (or --dataset) for it") from None
    if tuple(out.shape) != (2, num_classes):
        got = "x".join(map(str, out.shape[1:]))
        hint = ("pass --num-classes to match it" if not accepts_num_classes(spec.fn)
                else "its builder ignores num_classes=")
        raise ConfigError(f"--network {spec.name} returns {got} outputs per image, the dataset has "
                          f"{num_classes} classes; {hint}")


def _to_empty(model, device):
    if isinstance(model, nn.Module):
        return model.to_empty(device=device)
    return [m.to_empty(device=device) for m in model]


@functools.cache
def imported_network(spec: str) -> CallableNetwork:
    """The network named by `PKG.MODULE:CALLABLE`, probed (ConfigError for a bad spec)."""
    net = CallableNetwork(spec, resolve_callable(spec))
    net.num_blocks  # noqa: B018  (probe now: errors before any real model is built)
    return net


__all__ = ["IMPORT_HELP", "CallableNetwork", "imported_network", "resolve_callable", "unit_input_ranks"]
