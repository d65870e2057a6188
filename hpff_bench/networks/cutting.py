"""Cutting any nn.Module into units (stem, blocks, head) by its structure.

A model is taken as is when it already is a unit list: a UnitNetwork, a list/tuple/ModuleList
of modules, or a module with a `units()` method (first = stem, last = head, one stage).

Otherwise it is traced with torch.fx, with every *block* as one opaque call:
- containers (nn.Sequential and its subclasses, ModuleList, ModuleDict) are opened;
- a module that holds a chain of blocks (a container with two or more children that have
  grandchildren, like ViT's `encoder.layers`) is opened;
- anything else is a block (a ResNet Bottleneck, an InvertedResidual, an MBConv, a CNBlock,
  a Swin or ViT encoder block) or a single layer.
A unit starts at each block and at each single layer with weights that is not a
normalisation layer (a VGG conv or linear); norms, activations, pools, dropout, reshapes and
functional ops join the unit before them. A cut between units is kept only where exactly one
tensor flows across it (a residual around several calls makes the cut impossible, so those
units merge). Units whose input is a flat [B, D] vector (after the global pool) join the
head, so every cut sees a feature map or tokens.

Stages (the STAGE of `--cuts STAGE.BLOCK`) are runs of blocks whose first call has the same
parent module (ResNet's layer1..4, EfficientNet's and Swin's feature stages).
"""

from __future__ import annotations

import inspect

import torch
import torch.fx as fx
from torch import nn

from hpff_bench.errors import ConfigError
from hpff_bench.networks.units import UnitNetwork

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)
# the image sizes a model is probed at for the head's boundary (a meta forward, no memory): the
# datasets' (ImageNet first, as torchvision's models expect), then the smallest --image-size
PROBE_SIZES = (224, 32, 96, 8)

HOW = ("return an nn.Sequential of blocks, or give the model a units() method returning its "
       "modules in order (stem first, head last)")


def _has_grandchildren(m: nn.Module) -> bool:
    return any(next(c.children(), None) is not None for c in m.children())


def _holds_chain(m: nn.Module) -> bool:
    """A container child with 2+ children that hold modules of modules (blocks, not a
    conv-norm-activation stack): m is a network part, not a block."""
    return any(isinstance(c, _CONTAINERS) and sum(map(_has_grandchildren, c.children())) >= 2 for c in m.children())


def _is_leaf(m: nn.Module) -> bool:
    return not isinstance(m, _CONTAINERS) and not _holds_chain(m)


def _starts_unit(m: nn.Module) -> bool:
    """A block, or a single layer with weights that is not a norm."""
    if next(m.children(), None) is not None:
        return True
    return any(True for _ in m.parameters()) and not isinstance(m, _NORMS)


class _BlockTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_leaf(m)


def as_units(model, name: str, head_from: int | None = None) -> UnitNetwork:
    """`model` as a UnitNetwork; ConfigError (one line: why, and how to give units) if it cannot be cut.

    `head_from`: where the head begins among the traced units, as found for this network
    before (the net's `head_from`); None finds it by a meta forward, so `model` must then be
    on the meta device."""
    if isinstance(model, UnitNetwork):
        return model
    if isinstance(model, (list, tuple, nn.ModuleList)):
        return _given(list(model), name, "the list it returns")
    if isinstance(model, nn.Module) and callable(getattr(model, "units", None)) and not isinstance(model.units, nn.Module):
        return _given(list(model.units()), name, "its units()")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--network {name} returned {type(model).__name__}, not an nn.Module (or a list of them)")
    return _traced(model, name, head_from)


def _given(units: list, name: str, what: str) -> UnitNetwork:
    bad = [type(u).__name__ for u in units if not isinstance(u, nn.Module)]
    if bad or len(units) < 2:
        why = f"has {bad[0]}, not an nn.Module" if bad else f"has {len(units)} module(s); a network needs a stem and a head"
        raise ConfigError(f"--network {name}: {what} {why}")
    return UnitNetwork(units, name, stage_blocks=(len(units) - 2,) if len(units) > 2 else ())


