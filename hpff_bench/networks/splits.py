"""Where to cut a network into K gradient-isolated modules: the papers' tables, uniform, or
the user's own `--cuts`.

A cut `[stage, block]` (written `stage.block` on the command line) means "detach after block
`block` of stage `stage`" (stage 0 is the stem, block 0 only). Cuts become unit indices: the
network is cut after each listed unit. The head always stays in the last module, so a cut may
follow the stem or any block but the last: K ranges from 1 to num_blocks + 1.

Counting differs between papers (docs/splits.md): InfoPro's K is the real module count (the
stem may be its own module); HPFF's configs list module *ends* with the stem folded into the
first module, so HPFF's resnet32 "K=16" is 15 modules and resnet110 "K=55" is 54. Results
always report the real count (`len(cuts) + 1`).

Every table entry is copied by hand from the official code and names its file (SOURCES).
"""

from __future__ import annotations

from dataclasses import dataclass

from hpff_bench import validation as V
from hpff_bench.errors import ConfigError
from hpff_bench.registry import Registry

Cut = tuple[int, int]

_INFOPRO_CIFAR = "blackfeather-wang/InfoPro-Pytorch: Experiments on CIFAR-SVHN-STL10/networks/configs.py"
_INFOPRO_IMAGENET = "blackfeather-wang/InfoPro-Pytorch: Experiments on ImageNet/networks/resnet.py (k2_infopro)"
_HPFF_CIFAR = "Zeudfish/HPFF: Exp on CIFAR_SVHN_STL/network/config.py"
_HPFF_IMAGENET = "Zeudfish/HPFF: Exp on Imagenet/networks/configs.py (Layer)"
_MAN_CIFAR = "JunhaoSu0/MAN: Exp on CIFAR-SVHN-STL/networks/config.py, the same InfoPro table as HPFF's"
_AUGLOCAL_CIFAR = "ChenxiangMA/AugLocal: train.py (local_module_num -= aux_net_depth), networks/configs.py net_config"


def _r(stage: int, blocks) -> list[Cut]:
    return [(stage, b) for b in blocks]


@dataclass(frozen=True)
class TableEntry:
    cuts: tuple[Cut, ...]  # the K-1 cut points as [stage, block]
    source: str  # file (and dict) of the official code the entry comes from


def _table(source: str, rows: dict[int, list[Cut]]) -> dict[int, TableEntry]:
    return {k: TableEntry(tuple(cuts), source) for k, cuts in rows.items()}


def _from_ends(source: str, rows: dict[int, list[Cut]]) -> dict[int, TableEntry]:
    """HPFF's configs list module ends; the last end is the network's end, not a cut."""
    return {k: TableEntry(tuple(ends[:-1]), source) for k, ends in rows.items()}


# InfoPro (Wang et al., ICLR 2021): `InfoPro` dict; K modules = K-1 cuts.
_INFOPRO_CIFAR_ROWS = {
    "resnet32": {
        2: [(2, 1)],
        3: [(1, 4), (2, 4)],
        4: [(1, 2), (2, 1), (3, 0)],
        8: [(1, 0), (1, 2), (1, 4), (2, 1), (2, 3), (3, 0), (3, 2)],
        16: [(0, 0)] + _r(1, range(5)) + _r(2, range(5)) + _r(3, range(4)),
    },
    "resnet110": {
        2: [(2, 8)],
        3: [(1, 17), (2, 17)],
        4: [(1, 11), (2, 7), (3, 3)],
        8: [(1, 4), (1, 11), (2, 0), (2, 7), (2, 14), (3, 3), (3, 10)],
        16: _r(1, (1, 4, 7, 10, 13, 16)) + _r(2, (1, 4, 7, 11, 15)) + _r(3, (1, 5, 9, 13)),
    },
}
INFOPRO_TABLE: dict[str, dict[int, TableEntry]] = {
    net: _table(_INFOPRO_CIFAR + f" InfoPro['{net}']", rows) for net, rows in _INFOPRO_CIFAR_ROWS.items()
}
# ImageNet, K=2: the cut is inside layer2 (stage 2), after block k2_infopro[network]
INFOPRO_TABLE.update(
    {
        net: _table(_INFOPRO_IMAGENET + f" ['{net}'] = {b}", {2: [(2, b)]})
        for net, b in (("resnet101", 0), ("resnet152", 5), ("resnext101_32x8d", 2))
    }
)

