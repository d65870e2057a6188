"""`hpff-bench networks`: what is registered and where it came from; with --network, its units."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "networks", help="the registered networks and where they come from, or one network's units",
        description="Lists the networks of the registry: hpff-bench's own, those added with "
        "@register_network and those of installed packages (entry-point group hpff_bench.networks), "
        "with their blocks per stage and their source. Any other model is named as PKG.MODULE:CALLABLE "
        "(importing PKG.MODULE runs its code: your explicit choice). --network NAME lists that network's "
        "units with the STAGE.BLOCK each cut after it is written as (--cuts).",
    )
    p.add_argument("--network", default=None, help="list this network's units (a name or PKG.MODULE:CALLABLE)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpff_bench.networks import get_network

    if args.network:
        print_units(args.network, get_network(args.network))
    else:
        print_registry()
    return 0


def print_units(name: str, spec) -> None:
    """A network's units, each with the --cuts name of a cut after it."""
    names = getattr(spec, "unit_names", None)
    n = spec.num_blocks + 2
    print(f"{name}: {n} units ({spec.num_blocks} blocks in stages {list(spec.stage_blocks)})")
    print(f"{'unit':>5}  {'cut':>6}  starts with")
    for u in range(n):
        cut = "" if u >= n - 2 else "{}.{}".format(*_stage_block(spec, u))
        what = names[u] if names else spec.unit_name(u)
        print(f"{u:>5}  {cut:>6}  {what}")
    print("cut: --cuts STAGE.BLOCK for a cut after this unit (none after the last block: the head stays with it)")


def print_registry() -> None:
    """Every registered network: blocks per stage, family, where it came from."""
    from hpff_bench.networks import NETWORKS

    rows = [(name, "x".join(map(str, spec.stage_blocks)) if spec.family != "any" else "-", spec.family,
             NETWORKS.source(name)) for name, spec in NETWORKS.items()]
    width = max(len(r[0]) for r in rows)
    print(f"{'network':{width}}  {'blocks':12}  {'family':8}  source")
    for name, blocks, family, source in rows:
        print(f"{name:{width}}  {blocks:12}  {family:8}  {source}")
    print("or --network PKG.MODULE:CALLABLE (e.g. torchvision.models:mobilenet_v2): imports PKG.MODULE, "
          "calls CALLABLE and cuts the model by structure; `hpff-bench networks --network X` lists its units")


def _stage_block(spec, unit):
    from hpff_bench.networks.splits import cuts_notation

    return tuple(int(v) for v in cuts_notation(spec, [unit]).split("."))
