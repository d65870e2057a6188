"""The accuracy proxy (suites/cifar10.toml, --preset proxy) as a whole: its schedule, and a tiny
version of it (2 seeds, 8 px, a few batches) through sweep and report on generated images, so
the machinery (seed axis, cost estimate, seeded accuracy table, orderings) is checked in CI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpff_bench.runner.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "suites" / "cifar10.toml"


def test_proxy_preset_is_a_seeded_study_of_every_method_into_its_own_directory():
    plan = load_suite(SUITE).plan("proxy")
    assert plan.suite == "cifar10-proxy"
    train = [t for t in plan.tasks if t.kind == "train"]
    by_config: dict[str, set[int]] = {}
    for t in train:
        by_config.setdefault(t.config.label, set()).add(t.config.seed)
    assert set(by_config) == {"BP", "Greedy SL", "DGL", "InfoPro", "PredSim", "DGL+HPFF (n=2)",
                              "InfoPro+HPFF (n=2)", "PredSim+HPFF (n=2)"}
    assert all(len(seeds) >= 3 for seeds in by_config.values())
    t = train[0]
    assert (t.config.network, t.config.resolved_image_size, t.config.batch_size, t.config.lr) == ("resnet20", 16, 128, 0.1)
    assert t.options["epochs"] == 8 and t.options["train_subset"] == 10_000
    # every seed-0 run before any seed-1 run: an interrupted study still has every method
    seeds = [t.config.seed for t in train]
    assert seeds == sorted(seeds)
    # estimates at the training batch, once per configuration (seed 0)
    est = [t for t in plan.tasks if t.kind == "estimate"]
    assert len(est) == len(by_config) and {t.config.seed for t in est} == {0}
    assert {(t.config.batch_size, t.config.resolved_image_size) for t in est} == {(128, 16)}
    # the proxy grid is not part of the other presets or of the suite as written
    for preset in ("quick", "paper", None):
        assert all(t.run.grid != "proxy" for t in load_suite(SUITE).plan(preset).tasks)


def _tiny_suite(tmp_path: Path) -> Path:
    """The real suite file with the proxy shrunk: 2 seeds, 8 px, 32 training images, 1 epoch."""
    text = SUITE.read_text(encoding="utf-8")
    edits = [
        (r"seed = \[0, 1, 2\]", "seed = [0, 1]"),
        (r"image_size = 16\n", "image_size = 8\n"),
        (r"(\[grid\.base\]\nimage_size = 8\n)batch_size = 128", r"\1batch_size = 16"),
        (r"kind\.train = \{ epochs = 8, warmup_epochs = 0, batch_size = 128, lr = 0\.1, train_subset = 10000, test_subset = 2000,",
         "kind.train = { epochs = 1, warmup_epochs = 0, batch_size = 16, lr = 0.0125, train_subset = 32, test_subset = 20,"),
    ]
    for pattern, repl in edits:
        text, n = re.subn(pattern, repl, text)
        assert n == 1, f"suites/cifar10.toml changed: {pattern!r} matched {n} times"
    path = tmp_path / "cifar10.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _image_folder(root: Path) -> Path:
    """CIFAR-10's ImageFolder layout with a few generated 32x32 PNGs per class."""
    from PIL import Image

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for split, n in (("train", 4), ("test", 2)):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (25 * c, 8 * i, 255 - 25 * c)).save(d / f"{i}.png")
    return root


@pytest.mark.slow
def test_tiny_proxy_runs_through_sweep_and_report(tmp_path):
    suite = _tiny_suite(tmp_path)
    data = _image_folder(tmp_path / "cifar10")
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "hpff_bench", "sweep", str(suite), "--preset", "proxy", "--only", "method=bp|dgl",
         "--data-root", str(data), "--no-download", "--results", str(results), "--no-progress", "--table-rows", "0"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # the cost, from steps timed before the training starts
    assert re.search(r"training: 6 run\(s\) of 3 configuration\(s\), about \d+ (s|min) at 2 job\(s\) x \d+ thread\(s\), done around \d\d:\d\d", out), out
    assert out.index("training: 6 run(s)") < out.index("sweep cifar10-proxy (preset proxy):")
    assert "sweep cifar10-proxy (preset proxy): 9 of 9 tasks recorded" in out and "9 ok" in out
    report = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "hpff_bench", "report", str(results / "cifar10-proxy"), "-o", str(report)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((report / "manifest.json").read_text())
    assert "accuracy_ordering" in manifest["figures"] and "accuracy_orderings" in manifest["tables"]
    import pandas as pd

    acc = pd.read_csv(report / "tables" / "accuracy.csv")
    assert set(acc["method"]) == {"BP", "DGL", "DGL+HPFF (n=2)"}
    assert set(acc["seeds"]) == {"0, 1"} and (acc["epochs"] == 1).all() and (acc["training images"] == 32).all()
    assert (acc["memory at batch"] == 16).all()  # the estimate ran at the training batch
    assert acc["published error (%, full schedule)"].isna().all()  # nothing published for resnet20
    orders = pd.read_csv(report / "tables" / "accuracy_orderings.csv")
    assert len(orders) == 3  # BP vs DGL, BP vs DGL+HPFF, DGL+HPFF vs DGL
