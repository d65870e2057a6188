"""Where to cut a network into K gradient-isolated modules.

A cut at `[stage, block]` means "detach after block `block` of stage `stage`" (stage 0 is the
stem). Cuts are returned as unit indices: the network is cut after each listed unit. The
head always stays in the last module, so the possible cut positions are after the stem and
after every block but the last: K ranges from 1 to num_blocks + 1.

Counting differs between papers (docs/splits.md): InfoPro's K is the real module count (the
stem may be its own module); HPFF's config lists module *ends* with the stem folded into the
first module, so HPFF's resnet32 "K=16" is 15 modules and resnet110 "K=55" is 54. Results
always report the real count (`len(cuts) + 1`).
"""

from __future__ import annotations

from dataclasses import dataclass

from hpff_bench.errors import ConfigError

Cut = tuple[int, int]


def _r(stage: int, blocks) -> list[Cut]:
    return [(stage, b) for b in blocks]


# InfoPro (Wang et al., ICLR 2021): K modules = K-1 cuts.
INFOPRO_TABLE: dict[str, dict[int, list[Cut]]] = {
    "resnet32": {
        2: [(2, 1)],
        4: [(1, 2), (2, 1), (3, 0)],
        8: [(1, 0), (1, 2), (1, 4), (2, 1), (2, 3), (3, 0), (3, 2)],
        16: [(0, 0)] + _r(1, range(5)) + _r(2, range(5)) + _r(3, range(4)),
    },
    "resnet110": {
        2: [(2, 8)],
        4: [(1, 11), (2, 7), (3, 3)],
        8: [(1, 4), (1, 11), (2, 0), (2, 7), (2, 14), (3, 3), (3, 10)],
        16: _r(1, (1, 4, 7, 10, 13, 16)) + _r(2, (1, 4, 7, 11, 15)) + _r(3, (1, 5, 9, 13)),
    },
    # ImageNet, K=2: the cut is inside layer2 (stage 2)
    "resnet101": {2: [(2, 0)]},
    "resnet152": {2: [(2, 5)]},
    "resnext101_32x8d": {2: [(2, 2)]},
}

# HPFF (Su et al., ECCV 2024): the paper's K -> module ends; the stem is folded into the first
# module and the last end is the end of the network. On CIFAR "every block is a module".
_HPFF_IMAGENET: dict[int, list[Cut]] = {
    # config ends [3,0] [3,9] [3,17] [4,2]; [4,2] is the network's end
    4: [(3, 0), (3, 9), (3, 17)],
    8: [(2, 0), (3, 1), (3, 5), (3, 9), (3, 13), (3, 17), (3, 21)],
}
HPFF_K: dict[str, dict[int, str | list[Cut]]] = {
    "resnet32": {16: "every-block"},
    "resnet110": {55: "every-block"},
    "resnet101": _HPFF_IMAGENET,
    "resnet152": _HPFF_IMAGENET,
    "resnext101_32x8d": _HPFF_IMAGENET,
}


@dataclass(frozen=True)
class Split:
    scheme: str  # the scheme actually used (auto resolved)
    requested_k: int  # K as the user / paper counts it
    cuts: tuple[int, ...]  # unit indices after which the network is cut

    @property
    def modules(self) -> int:
        return len(self.cuts) + 1


def resolve_cuts(network: str, split: str, k: int) -> Split:
    """The cut points for `network` at K=`k`; ConfigError naming what is allowed otherwise."""
    from hpff_bench.networks import NETWORKS

    spec = NETWORKS[network]
    max_k = spec.num_blocks + 1
    if k == 1:
        return Split(split if split != "auto" else "none", 1, ())
    if split == "auto":
        if k in INFOPRO_TABLE.get(network, {}):
            split = "infopro"
        elif k in HPFF_K.get(network, {}):
            split = "hpff"
        else:
            split = "uniform"
    if split == "infopro":
        table = INFOPRO_TABLE.get(network, {})
        if k not in table:
            raise ConfigError(
                f"the infopro split table has no K={k} for {network}; it has "
                + (f"K in {sorted(table)}" if table else f"only {', '.join(INFOPRO_TABLE)}")
                + " (use --split uniform for any K from 1 to "
                + f"{max_k})"
            )
        cuts = tuple(spec.unit_index(s, b) for s, b in table[k])
        return Split("infopro", k, cuts)
    if split == "hpff":
        table = HPFF_K.get(network, {})
        if k not in table:
            raise ConfigError(
                f"the hpff split table has no K={k} for {network}; it has "
                + (f"K in {sorted(table)}" if table else f"only {', '.join(HPFF_K)}")
                + f" (use --split uniform for any K from 1 to {max_k})"
            )
        if table[k] == "every-block":
            # module ends at every block; the last end is the network's end, not a cut
            return Split("hpff", k, tuple(range(1, spec.num_blocks)))
        return Split("hpff", k, tuple(spec.unit_index(s, b) for s, b in table[k]))
    if split == "uniform":
        if not 1 <= k <= max_k:
            raise ConfigError(f"--k {k} is out of range for {network}: uniform allows 1 to {max_k}")
        # cut positions 0..max_k-2 are "after unit u" for u = stem, blocks but the last
        units = max_k  # stem + blocks; the head rides with the last block
        return Split("uniform", k, tuple(round(i * units / k) - 1 for i in range(1, k)))
    raise ConfigError(f"unknown --split {split!r}; allowed: auto, infopro, hpff, uniform")


def module_unit_ranges(num_units: int, cuts: tuple[int, ...]) -> list[range]:
    """Unit index ranges of each module; the last module ends with the head."""
    bounds = [-1, *cuts, num_units - 1]
    return [range(a + 1, b + 1) for a, b in zip(bounds[:-1], bounds[1:])]
