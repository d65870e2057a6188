"""Checkpoints run no code: identity from a JSON side file first, then torch.load(weights_only=True)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random

import numpy as np
import pytest
import torch

from hpff_bench.cli import main
from hpff_bench.config import RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.runner.train import (
    CHECKPOINT_FORMAT,
    TrainOptions,
    _rng_state,
    _set_rng_state,
    identity_path,
    train,
)


class MakesADirectory:
    """A pickle payload: unpickling it calls os.mkdir(path)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def tiny(tmp_path):
    cfg = RunConfig(network="resnet20", method="bp", dataset="fake", image_size=8, batch_size=8, lr=0.05,
                    device="cpu", seed=1)
    opts = TrainOptions(epochs=1, warmup_epochs=0, train_subset=16, test_subset=8, num_workers=0, progress=False,
                        checkpoint_dir=str(tmp_path / "ckpt"), resume=True)
    return cfg, opts


def craft(ckpt_dir, marker, cfg, opts, legacy=False, identity=True):
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "options": opts.result_options(),
               "epoch": 1, "evil": MakesADirectory(str(marker))}
    path = ckpt_dir / "last.pt"
    if legacy:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path)
    if identity:
        ident = {k: payload[k] for k in ("format", "config", "options", "epoch")}
        identity_path(path).write_text(json.dumps(ident))
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["torch-zip", "plain-pickle"])
def test_a_crafted_checkpoint_runs_no_code(tmp_path, legacy):
    cfg, opts = tiny(tmp_path)
    # the oracle: the file really runs code when loaded without weights_only
    probe = tmp_path / "probe"
    oracle = craft(tmp_path / "oracle", probe, cfg, opts, legacy)
    with contextlib.suppress(RuntimeError):  # a plain pickle is no torch file, but is unpickled first
        torch.load(oracle, weights_only=False)
    assert probe.is_dir()

    marker = tmp_path / "pwned"
    craft(tmp_path / "ckpt", marker, cfg, opts, legacy)
    with pytest.raises(ConfigError, match="refused to load"):
        train(cfg, opts)
    assert not marker.exists()


def test_without_its_identity_file_a_checkpoint_is_not_opened(tmp_path):
    cfg, opts = tiny(tmp_path)
    marker = tmp_path / "pwned"
    craft(tmp_path / "ckpt", marker, cfg, opts, identity=False)
    with pytest.raises(ConfigError, match="has no identity file last.identity"):
        train(cfg, opts)
    assert not marker.exists()


def test_another_runs_checkpoint_is_refused_from_its_identity_alone(tmp_path):
    cfg, opts = tiny(tmp_path)
    marker = tmp_path / "pwned"
    craft(tmp_path / "ckpt", marker, cfg.replace(lr=0.1), opts)
    with pytest.raises(ConfigError, match="written for another run.*lr 0.1 vs 0.05"):
        train(cfg, opts)
    assert not marker.exists()


def test_the_cli_says_it_in_one_line(tmp_path, capsys):
    cfg, opts = tiny(tmp_path)
    marker = tmp_path / "pwned"
    craft(tmp_path / "ckpt", marker, cfg, opts)
    argv = ["train", "--network", "resnet20", "--dataset", "fake", "--image-size", "8", "--batch-size", "8",
            "--lr", "0.05", "--seed", "1", "--device", "cpu", "--epochs", "1", "--warmup-epochs", "0",
            "--train-subset", "16", "--test-subset", "8", "--num-workers", "0", "--no-progress", "--no-record",
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused to load" in err[0]
    assert not marker.exists()


def test_rng_states_are_plain_data_and_restore_exactly(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    state = _rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    _set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_real_checkpoint_loads_with_weights_only(tmp_path):
    cfg, opts = tiny(tmp_path)
    train(cfg, opts)
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    ident = json.loads((tmp_path / "ckpt" / "last.identity").read_text())
    assert ckpt["epoch"] == ident["epoch"] == 1
    assert ident == {"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "options": opts.result_options(), "epoch": 1}
