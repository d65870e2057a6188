"""examples/hpff_bench_example through its entry points, installed nowhere: a distribution
(dist-info with the entry points its pyproject.toml declares) on a temporary path, found by
importlib.metadata here and, through PYTHONPATH, in the sweep's worker processes."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch

from hpff_bench.aux.builders import AUX_NETS
from hpff_bench.config import RunConfig
from hpff_bench.method_registry import METHODS
from hpff_bench.methods import build_method, synthetic_batch
from hpff_bench.networks import NETWORKS

PROJECT = Path(__file__).resolve().parents[1] / "examples" / "hpff_bench_example"


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    meta = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    dist = tmp_path / "site" / f"hpff_bench_example-{meta['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items()) + "\n"
        for group, eps in meta["entry-points"].items()))
    paths = [str(PROJECT), str(tmp_path / "site")]
    for p in paths:
        monkeypatch.syspath_prepend(p)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])]))
    NETWORKS.rescan()
    METHODS.rescan()
    yield meta
    for registry, name in ((NETWORKS, "tinynet"), (METHODS, "fixedrand"), (AUX_NETS, "fixedrand")):
        if name in registry:
            registry.remove(name)
    for mod in [m for m in sys.modules if m.startswith("hpff_bench_example")]:
        del sys.modules[mod]
    NETWORKS.rescan()
    METHODS.rescan()


def test_entry_points_register_the_network_and_the_method(plugin, cli):
    code, out, _ = cli("networks")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("tinynet"))
    assert line.split(None, 3)[1:] == ["-", "any", "entry point hpff_bench.networks:tinynet = "
                                       f"hpff_bench_example.network:tinynet ({plugin['name']} {plugin['version']})"]
    info = METHODS["fixedrand"]
    assert (info.label, info.local, info.hilo, info.colormap) == ("FixedRand", True, True, "Greys")
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    from hpff_bench.report.style import method_color, order_methods

    assert method_color("FixedRand") == to_hex(colormaps["Greys"](0.4))  # its colormap, plain = lightest
    assert method_color("FixedRand+HPFF (n=2)") != method_color("FixedRand")
    assert order_methods(["FixedRand", "BP", "PredSim"]) == ["BP", "PredSim", "FixedRand"]  # registry order
    assert METHODS.source("fixedrand") == ("entry point hpff_bench.methods:fixedrand = hpff_bench_example.method "
                                           f"({plugin['name']} {plugin['version']})")


def test_fixed_random_classifier_trains_the_modules_not_itself(plugin):
    cfg = RunConfig(network="tinynet", method="fixedrand", k=3, batch_size=4)
    m = build_method(cfg)
    assert m.module_count == 3 and len(m.aux_nets) == 2
    fixed = {n: p.clone() for n, p in m.aux_nets.named_parameters()}
    assert fixed and not any(p.requires_grad for p in m.aux_nets.parameters())
    backbone = [p.clone() for p in m.modules_.parameters()]
    m.train_step(*synthetic_batch(cfg))
    assert all(torch.equal(p, fixed[n]) for n, p in m.aux_nets.named_parameters())
    assert all(not torch.equal(a, b) for a, b in zip(backbone, m.modules_.parameters()) if a.dim() > 1)
    assert cfg.label == "FixedRand" and cfg.replace(hilo=True).label == "FixedRand+HiLo"


def test_estimate_profile_and_a_one_task_sweep(plugin, cli_json, cli, tmp_path):
    r = cli_json("estimate", "--network", "tinynet", "--method", "fixedrand", "--k", "3", "--batch-size", "8")
    assert r["label"] == "FixedRand" and r["split"]["modules"] == 3
    assert r["predicted"]["peak_allocated_bytes"] > 0
    r = cli_json("profile", "--network", "tinynet", "--method", "fixedrand", "--k", "3", "--batch-size", "8",
                 "--steps", "1", "--warmup", "0", "--device", "cpu")
    assert r["label"] == "FixedRand" and r["config"]["network"] == "tinynet"
    suite = tmp_path / "plugin.toml"
    suite.write_text(textwrap.dedent("""
        [suite]
        name = "plugin"
        kinds = ["estimate"]
        [base]
        network = "tinynet"
        k = 3
        batch_size = 8
        [axes]
        method = ["fixedrand"]
    """))
    code, out, err = cli("sweep", suite, "--results", tmp_path / "results", "--jobs", "1", "--no-progress",
                         "--no-cost-estimate")
    assert code == 0, err
    records = [json.loads(x) for f in (tmp_path / "results" / "plugin").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert [(r["status"], r["label"], r["config"]["network"]) for r in records] == [("ok", "FixedRand", "tinynet")]
