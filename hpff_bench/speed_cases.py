"""The configurations suites/test_method_speed.py times side by side, by case name.

Why here and not in suites/: `hpff-bench plan --timings` reads that benchmark's JSON, whose
`extra_info["configurations"]` is keyed by these names, and must rebuild the very RunConfig each
name was measured with; one mapping serves both, so they cannot drift apart.
"""

from __future__ import annotations

from hpff_bench.config import HPFF_INFOPRO_LAMBDAS, RunConfig
from hpff_bench.recipes import auglocal_defaults, man_momentum, man_recipe

_MAN = man_recipe()

# name -> RunConfig changes; "+hpff" is the CLI's --hpff (HiLo + 2x2 PFF, HPFF's split)
CASES = {
    "bp": {"method": "bp"},
    "gc": {"method": "gc"},
    "greedy": {"method": "greedy"},
    "greedy+hpff": {"method": "greedy", "hilo": True, "pff_grid": 2, "split": "hpff"},
    "dgl": {"method": "dgl"},
    "dgl+hpff": {"method": "dgl", "hilo": True, "pff_grid": 2, "split": "hpff"},
    "infopro": {"method": "infopro"},
    "infopro+hpff": {"method": "infopro", "hilo": True, "pff_grid": 2, "split": "hpff", "aux": "2c2f",
                     "lambdas": HPFF_INFOPRO_LAMBDAS},
    "infopro+hpff reference": {"method": "infopro", "hilo": True, "pff_grid": 2, "split": "hpff",
                               "aux": "2c2f", "lambdas": HPFF_INFOPRO_LAMBDAS, "hilo_exec": "reference"},
    "infopro+hpff official": {"method": "infopro", "hilo": True, "pff_grid": 2, "split": "hpff",
                              "aux": "2c2f", "lambdas": HPFF_INFOPRO_LAMBDAS, "variant": "official",
                              "hilo_exec": "official"},
    "predsim": {"method": "predsim"},
    # the 2024 methods at their README commands' settings (MAN: HPFF's table where it has the K)
    "man": {"method": "man", "aux": _MAN.aux, "local_loss": _MAN.local_loss, "lambdas": _MAN.lambdas,
            "man_momentum": man_momentum()},
    "auglocal": {"method": "auglocal", **auglocal_defaults("cifar10", "resnet32", 16)},
}
# left out where `split` replaces every case's split: the official table (resnet32/110 only) and
# AugLocal's modules (one per unit, K - depth) are their own
OWN_MODULES = {"infopro+hpff official", "auglocal"}
# the official code's own steps -> our case that computes the same step: HPFF's
# (--hpff-official-code) end-to-end path is BP, its InfoPro+HPFF is "infopro+hpff official";
# InfoPro's (--hpff-official-infopro) InfoPro is "infopro" (same FLOPs, counted)
OFFICIAL_CODE_CASES = {"official code bp": "bp", "official code infopro+hpff": "infopro+hpff official",
                       "official infopro code infopro": "infopro", "official man code man": "man",
                       "official auglocal code auglocal": "auglocal"}


def speed_configs(network: str, k: int, batch_size: int, device: str, split: str | None = None) -> dict[str, RunConfig]:
    """The CASES at one size; `split` replaces every case's split (resnet20 has no HPFF table)."""
    base = RunConfig(network=network, k=k, batch_size=batch_size, device=device)
    return {
        name: speed_config(name, base, split)
        for name in CASES
        if not (split and name in OWN_MODULES)
    }


def speed_config(name: str, base: RunConfig, split: str | None = None) -> RunConfig:
    """One case on `base` (validated; ConfigError if that size cannot run it, KeyError for a
    name that is not a case)."""
    return base.replace(**{**CASES[name], **({"split": split} if split else {})}).validate()
