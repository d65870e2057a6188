"""Networks as flat sequences of units (stem, blocks, head) that a split can cut anywhere.

One registry (`NETWORKS`): the built-in ResNets, networks added with `@register_network`, and
those of installed packages (entry-point group `hpff_bench.networks`). Any other model is named
as `PKG.MODULE:CALLABLE` (networks/from_callable.py) and cut into units by structure.
"""

from __future__ import annotations

from hpff_bench.errors import ConfigError
from hpff_bench.networks.cifar_resnet import CIFAR_RESNET_DEPTHS, cifar_resnet
from hpff_bench.networks.from_callable import CallableNetwork, imported_network
from hpff_bench.networks.torchvision_resnet import TORCHVISION_RESNETS, torchvision_resnet
from hpff_bench.networks.units import NetworkSpec, UnitNetwork
from hpff_bench.registry import Registry


def _adapt(name: str, obj):
    """An entry point names a NetworkSpec, or a callable returning a model (cut by structure)."""
    return obj if isinstance(obj, (NetworkSpec, CallableNetwork)) else CallableNetwork(name, obj)


NETWORKS = Registry("network", "hpff_bench.networks", _adapt)
for _d in CIFAR_RESNET_DEPTHS:
    NETWORKS.add(f"resnet{_d}", NetworkSpec(
        name=f"resnet{_d}",
        stage_blocks=((_d - 2) // 6,) * 3,
        build=lambda num_classes, d=_d: cifar_resnet(d, num_classes),
    ), "hpff_bench.networks.cifar_resnet (He et al. 2016, CIFAR)")
for _name, _blocks in TORCHVISION_RESNETS.items():
    NETWORKS.add(_name, NetworkSpec(
        name=_name,
        stage_blocks=_blocks,
        build=lambda num_classes, name=_name: torchvision_resnet(name, num_classes),
        family="imagenet",
    ), "hpff_bench.networks.torchvision_resnet (torchvision)")


def register_network(name: str | None = None):
    """Decorator: register a callable returning a model (called with `num_classes=` when it
    takes it) as network `name` (default: the callable's name); it is cut by structure."""

    def deco(fn):
        NETWORKS.add(name or fn.__name__, CallableNetwork(name or fn.__name__, fn), fn.__module__)
        return fn

    return deco


def get_network(name: str) -> NetworkSpec | CallableNetwork:
    """A registered network, or `PKG.MODULE:CALLABLE` imported; ConfigError naming what is allowed."""
    if isinstance(name, str) and name in NETWORKS:
        return NETWORKS[name]
    if isinstance(name, str) and ":" in name:
        return imported_network(name)
    raise ConfigError(f"unknown --network {name!r}; allowed: {', '.join(NETWORKS)}, or PKG.MODULE:CALLABLE "
                      "(a function of yours returning an nn.Module)")


def build_network(name: str, num_classes: int) -> UnitNetwork:
    return get_network(name).build(num_classes)


__all__ = ["NETWORKS", "NetworkSpec", "UnitNetwork", "build_network", "get_network", "register_network"]