def _traced(model: nn.Module, name: str, head_from: int | None) -> UnitNetwork:
    try:
        graph = _BlockTracer().trace(model)
    except Exception as e:  # noqa: BLE001  (any tracing failure: the user's forward)
        if isinstance(model, nn.Sequential):  # a plain chain needs no trace
            return _sequential(model, name)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--network {name}: cannot cut {type(model).__name__} into units: torch.fx cannot "
                          f"trace its forward ({msg[:160]}); {HOW}") from None
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    output = next(n for n in graph.nodes if n.op == "output")
    nodes = [n for n in graph.nodes if n.op != "placeholder"]  # the output node last
    if len(inputs) != 1 or not isinstance(output.args[0], fx.Node):
        raise ConfigError(f"--network {name}: cannot cut {type(model).__name__} into units: its forward takes "
                          f"{len(inputs)} input(s) and must take one image batch and return one tensor; {HOW}")
    modules = dict(model.named_modules())
    starts = [i for i, n in enumerate(nodes) if n.op == "call_module" and _starts_unit(modules[n.target])]
    if not starts:
        raise ConfigError(f"--network {name}: cannot cut {type(model).__name__} into units: its forward calls "
                          f"no layer with weights; {HOW}")
    bounds = [0] + [s for s in starts[1:] if _crossing(nodes, s, inputs[0]) is not None]
    segments = [nodes[a:b] for a, b in zip(bounds, bounds[1:] + [len(nodes) - 1])]
    anchors = [_anchor(seg, modules) for seg in segments]
    units = [_segment_module(model, seg, _crossing(nodes, nodes.index(seg[0]), inputs[0]) if k else inputs[0],
                             _crossing(nodes, nodes.index(segments[k + 1][0]), inputs[0]) if k + 1 < len(segments)
                             else output.args[0])
             for k, seg in enumerate(segments)]
    if head_from is None:
        head_from = _flat_from(model, units, name)
    if head_from < 2:
        raise ConfigError(f"--network {name}: cannot cut {type(model).__name__} into units: it has "
                          f"{head_from} unit(s) before its classifier; a network needs a stem and a head; {HOW}")
    head = units[head_from] if head_from == len(units) - 1 else nn.Sequential(*units[head_from:])
    units = units[:head_from] + [head]
    parents = [a.rpartition(".")[0] for a in anchors[1:head_from]]
    stages: list[int] = []
    for i, p in enumerate(parents):
        if i and p == parents[i - 1]:
            stages[-1] += 1
        else:
            stages.append(1)
    net = UnitNetwork(units, name, stage_blocks=tuple(stages), names=tuple(anchors[:head_from]) + ("head",))
    net.head_from = head_from
    return net


def _sequential(model: nn.Sequential, name: str) -> UnitNetwork:
    return _given(list(model.children()), name, f"the nn.Sequential {type(model).__name__}")


def _crossing(nodes: list[fx.Node], s: int, x: fx.Node) -> fx.Node | None:
    """The one tensor value made before nodes[s] and used from nodes[s] on (the graph's output
    node included, as the last of `nodes`), or None."""
    before = set(nodes[:s]) | {x}
    live = {a for n in nodes[s:] for a in n.all_input_nodes if a in before and a.op != "get_attr"}
    return next(iter(live)) if len(live) == 1 else None


def _anchor(seg: list[fx.Node], modules: dict) -> str:
    first = next((n for n in seg if n.op == "call_module" and _starts_unit(modules[n.target])), None)
    return first.target if first is not None else seg[0].name


def _segment_module(model: nn.Module, seg: list[fx.Node], inp: fx.Node, out: fx.Node) -> fx.GraphModule:
    """The nodes of one segment as a module of one input and one output (params shared with model)."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {inp: g.placeholder("x")}
    inside = set(seg)

    def arg(n: fx.Node) -> fx.Node:
        if n not in env:  # a parameter or buffer read by an earlier segment too: read it again
            assert n.op == "get_attr" and n not in inside, n
            env[n] = g.get_attr(n.target)
        return env[n]

    for n in seg:
        if n.op == "get_attr":
            env[n] = g.get_attr(n.target)
        else:
            env[n] = g.node_copy(n, arg)
    g.output(arg(out) if out not in env else env[out])
    gm = fx.GraphModule(model, g, class_name=type(model).__name__ + "Unit")
    return gm


def _flat_from(model: nn.Module, units: list[nn.Module], name: str) -> int:
    """Index of the first unit whose input is a flat [B, D] vector (or the last unit), from a
    meta forward at the first probe size the model accepts."""
    errors = []
    for size in PROBE_SIZES:
        try:
            shapes = unit_input_ranks(units, size)
        except Exception as e:  # noqa: BLE001  (the user's model at this size)
            errors.append(f"{size}x{size}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__}")
            continue
        for i, rank in enumerate(shapes):
            if i > 0 and rank <= 2:
                return i
        return len(units) - 1
    raise ConfigError(f"--network {name}: a forward of {type(model).__name__} on a meta image fails ({'; '.join(errors)})")


def unit_input_ranks(units: list[nn.Module], size: int) -> list[int]:
    """The rank of each unit's input on a [2, 3, size, size] meta batch (no memory, no compute)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily(), torch.device("meta"):
        h = torch.empty(2, 3, size, size)  # 2: training-mode BatchNorm refuses one value per channel (1x1 maps)
        ranks = []
        for u in units:
            ranks.append(h.dim())
            h = u(h)
    return ranks


def accepts_num_classes(fn) -> bool:
    """Whether `fn`'s signature takes `num_classes=` (by name, or through **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params)