# InfoPro* (memory-balanced): `InfoPro_balanced_memory`, per dataset. HPFF's config.py holds
# the same cuts (as ends).
_BALANCED_ROWS = {
    "cifar10": {2: [(1, 14)], 3: [(1, 9), (2, 2)], 4: [(1, 6), (1, 14), (2, 8)]},
    "stl10": {2: [(1, 14)], 3: [(1, 8), (2, 1)], 4: [(1, 6), (1, 14), (2, 8)]},
}
INFOPRO_BALANCED_TABLE: dict[str, dict[str, dict[int, TableEntry]]] = {
    "resnet110": {
        ds: _table(_INFOPRO_CIFAR + f" InfoPro_balanced_memory['resnet110']['{ds}']", rows)
        for ds, rows in _BALANCED_ROWS.items()
    }
}

# HPFF (Su et al., ECCV 2024): module ends; the stem is folded into the first module.
_HPFF_CIFAR_ENDS = {
    "resnet32": {
        2: [(2, 1), (3, 4)],
        3: [(1, 4), (2, 4), (3, 4)],
        4: [(1, 2), (2, 1), (3, 0), (3, 4)],
        8: [(1, 0), (1, 2), (1, 4), (2, 1), (2, 3), (3, 0), (3, 2), (3, 4)],
        16: _r(1, range(5)) + _r(2, range(5)) + _r(3, range(5)),
    },
    "resnet110": {
        2: [(2, 8), (3, 17)],
        3: [(1, 17), (2, 17), (3, 17)],
        4: [(1, 11), (2, 7), (3, 3), (3, 17)],
        8: [(1, 4), (1, 11), (2, 0), (2, 7), (2, 14), (3, 3), (3, 10), (3, 17)],
        16: _r(1, (1, 4, 7, 10, 13, 16)) + _r(2, (1, 4, 7, 11, 15)) + _r(3, (1, 5, 9, 13, 17)),
        32: _r(1, (1, 2, 4, 5, 7, 9, 11, 13, 14, 16, 17))
        + _r(2, (1, 2, 4, 5, 7, 9, 11, 13, 14, 16, 17))
        + _r(3, (1, 3, 4, 6, 7, 9, 11, 13, 15, 17)),
        55: _r(1, range(18)) + _r(2, range(18)) + _r(3, range(18)),
    },
}
_HPFF_IMAGENET_ENDS = {
    4: [(3, 0), (3, 9), (3, 17), (4, 2)],
    8: [(2, 0), (3, 1), (3, 5), (3, 9), (3, 13), (3, 17), (3, 21), (4, 2)],
}
HPFF_TABLE: dict[str, dict[int, TableEntry]] = {
    net: _from_ends(_HPFF_CIFAR + f" InfoPro['{net}']", rows) for net, rows in _HPFF_CIFAR_ENDS.items()
}
HPFF_TABLE["resnet34"] = _from_ends(_HPFF_IMAGENET + " ['resnet34']", {4: [(2, 0), (3, 0), (3, 5), (4, 2)]})
HPFF_TABLE.update(
    {
        net: _from_ends(_HPFF_IMAGENET + f" ['{net}']", _HPFF_IMAGENET_ENDS)
        for net in ("resnet101", "resnet152", "resnext101_32x8d")
    }
)



