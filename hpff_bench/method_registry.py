"""The methods: one registry, one entry per `--method`, and the only place a method is named.

An entry says what the rest of hpff-bench needs to know without importing torch: the report's
label, colour and marker, whether the method is local (gradient-isolated modules with aux nets)
and whether HiLo and PFF compose with it, and which Method class trains it ("module:Class",
imported when a method is built). A method of your own is one file (docs/extending.md):

    @register_method("mine", label="Mine", local=True, colormap="Greys")
    class Mine(Method): ...

or, for a local method that LocalLearning trains, an aux-net builder registered in
hpff_bench.aux.builders.AUX_NETS plus `add_method(..., cls=LOCAL_LEARNING)`. Installed packages
add theirs through the entry-point group `hpff_bench.methods` (a module that registers on import).
Torch-free: config.py validates --method against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpff_bench.registry import Registry

LOCAL_LEARNING = "hpff_bench.methods.local:LocalLearning"


@dataclass(frozen=True)
class MethodInfo:
    name: str  # the --method value
    label: str  # the report's name, e.g. "DGL"
    cls: str  # "module:Class" of its Method
    local: bool  # gradient-isolated modules, each with its own loss
    hilo: bool = False  # --hilo / --pff-grid / --hpff compose with it (an aux net on a module's output)
    colormap: str | None = None  # matplotlib colormap whose shades tell its variants apart (local methods)
    color: str | None = None  # one fixed colour (global methods)
    marker: str = "o"  # a method drawn in its one colour (global); local variants take the variant markers
    doc: str = ""  # one line for --help

    def method_class(self):
        import importlib

        module, _, attr = self.cls.partition(":")
        return getattr(importlib.import_module(module), attr)


METHODS = Registry("method", "hpff_bench.methods")


def add_method(name: str, *, label: str, local: bool, cls: str, hilo: bool = False, colormap: str | None = None,
               color: str | None = None, marker: str = "o", doc: str = "", source: str | None = None) -> None:
    """Register `--method name`, trained by the Method class at `cls` ("module:Class")."""
    METHODS.add(name, MethodInfo(name, label, cls, local, hilo, colormap, color, marker, doc),
                source or cls.partition(":")[0])


def register_method(name: str, *, label: str, local: bool, hilo: bool = False, colormap: str | None = None,
                    color: str | None = None, marker: str = "o", doc: str = ""):
    """Decorator on a Method class: register it as `--method name`."""

    def deco(method_cls):
        add_method(name, label=label, local=local, cls=f"{method_cls.__module__}:{method_cls.__qualname__}",
                   hilo=hilo, colormap=colormap, color=color, marker=marker, doc=doc)
        return method_cls

    return deco


def method_info(name: str) -> MethodInfo:
    return METHODS[name]


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def global_methods() -> tuple[str, ...]:
    """One gradient-isolated module (bp, gc): what reports draw as reference lines."""
    return tuple(n for n, m in METHODS.items() if not m.local)


def local_methods() -> tuple[str, ...]:
    return tuple(n for n, m in METHODS.items() if m.local)


def hilo_methods() -> tuple[str, ...]:
    return tuple(n for n, m in METHODS.items() if m.hilo)


# the built-in methods, in the order reports list them
add_method("bp", label="BP", local=False, cls="hpff_bench.methods.backprop:Backprop", color="#222222", marker="*",
           doc="end-to-end backprop")
add_method("gc", label="GC", local=False, cls="hpff_bench.methods.backprop:Checkpointed", color="#8c8c8c", marker="X",
           doc="backprop with gradient checkpointing at the split's cuts")
add_method("greedy", label="Greedy SL", local=True, hilo=True, cls=LOCAL_LEARNING, colormap="Purples",
           doc="Greedy SL: a pooled linear classifier per module")
add_method("dgl", label="DGL", local=True, hilo=True, cls=LOCAL_LEARNING, colormap="Blues",
           doc="DGL: mlp-sr aux nets")
add_method("infopro", label="InfoPro", local=True, hilo=True, cls=LOCAL_LEARNING, colormap="Oranges",
           doc="InfoPro: decoder + classifier")
add_method("predsim", label="PredSim", local=True, hilo=True, cls=LOCAL_LEARNING, colormap="Greens",
           doc="PredSim: prediction + similarity matching")
# MAN's aux net is the next block's moving average and AugLocal's the sampled later layers: no
# window or patch form of either exists in their papers or code (hilo=False)
add_method("man", label="MAN", local=True, cls="hpff_bench.methods.man:MAN", colormap="Reds",
           doc="MAN: the next block's moving average + a learnable copy, then InfoPro's heads")
add_method("auglocal", label="AugLocal", local=True, cls="hpff_bench.methods.auglocal:AugLocal", colormap="RdPu",
           doc="AugLocal: aux nets of layers sampled from the later backbone")
