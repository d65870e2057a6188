"""The papers' recipes (hpff_bench/recipes.toml): InfoPro's λ / loss / aux per dataset, network
and K, and HPFF's settings and 400-epoch schedule, each naming its source file.

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
    """Training epochs of the paper a run reproduces: HPFF's 400 for HiLo/HPFF runs, else InfoPro's 160."""
    t = _tables()
    return t["hpff"]["epochs"] if config.hilo else t["infopro"]["epochs"]


def infopro_defaults(dataset: str, network: str, k: int, hpff: bool) -> dict:
    """aux / local_loss / lambdas for an InfoPro run that sets none of them: the paper's recipe
    where it has one, else hpff-bench's defaults (1c2f, ce, the resnet32 K=16 λ)."""
    from hpff_bench.config import RunConfig

    r = infopro_recipe(dataset, network, k, hpff)
    if r is None:
        d = RunConfig()
        return {"aux": d.aux, "local_loss": d.local_loss, "lambdas": d.lambdas}
    return {"aux": r.aux, "local_loss": r.local_loss, "lambdas": r.lambdas}
