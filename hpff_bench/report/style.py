"""One colour, one marker and one order per method, and memory units, for every figure and table.

A method is identified by its label (`RunConfig.label`, e.g. "InfoPro+HPFF (n=2)"). The colour
depends only on the label, never on which other methods a report happens to contain, so the
same method looks the same in every figure of every report: the base method picks a hue (its
entry in hpff_bench.method_registry: BP black, GC grey, Greedy SL purple, DGL blue, InfoPro
orange, PredSim green, MAN red, AugLocal magenta) and the HPFF variant picks the shade (plain
lightest ... full HPFF darkest).
"""

from __future__ import annotations

import functools
import re

import matplotlib.colors as mcolors
from matplotlib import colormaps

from hpff_bench.memory.tracker import CATEGORIES
from hpff_bench.method_registry import METHODS

# variant key -> position (order within a base method, and shade)
VARIANTS = ("", "PFF", "HiLo (CL)", "HiLo", "HPFF (CL)", "HPFF", "HiLo (official)", "HPFF (official)")
_EXTRA = ("#2ca02c", "#d62728", "#17becf", "#bcbd22", "#e377c2", "#8c564b")


def _methods() -> dict:
    """label -> MethodInfo, in the registry's order (hpff_bench.method_registry: label, colour, marker)."""
    return {m.label: m for m in METHODS.values()}


def bases() -> tuple[str, ...]:
    """The base methods' labels, in the order every table and figure lists them."""
    return tuple(_methods())


@functools.lru_cache(maxsize=8)
def _label_re(labels: tuple[str, ...]) -> re.Pattern:
    return re.compile(
        rf"^(?P<base>{'|'.join(map(re.escape, sorted(labels, key=len, reverse=True)))})"
        r"(?:\+(?P<variant>HPFF|HiLo|PFF))?"
        r"(?: \(n=(?P<n>\d+)\))?"
        r"(?P<cl> \(CL\))?"
        r"(?P<official> \(official code\))?$"
    )


# breakdown categories in stacking order: the tracker's own (memory.breakdown_bytes)
BREAKDOWN = CATEGORIES
BREAKDOWN_LABELS = {
    "parameters": "parameters",
    "gradients": "gradients",
    "optimizer": "optimizer state",
    "inputs": "inputs",
    "backbone_activations": "backbone activations",
    "aux_activations": "aux-net activations",
    "other": "other",
}
BREAKDOWN_COLORS = dict(
    zip(BREAKDOWN, ("#4c72b0", "#8172b3", "#64b5cd", "#937860", "#dd8452", "#55a868", "#c7c7c7"))
)

# how each memory source is drawn: (hatch, legend text)
SOURCES = {
    "cuda-allocator": ("", "measured (CUDA allocator)"),
    "tensor-tracker": ("....", "measured (live-tensor tracker)"),
    "predicted": ("////", "predicted (fake tensors)"),
}

MIB = 2**20
GIB = 2**30


def parse_label(label: str) -> tuple[str, str, int]:
    """(base, variant key, patch grid n) of a method label; unknown labels -> (label, '', 1)."""
    m = _label_re(bases()).match(str(label or "").split(" [")[0])
    if not m:
        return (label or "?", "", 1)
    variant = m.group("variant") or ""
    if m.group("cl") and variant in ("HiLo", "HPFF"):
        variant = f"{variant} (CL)"
    if m.group("official") and variant in ("HiLo", "HPFF"):
        variant = f"{variant} (official)"  # the official code's path: same family, its own shade
    return m.group("base"), variant, int(m.group("n") or 1)


def method_sort_key(label: str) -> tuple:
    base, variant, n = parse_label(label)
    order = bases()
    if base in order and variant in VARIANTS:
        return (0, order.index(base), VARIANTS.index(variant), n, label)
    return (1, 0, 0, 0, label)


def order_methods(labels) -> list[str]:
    """Labels in the one order used everywhere: BP, GC, Greedy SL, DGL, InfoPro, variants after."""
    return sorted({str(x) for x in labels if x is not None and x == x}, key=method_sort_key)


def method_color(label: str) -> str:
    """The label's colour; a bracketed configuration ('InfoPro [contrast]') gets its label's hue,
    moved towards white or black by its bracket text, so it never looks like the plain label."""
    text = str(label)
    if " [" in text:
        plain, extra = text.split(" [", 1)
        rgb = mcolors.to_rgb(method_color(plain))
        f = (0.45, -0.45, 0.65, -0.3)[sum(map(ord, extra)) % 4]
        mixed = [v * (1 - f) if f > 0 else v + (1 - v) * -f for v in rgb]
        return mcolors.to_hex(mixed)
    base, variant, n = parse_label(label)
    info = _methods().get(base)
    if info is not None and info.color and not variant:
        return info.color
    if info is not None and info.colormap and variant in VARIANTS:
        cmap = colormaps[info.colormap]
        rgb = mcolors.to_rgb(cmap(0.4 + 0.55 * VARIANTS.index(variant) / (len(VARIANTS) - 1)))
        if n > 2:  # a finer patch grid: the same shade, much darker
            rgb = tuple(0.55 * v for v in rgb)
        return mcolors.to_hex(rgb)
    # anything we do not know: a stable colour from the label's characters
    return _EXTRA[sum(map(ord, str(label))) % len(_EXTRA)]


def family_of(label: str) -> str:
    """The base method of a label ('DGL+HPFF (n=2) [streamed patches]' -> 'DGL')."""
    return parse_label(label)[0]


# variant -> marker: within one family's panel the shade alone is hard to read, the marker is not
_VARIANT_MARKERS = {"": "o", "PFF": "v", "HiLo (CL)": "<", "HiLo": "D", "HPFF (CL)": ">", "HPFF": "s",
                    "HiLo (official)": "d", "HPFF (official)": "h"}


def method_marker(label: str) -> str:
    """By variant (shade and marker tell a family's variants apart); 'X' for a second
    configuration of one label ('InfoPro [aux 2c2f]'), whose colour is its label's."""
    if " [" in str(label):
        return "X"
    base, variant, n = parse_label(label)
    info = _methods().get(base)
    if info is not None and info.color and not variant:  # a global method: its own marker
        return info.marker
    m = _VARIANT_MARKERS.get(variant, "P")
    return "p" if (variant == "HPFF" and n > 2) else m


def memory_unit(max_bytes: float | None) -> tuple[str, int]:
    """GiB where the largest value is at least 1 GiB, else MiB."""
    if max_bytes is not None and max_bytes == max_bytes and max_bytes >= GIB:
        return "GiB", GIB
    return "MiB", MIB


def format_bytes(n: float | None) -> str:
    if n is None or n != n:
        return "n/a"
    unit, scale = memory_unit(n)
    return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.1f} {unit}"