@dataclass(frozen=True)
class Split:
    scheme: str  # the scheme actually used: infopro, infopro-balanced, hpff, uniform, cuts, none
    requested_k: int  # K as the user / paper counts it
    cuts: tuple[int, ...]  # unit indices after which the network is cut
    reason: str = ""  # why this scheme (auto's choice, the table's source file)
    where: tuple[Cut, ...] = ()  # the cuts as [stage, block]

    @property
    def modules(self) -> int:
        return len(self.cuts) + 1

    @property
    def cuts_text(self) -> str:
        """The cuts in --cuts syntax (`1.14,2.8`), '' for none."""
        return ",".join(f"{s}.{b}" for s, b in self.where)

    def describe(self) -> str:
        """One line for command output: scheme, modules, cuts and why."""
        cuts = f"cuts after {self.cuts_text}" if self.where else "no cuts"
        return f"split {self.scheme}: {self.modules} module(s), {cuts} ({self.reason})"

    def summary(self) -> dict:
        """What a result record stores about the split."""
        return {"scheme": self.scheme, "modules": self.modules, "cuts": self.cuts_text, "reason": self.reason}


def parse_cuts(text: str, network: str) -> tuple[Cut, ...]:
    """`"1.14,2.8"` -> ((1, 14), (2, 8)), checked against `network`'s blocks: ConfigError naming
    the bad cut and the allowed range."""
    from hpff_bench.networks import get_network

    spec = get_network(network)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"--cuts must be a string like '1.14,2.8' (STAGE.BLOCK, comma-separated), got {text!r}")
    last_stage = len(spec.stage_blocks)
    cuts: list[Cut] = []
    for part in text.split(","):
        part = part.strip()
        stage_s, dot, block_s = part.partition(".")
        if not dot or V.natural(stage_s) is None or V.natural(block_s) is None:
            raise ConfigError(
                f"--cuts {part!r}: each cut is STAGE.BLOCK with non-negative integers, e.g. 1.14 "
                f"(after block 14 of stage 1; 0.0 = after the stem)"
            )
        stage, block = int(stage_s), int(block_s)
        if stage > last_stage:
            raise ConfigError(f"--cuts {part}: {network} has stages 0 (the stem) to {last_stage}")
        n = 1 if stage == 0 else spec.stage_blocks[stage - 1]
        top = n - 2 if stage == last_stage else n - 1  # no cut after the network's last block
        if block > top:
            what = "the stem has block 0 only" if stage == 0 else f"stage {stage} has blocks 0 to {n - 1}"
            if stage == last_stage and block == n - 1:
                what += f", and {part} is the network's last block (the head stays with it)"
            raise ConfigError(f"--cuts {part}: {network}: {what}; allowed cuts in stage {stage}: "
                              f"{stage}.0 to {stage}.{top}")
        if cuts and (stage, block) <= cuts[-1]:
            prev = f"{cuts[-1][0]}.{cuts[-1][1]}"
            raise ConfigError(f"--cuts {part}: cuts must be strictly increasing, and {part} does not "
                              f"come after {prev}")
        cuts.append((stage, block))
    return tuple(cuts)


def _max_k(network: str) -> int:
    from hpff_bench.networks import get_network

    return get_network(network).num_blocks + 1


def _entry(network: str, scheme: str, k: int, dataset: str | None) -> TableEntry | None:
    if scheme == "infopro":
        return INFOPRO_TABLE.get(network, {}).get(k)
    if scheme == "hpff":
        return HPFF_TABLE.get(network, {}).get(k)
    return INFOPRO_BALANCED_TABLE.get(network, {}).get(dataset or "", {}).get(k)


def _missing(network: str, scheme: str, k: int, dataset: str | None) -> ConfigError:
    tail = f" (use --split uniform for any K from 1 to {_max_k(network)}, or --cuts)"
    if scheme == "infopro-balanced":
        nets = INFOPRO_BALANCED_TABLE
        if network not in nets:
            return ConfigError(f"the infopro-balanced split table has no {network}; it has only "
                               f"{', '.join(nets)}" + tail)
        if dataset not in nets[network]:
            return ConfigError(f"the infopro-balanced split table has {network} for --dataset "
                               f"{' and '.join(nets[network])} only, got --dataset {dataset}" + tail)
        have = sorted(nets[network][dataset])
        return ConfigError(f"the infopro-balanced split table has no K={k} for {network} on {dataset}; "
                           f"it has K in {have}" + tail)
    table = INFOPRO_TABLE if scheme == "infopro" else HPFF_TABLE
    rows = table.get(network, {})
    has = f"K in {sorted(rows)}" if rows else f"only {', '.join(table)}"
    return ConfigError(f"the {scheme} split table has no K={k} for {network}; it has {has}" + tail)


