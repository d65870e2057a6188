"""The papers' recipes (hpff_bench/recipes.toml): InfoPro's λ / loss / aux per dataset, network
and K, HPFF's, MAN's and AugLocal's settings and schedules, each naming its source file.

Why data: the published errors belong to these exact settings; a run that compares itself with
them must use them, and a reader must be able to check where each number came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from hpff_bench.config import InfoProLambdas

RECIPES_FILE = Path(__file__).with_name("recipes.toml")


@dataclass(frozen=True)
class Recipe:
    aux: str
    local_loss: str
    lambdas: InfoProLambdas
    epochs: int
    source: str  # the file the λ / loss / aux come from
    epochs_source: str


@cache
def _tables() -> dict:
    return tomllib.loads(RECIPES_FILE.read_text())


def infopro_recipe(dataset: str, network: str, k: int, hpff: bool) -> Recipe | None:
    """The paper's setting for an InfoPro run (HPFF's when `hpff`); None where the paper has
    no command for that dataset / network / K."""
    t = _tables()
    if hpff:
        h = t["hpff"]
        return Recipe(h["aux"], h["local_loss"], InfoProLambdas(*h["lambdas"]), h["epochs"], h["source"], h["epochs_source"])
    i = t["infopro"]
    for d, n, kk, *lam in i["lambdas"]:
        if (d, n, kk) == (dataset, network, k):
            return Recipe(i["aux"], i["local_loss"], InfoProLambdas(*lam), i["epochs"], i["source"], i["epochs_source"])
    return None


def recipe_epochs(config) -> int:
    """Training epochs of the paper a run reproduces: MAN's and AugLocal's 400 for theirs, HPFF's
    400 for HiLo/HPFF runs, else InfoPro's 160."""
    t = _tables()
    if config.method in ("man", "auglocal"):
        return t[config.method]["epochs"]
    return t["hpff"]["epochs"] if config.hilo else t["infopro"]["epochs"]


def man_recipe() -> Recipe:
    """MAN's loss settings (its README command's), for every network and K."""
    m = _tables()["man"]
    return Recipe(m["aux"], m["local_loss"], InfoProLambdas(*m["lambdas"]), m["epochs"], m["source"], m["epochs_source"])


def man_momentum() -> float:
    return _tables()["man"]["momentum"]


def auglocal_defaults(dataset: str, network: str, k: int) -> dict:
    """aux_net_depth / pyramid / pyramid_coeff of AugLocal's command for this dataset, network and
    K, else the resnet32 command's depth with the same schedule."""
    a = _tables()["auglocal"]
    depth = next((d for ds, n, kk, d in a["depths"] if (ds, n, kk) == (dataset, network, k)), a["default_depth"])
    return {"aux_net_depth": depth, "pyramid": a["pyramid"], "pyramid_coeff": a["pyramid_coeff"]}


def infopro_defaults(dataset: str, network: str, k: int, hpff: bool, method: str = "infopro") -> dict:
    """aux / local_loss / lambdas for an InfoPro (or MAN) run that sets none of them: the paper's
    recipe where it has one, else hpff-bench's defaults (1c2f, ce, the resnet32 K=16 λ)."""
    from hpff_bench.config import RunConfig

    r = man_recipe() if method == "man" else infopro_recipe(dataset, network, k, hpff)
    if r is None:
        d = RunConfig()
        return {"aux": d.aux, "local_loss": d.local_loss, "lambdas": d.lambdas}
    return {"aux": r.aux, "local_loss": r.local_loss, "lambdas": r.lambdas}
