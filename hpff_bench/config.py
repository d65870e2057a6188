"""One frozen description of a run, validated before anything is built.

Every command (profile, estimate, train, sweep, benchmarks) builds a `RunConfig`, so the
same options mean the same thing everywhere and a config can be hashed into a `config_id`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from hpff_bench import validation as V
from hpff_bench.errors import ConfigError
from hpff_bench.method_registry import METHODS, hilo_methods, local_methods, method_names

# dataset -> (image size, classes). Profiling and estimation need no data, only these.
DATASETS: dict[str, tuple[int, int]] = {
    "cifar10": (32, 10),
    "cifar100": (32, 100),
    "svhn": (32, 10),
    "stl10": (96, 10),
    "imagenet": (224, 1000),
    "folder": (32, 10),
    "fake": (32, 10),
}
# the methods (names, labels, which are local) are hpff_bench.method_registry's
# the built-in --split schemes (for help texts); networks/splits.py SPLIT_SCHEMES registers them
SPLITS = ("auto", "infopro", "infopro-balanced", "hpff", "uniform", "balanced")
DEVICES = ("auto", "cpu", "cuda")
INFOPRO_AUX = ("1c2f", "2c2f")
LOCAL_LOSSES = ("ce", "supcon")
HILO_EXECS = ("fused", "reference", "official")
VARIANTS = ("ours", "official")
PFF_GRIDS = (1, 2, 4)
PFF_ON = ("independent", "cascade", "both")
PFF_EXECS = ("batched", "streamed")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class InfoProLambdas:
    """InfoPro's λ1 (reconstruction, 'ixx') and λ2 (task, 'ixy') at the first and last local module."""

    ixx_1: float = 5.0
    ixy_1: float = 0.05
    ixx_2: float = 0.2
    ixy_2: float = 0.5

    def at(self, i: int, n_local: int) -> tuple[float, float]:
        """Ours: λ1, λ2 for local module i of n_local (0-based), linear from the first local
        module (ratio 0) to the last (ratio 1)."""
        return self.at_ratio(0.0 if n_local <= 1 else i / (n_local - 1))

    def at_official(self, i: int, paper_k: int) -> tuple[float, float]:
        """The official code: ratio i / (K - 2) with the paper's K (`local_module_num`), so for
        HPFF's K=16 with 15 modules the last local module (i = 13) gets 13/14, never 1."""
        return self.at_ratio(i / (paper_k - 2) if paper_k > 2 else 0.0)

    def at_ratio(self, ratio: float) -> tuple[float, float]:
        return (
            self.ixx_1 * (1 - ratio) + self.ixx_2 * ratio,
            self.ixy_1 * (1 - ratio) + self.ixy_2 * ratio,
        )


# HPFF's own InfoPro commands (docs/methods.md): cross-entropy, 2c2f, ixx 5 -> 0, ixy 0.5 -> 0.
HPFF_INFOPRO_LAMBDAS = InfoProLambdas(ixx_1=5.0, ixy_1=0.5, ixx_2=0.0, ixy_2=0.0)