def resolve_cuts(network: str, split: str, k: int, dataset: str | None = None, cuts: str = "",
                 config=None) -> Split:
    """The cut points for `network` at K=`k` (or the user's `cuts`); ConfigError naming what is
    allowed otherwise. `auto` takes the InfoPro table, else HPFF's, else uniform, and says which."""
    from hpff_bench.networks import get_network

    spec = get_network(network)
    max_k = spec.num_blocks + 1
    schemes = scheme_names()
    if split not in schemes:
        raise ConfigError(f"unknown --split {split!r}; allowed: {', '.join(schemes)}")
    if cuts:
        where = parse_cuts(cuts, network)
        if split != "auto":
            raise ConfigError(f"--cuts gives the split itself; leave --split out (got --split {split})")
        if k != len(where) + 1:
            raise ConfigError(f"--k {k} does not match --cuts {cuts} ({len(where) + 1} modules); "
                              f"leave --k out or give --k {len(where) + 1}")
        units = tuple(spec.unit_index(s, b) for s, b in where)
        return Split("cuts", k, units, "user-defined --cuts", where)
    if not isinstance(k, int) or not 1 <= k <= max_k:
        raise ConfigError(f"--k {k} is out of range for {network}: K is 1 to {max_k} (the stem and {max_k - 1} blocks)")
    if k == 1:
        return Split(split if split != "auto" else "none", 1, (), "one module: nothing to cut")
    reason = ""
    if split == "auto":
        if _entry(network, "infopro", k, dataset):
            split, reason = "infopro", f"auto: InfoPro's table has {network} K={k}"
        elif _entry(network, "hpff", k, dataset):
            split, reason = "hpff", f"auto: HPFF's table has {network} K={k} (InfoPro's has not)"
        else:
            split, reason = "uniform", f"auto: neither InfoPro's nor HPFF's table has {network} K={k}"
    return SPLIT_SCHEMES[split](SplitRequest(network, spec, k, dataset, reason, config))


# --split schemes: name -> fn(SplitRequest) -> Split, for K >= 2 (K and --cuts are checked before)
SPLIT_SCHEMES = Registry("split scheme", "hpff_bench.splits")


def register_split(name: str | None = None):
    """Decorator: `@register_split("mine")` on `fn(request: SplitRequest) -> Split`."""
    return SPLIT_SCHEMES.register(name)


def scheme_names() -> tuple[str, ...]:
    """What --split takes: auto (which picks a table or uniform) and every registered scheme."""
    return ("auto", *SPLIT_SCHEMES)


@dataclass(frozen=True)
class SplitRequest:
    network: str
    spec: object  # the NetworkSpec (stage_blocks, unit_index)
    k: int
    dataset: str | None
    reason: str = ""  # auto's reason for choosing this scheme
    config: object = None  # the RunConfig, where the scheme is asked for one (balanced searches with it)


def _table_scheme(scheme: str):
    def split(r: SplitRequest) -> Split:
        entry = _entry(r.network, scheme, r.k, r.dataset)
        if entry is None:
            raise _missing(r.network, scheme, r.k, r.dataset)
        units = tuple(r.spec.unit_index(s, b) for s, b in entry.cuts)
        reason = f"{r.reason}; " if r.reason else ""
        return Split(scheme, r.k, units, f"{reason}{entry.source}", entry.cuts)

    split.__doc__ = f"The {scheme} table's cuts (the official code's, each naming its file)."
    return split


for _scheme in ("infopro", "infopro-balanced", "hpff"):
    SPLIT_SCHEMES.add(_scheme, _table_scheme(_scheme), "hpff_bench.networks.splits (the papers' tables)")


@register_split("uniform")
def uniform(r: SplitRequest) -> Split:
    """K modules of about equal unit counts: cut positions are "after unit u" for u = stem,
    blocks but the last; the head rides with the last block."""
    max_k = r.spec.num_blocks + 1
    units = tuple(round(i * max_k / r.k) - 1 for i in range(1, r.k))
    where = tuple(_stage_block(r.spec, u) for u in units)
    return Split("uniform", r.k, units, r.reason or f"{r.k} modules of about {max_k / r.k:.1f} units each", where)


@register_split("balanced")
def balanced(r: SplitRequest) -> Split:
    """The cuts of the smallest predicted peak, searched by hpff_bench.planning (it traces: a
    layer above networks/, imported here when asked for)."""
    if r.config is None:
        raise ConfigError("--split balanced searches for one configuration (network, batch, method, K); "
                          "it needs a run's configuration")
    from hpff_bench.planning import balanced_split

    return balanced_split(r.config)


def cuts_notation(spec, units) -> str:
    """Cuts after these unit indices in --cuts syntax (`1.14,2.8`)."""
    return ",".join("{}.{}".format(*_stage_block(spec, u)) for u in units)


def _stage_block(spec, unit: int) -> Cut:
    if unit == 0:
        return (0, 0)
    u = unit - 1
    for s, n in enumerate(spec.stage_blocks, start=1):
        if u < n:
            return (s, u)
        u -= n
    raise IndexError(unit)


def split_of(config) -> Split:
    """The resolved split of a RunConfig."""
    if getattr(config, "variant", "ours") == "official":
        return official_split(config.network, config.k)
    if getattr(config, "method", None) == "auglocal":
        return auglocal_split(config.network, config.k, config.aux_net_depth)
    if getattr(config, "method", None) == "man" and config.split == "auto" and not config.cuts \
            and _entry(config.network, "hpff", config.k, None):
        s = resolve_cuts(config.network, "hpff", config.k)
        return Split(s.scheme, s.requested_k, s.cuts, f"auto: MAN's code uses HPFF's module table ({_MAN_CIFAR}); "
                     f"{s.reason}", s.where)
    if config.split == "balanced" and not config.cuts:  # the search checks K itself (K = 1 too)
        from hpff_bench.networks import get_network

        return balanced(SplitRequest(config.network, get_network(config.network), config.k, config.dataset,
                                     config=config))
    return resolve_cuts(config.network, config.split, config.k, config.dataset, config.cuts, config)


def auglocal_split(network: str, k: int, depth: int) -> Split:
    """AugLocal's modules: its code trains `local_module_num = K - aux_net_depth` modules, one per
    unit from the stem (its `network_config[...]['net_config']` lists every unit in order), the
    last module holding the remaining units and the head."""
    from hpff_bench.networks import get_network

    spec = get_network(network)
    n = k - depth
    units = tuple(range(n - 1))
    return Split("auglocal", k, units, f"{_AUGLOCAL_CIFAR}: K={k} - aux_net_depth {depth} = {n} modules, "
                 "one per unit from the stem", tuple(_stage_block(spec, u) for u in units))


def official_split(network: str, k: int) -> Split:
    """`--variant official`: the official HPFF CIFAR code's modules for local_module_num = k."""
    from hpff_bench.networks import get_network
    from hpff_bench.official_code import MODULE_ENDS, SOURCE

    where = tuple(MODULE_ENDS[network][k][:-1])
    spec = get_network(network)
    return Split("official", k, tuple(spec.unit_index(s, b) for s, b in where), SOURCE, where)


def module_unit_ranges(num_units: int, cuts: tuple[int, ...]) -> list[range]:
    """Unit index ranges of each module; the last module ends with the head."""
    bounds = [-1, *cuts, num_units - 1]
    return [range(a + 1, b + 1) for a, b in zip(bounds[:-1], bounds[1:])]