@dataclass(frozen=True)
class RunConfig:
    network: str = "resnet32"
    method: str = "bp"
    k: int = 1
    split: str = "auto"
    cuts: str = ""  # user-defined cut points, e.g. "1.14,2.8"; replaces the split table
    dataset: str = "cifar10"
    image_size: int | None = None
    num_classes: int | None = None
    batch_size: int = 64
    steps: int = 3
    warmup: int = 1
    device: str = "auto"
    seed: int = 0
    precision: str = "fp32"
    # optimizer (SGD, Nesterov momentum, as the papers train)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # InfoPro
    aux: str = "1c2f"
    local_loss: str = "ce"
    lambdas: InfoProLambdas = field(default_factory=InfoProLambdas)
    # PredSim: (1 - beta) * prediction loss + beta * similarity-matching loss
    predsim_beta: float = 0.99
    # MAN (Su et al., ECCV 2024): momentum of the auxiliary block's moving average (its --momentum)
    man_momentum: float = 0.995
    # AugLocal (Ma et al., ICLR 2024): aux-net depth (--aux_net_depth) and the pyramidal schedule
    # (--pyramid --pyramid_coeff); its K counts the last aux_net_depth units as one module
    aux_net_depth: int = 2
    pyramid: bool = True
    pyramid_coeff: float = 0.5
    # HiLo
    hilo: bool = False
    cascade_span: int = 2
    independent: bool = True
    w_independent: float = 0.001
    w_cascade: float = 0.999
    hilo_exec: str = "fused"
    # ours: hpff-bench's own versions; official: the official HPFF CIFAR code's execution and
    # aux nets (methods/official.py)
    variant: str = "ours"
    # PFF
    pff_grid: int = 1
    pff_on: str = "both"
    pff_exec: str = "batched"

    # ----- derived values ---------------------------------------------------------------
    @property
    def resolved_image_size(self) -> int:
        return self.image_size if self.image_size is not None else DATASETS[self.dataset][0]

    @property
    def resolved_num_classes(self) -> int:
        return self.num_classes if self.num_classes is not None else DATASETS[self.dataset][1]

    @property
    def is_local(self) -> bool:
        info = METHODS.get(self.method)
        return info is not None and info.local

    @property
    def ablation(self) -> str | None:
        """The HPFF paper's ablation label (IL, CL, IL+CL, IL+CL+PFF); None for non-local methods."""
        if not self.is_local:
            return None
        parts = []
        if self.independent or not self.hilo:
            parts.append("IL")
        if self.hilo:
            parts.append("CL")
        if self.pff_grid > 1:
            parts.append("PFF")
        return "+".join(parts)

    @property
    def label(self) -> str:
        """Human label used in tables, e.g. `InfoPro+HPFF (n=2)`, `DGL+HiLo (CL)`."""
        base = METHODS[self.method].label if self.method in METHODS else self.method
        if not self.is_local:
            return base
        if self.variant == "official":
            return f"{base}+{'HPFF' if self.pff_grid > 1 else 'HiLo'} (official code)"
        if self.hilo and self.pff_grid > 1:
            name = f"{base}+HPFF (n={self.pff_grid})"
            return name if self.independent else f"{name} (CL)"
        if self.hilo:
            return f"{base}+HiLo" + ("" if self.independent else " (CL)")
        if self.pff_grid > 1:
            return f"{base}+PFF (n={self.pff_grid})"
        return base

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every option, resolved (image size and classes filled in)."""
        d = dataclasses.asdict(self)
        d["image_size"] = self.resolved_image_size
        d["num_classes"] = self.resolved_num_classes
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; allowed: {sorted(known)}")
        if isinstance(d.get("lambdas"), dict):
            d["lambdas"] = InfoProLambdas(**d["lambdas"])
        return cls(**d)

    def config_id(self) -> str:
        """Stable hash of the canonical (resolved, key-sorted) config. A field added later is
        left out at its default, so configs written before it keep their ids."""
        d = self.to_dict()
        if not d["cuts"]:
            del d["cuts"]
        if d["variant"] == "ours":
            del d["variant"]
        for name in _LATER_FIELDS:
            if d[name] == getattr(RunConfig, name):
                del d[name]
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ----- validation -------------------------------------------------------------------
    def validate(self) -> RunConfig:
        """Raise ConfigError naming the bad value and what is allowed; cheap, builds nothing."""
        from hpff_bench.networks import get_network  # local import: networks import config
        from hpff_bench.networks.splits import scheme_names, split_of

        network = get_network(self.network)  # a PKG.MODULE:CALLABLE is imported and probed here
        _choice("method", self.method, method_names())
        _choice("split", self.split, scheme_names())
        _choice("dataset", self.dataset, tuple(DATASETS))
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("aux", self.aux, INFOPRO_AUX)
        _choice("local-loss", self.local_loss, LOCAL_LOSSES)
        _choice("hilo-exec", self.hilo_exec, HILO_EXECS)
        _choice("variant", self.variant, VARIANTS)
        _choice("pff-grid", self.pff_grid, PFF_GRIDS)
        _choice("pff-on", self.pff_on, PFF_ON)
        _choice("pff-exec", self.pff_exec, PFF_EXECS)
        for name, high in (("batch_size", V.MAX_IMAGES), ("steps", V.MAX_STEPS), ("k", None)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{_flag(name)} must be a positive integer, got {value!r}")
            V.integer(_flag(name), value, low=1, high=high)
        V.integer("--warmup", self.warmup, low=0, high=V.MAX_STEPS)
        V.integer("--seed", self.seed, low=0, high=V.MAX_SEED)
        V.integer("--image-size", self.image_size, low=8, high=V.MAX_IMAGE_SIZE, allow_none=True)
        V.integer("--num-classes", self.num_classes, low=2, high=V.MAX_CLASSES, allow_none=True)
        V.integer("--cascade-span", self.cascade_span, low=1)
        V.number("--lr", self.lr, low=0, low_open=True)
        V.number("--momentum", self.momentum, low=0, high=1)  # torch rejects < 0; >= 1 diverges
        V.number("--weight-decay", self.weight_decay, low=0)
        V.number("--predsim-beta", self.predsim_beta, low=0, high=1)
        for name in ("w_independent", "w_cascade"):
            V.number(_flag(name), getattr(self, name), low=0)
        if not isinstance(self.lambdas, InfoProLambdas):
            raise ConfigError(f"lambdas must be a table of ixx_1, ixy_1, ixx_2, ixy_2, got {self.lambdas!r}")
        for name in ("ixx_1", "ixy_1", "ixx_2", "ixy_2"):
            V.number(_flag(name), getattr(self.lambdas, name), low=0)
        for name in ("hilo", "independent", "pyramid"):
            V.boolean(name, getattr(self, name))
        V.number("--man-momentum", self.man_momentum, low=0, high=1)
        V.integer("--aux-net-depth", self.aux_net_depth, low=1)
        V.number("--pyramid-coeff", self.pyramid_coeff, low=0)
        if self.method in ("man", "auglocal"):
            self._validate_2024()
        if hasattr(network, "check"):  # a network cut by structure: does it take this input?
            network.check(self.resolved_num_classes, self.resolved_image_size)
        if self.variant == "official" or self.hilo_exec == "official":
            self._validate_official()
            return self
        if self.split == "balanced" and not self.cuts:  # the search traces: check K only here
            max_k = network.num_blocks + 1
            if not 1 <= self.k <= max_k:
                raise ConfigError(f"--k {self.k} is out of range for {self.network}: K is 1 to {max_k}")
        else:
            split_of(self)  # K range, split-table existence, --cuts syntax and range
        if not self.is_local:
            if self.hilo or self.pff_grid > 1:
                raise ConfigError(
                    f"--hilo/--pff-grid/--hpff need a local method (one of {', '.join(local_methods())}), "
                    f"got --method {self.method}"
                )
            if not self.independent:
                raise ConfigError("--no-independent needs --hilo with a local method")
        elif (self.hilo or self.pff_grid > 1) and not METHODS[self.method].hilo:
            raise ConfigError(f"--hilo/--pff-grid/--hpff compose with {', '.join(hilo_methods())} only (an aux net "
                              f"on a module's output), got --method {self.method}")
        if self.hilo:
            if self.cascade_span < 2:
                raise ConfigError(f"--cascade-span must be >= 2, got {self.cascade_span}")
            if self.k < self.cascade_span:
                raise ConfigError(
                    f"--hilo with --cascade-span {self.cascade_span} needs K >= {self.cascade_span} "
                    f"modules, got --k {self.k}"
                )
        else:
            if not self.independent:
                raise ConfigError("--no-independent removes the independent level; it needs --hilo")
            if self.pff_grid > 1 and self.pff_on == "cascade":
                raise ConfigError("--pff-on cascade needs --hilo (without it there is no cascade level)")
        return self


    def _validate_2024(self) -> None:
        """MAN and AugLocal run what their official CIFAR code runs: CIFAR ResNets, no HiLo/PFF."""
        from hpff_bench.networks import get_network

        spec = get_network(self.network)
        label = METHODS[self.method].label
        if spec.family != "cifar":
            raise ConfigError(f"--method {self.method}: {label}'s code builds CIFAR ResNets (basic blocks) only, "
                              f"got --network {self.network}")
        if self.hilo or self.pff_grid > 1 or self.variant != "ours":
            raise ConfigError(f"--method {self.method}: --hilo/--pff-grid/--hpff/--variant official compose with "
                              f"{', '.join(hilo_methods())} only ({label} has its own aux nets and no windowed or "
                              "patched form)")
        if self.method == "auglocal":
            if self.split != "auto" or self.cuts:
                raise ConfigError("--method auglocal: its modules are its code's (one per unit from the stem, "
                                  "K - aux-net-depth in all); leave --split and --cuts out")
            n = self.k - self.aux_net_depth  # the official code's local_module_num
            low = 3 if self.pyramid else 2
            if not low <= n <= spec.num_blocks + 1:
                raise ConfigError(
                    f"--method auglocal: --k {self.k} minus --aux-net-depth {self.aux_net_depth} is {n} modules; "
                    f"allowed {low} to {spec.num_blocks + 1} for {self.network}"
                    + (" (the pyramid schedule divides by modules - 2)" if self.pyramid else ""))
        elif self.k < 2:
            raise ConfigError(f"--method man needs --k >= 2 (an aux net needs a next block), got --k {self.k}")

    def _validate_official(self) -> None:
        """--variant official runs only what the official HPFF CIFAR code has a path for."""
        from hpff_bench import official_code as oc
        from hpff_bench.networks.splits import resolve_cuts

        def no(what: str) -> ConfigError:
            return ConfigError(f"--variant official: {what}")

        if self.variant != "official":
            raise ConfigError("--hilo-exec official is the official code's execution; it needs --variant official")
        if self.method not in oc.METHODS:
            raise no(f"the official code has no path for --method {self.method}; allowed: {', '.join(oc.METHODS)}")
        if self.network not in oc.MODULE_ENDS:
            raise no(f"the official code has no path for --network {self.network}; allowed: {', '.join(oc.MODULE_ENDS)}")
        ks = sorted(oc.MODULE_ENDS[self.network])
        if self.k not in ks:
            raise no(f"the official code's table has no K={self.k} for {self.network}; allowed: {ks}")
        if self.split not in ("auto", "hpff"):
            raise no(f"modules come from the official code's table; --split must be auto or hpff, got {self.split!r}")
        if self.split == "hpff":
            resolve_cuts(self.network, "hpff", self.k)  # the hpff table must have this K too
        # a resolved config (to_dict -> from_dict, as sweep workers get it) carries the native size
        if self.dataset not in oc.DATASETS or self.image_size not in (None, DATASETS[self.dataset][0]):
            raise no(f"the official code runs {', '.join(oc.DATASETS)} at their own image size, got --dataset "
                     f"{self.dataset}" + (f" --image-size {self.image_size}" if self.image_size is not None else ""))
        if not self.hilo or self.cascade_span != 2 or not self.independent or self.hilo_exec != "official":
            raise no("the official code is HiLo with windows of 2, both levels and its own execution; "
                     "use --hilo (or --hpff) without --cascade-span/--no-independent/--hilo-exec")
        grids = (1, 2) if self.method == "infopro" else (1,)
        if self.pff_grid not in grids or self.pff_on != "both" or self.pff_exec != "batched":
            raise no("PFF is the official code's four quadrant decoders (InfoPro's decoder only, n=2); "
                     + ("InfoPro runs --hpff (--pff-grid 2) or --hilo (HiLo alone, InfoPro's whole-map "
                        "decoder in place of the quadrants)" if self.method == "infopro" else
                        f"--method {self.method} has no decoder: use --hilo, not --hpff/--pff-grid")
                     + ", without --pff-on/--pff-exec")
        if self.cuts:
            raise no(f"modules come from the official code's table; --cuts {self.cuts!r} cannot apply")
        if self.precision != "fp32":
            raise no(f"the official code trains in fp32, got --precision {self.precision}")
        if self.method == "infopro" and self.aux not in ("1c2f", "2c2f"):
            raise no(f"--aux must be 1c2f or 2c2f, got {self.aux}")


# fields added after result ids were first written: left out of config_id at their default
_LATER_FIELDS = ("man_momentum", "aux_net_depth", "pyramid", "pyramid_coeff")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(
            f"unknown --{name} {value!r}; allowed: {', '.join(str(a) for a in allowed)}"
        )
