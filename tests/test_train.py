"""The training recipe, checkpoints/--resume, divergence, and `hpff-bench train` (FakeData, CPU)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hpff_bench.cli import main
from hpff_bench.config import RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.runner import store
from hpff_bench.runner.train import (
    TrainOptions,
    default_warmup_epochs,
    lr_at,
    recipe_batch_size,
    recipe_lr,
    train,
)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread beats two contended ones
    yield
    torch.set_num_threads(n)


def tiny_cfg(**kw) -> RunConfig:
    base = dict(network="resnet20", method="bp", dataset="fake", image_size=8, batch_size=8, lr=0.05,
                device="cpu", seed=1)
    base.update(kw)
    return RunConfig(**base)


def tiny_opts(tmp_path, **kw) -> TrainOptions:
    base = dict(epochs=2, warmup_epochs=1, train_subset=32, test_subset=16, num_workers=0, progress=False,
                checkpoint_dir=str(tmp_path / "ckpt"))
    base.update(kw)
    return TrainOptions(**base)


# ----- the recipe ---------------------------------------------------------------------------
def test_recipe_matches_the_papers():
    assert recipe_batch_size("cifar10") == 1024 and recipe_lr("cifar10") == 0.8
    assert recipe_batch_size("svhn") == 1024 and recipe_lr("svhn") == 0.8
    assert recipe_batch_size("stl10") == 128 and recipe_lr("stl10") == 0.1
    # linear scaling: both recipes are 0.1 per 128 images
    assert recipe_lr("cifar10", 128) == pytest.approx(0.1)
    assert recipe_lr("stl10", 256) == pytest.approx(0.2)
    assert default_warmup_epochs(160) == 10 and default_warmup_epochs(400) == 10
    assert default_warmup_epochs(2) == 0 and default_warmup_epochs(32) == 2
    d = RunConfig()
    assert (d.momentum, d.weight_decay) == (0.9, 1e-4)


def test_schedule_warmup_from_001_then_cosine_to_zero():
    lr, epochs, warm = 0.8, 160, 10
    assert lr_at(0, lr, epochs, warm) == pytest.approx(0.01)
    cos = lambda e: 0.5 * lr * (1 + math.cos(math.pi * e / epochs))  # noqa: E731
    assert lr_at(warm, lr, epochs, warm) == pytest.approx(cos(warm))
    assert lr_at(5, lr, epochs, warm) == pytest.approx(0.01 + (cos(5) - 0.01) * 0.5)
    ws = [lr_at(e / 10, lr, epochs, warm) for e in range(0, 101)]
    assert all(a < b for a, b in zip(ws, ws[1:]))  # warm-up rises
    assert lr_at(80, lr, epochs, warm) == pytest.approx(0.4)
    assert lr_at(160, lr, epochs, warm) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(0, lr, epochs, 0) == pytest.approx(0.8)  # no warm-up: cosine from the peak


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="--epochs"):
        TrainOptions(epochs=0).validate()
    with pytest.raises(ConfigError, match="--warmup-epochs"):
        TrainOptions(epochs=2, warmup_epochs=5).validate()
    with pytest.raises(ConfigError, match="--train-subset"):
        TrainOptions(train_subset=0).validate()


# ----- training, checkpoints, resume -------------------------------------------------------------
def test_train_records_every_epoch_and_the_optimizer_follows_the_schedule(tmp_path):
    seen = []
    result = train(tiny_cfg(), tiny_opts(tmp_path), on_epoch=seen.append)
    assert result.status == "ok"
    assert [e["epoch"] for e in result.per_epoch] == [1, 2] == [e["epoch"] for e in seen]
    for e in result.per_epoch:
        assert 0.0 <= e["top1"] <= 1.0 and math.isfinite(e["train_loss"]) and e["seconds"] > 0
    assert result.per_epoch[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine reaches 0 at the end
    assert result.steps == 2 * 4 and result.forward_calls == 1 and result.step_seconds > 0
    parts = result.record_parts()
    assert parts["accuracy"]["test_error_pct"] == pytest.approx(100 * (1 - result.top1))
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and {"method", "optimizer", "scheduler", "rng", "history"} <= set(ckpt)
    assert ckpt["scheduler"]["last_epoch"] == 8


def test_resume_after_an_interruption_gives_the_uninterrupted_result(tmp_path):
    cfg = tiny_cfg(method="dgl", k=2)
    full = train(cfg, tiny_opts(tmp_path / "a"))

    class Stop(Exception):
        pass

    def stop_after_first(info):
        if info["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tiny_opts(tmp_path / "b"), on_epoch=stop_after_first)
    assert torch.load(tmp_path / "b" / "ckpt" / "last.pt", weights_only=True)["epoch"] == 1
    epochs_run = []
    resumed = train(cfg, tiny_opts(tmp_path / "b", resume=True), on_epoch=epochs_run.append)
    assert [e["epoch"] for e in epochs_run] == [2]  # only the missing epoch ran
    assert [e["epoch"] for e in resumed.per_epoch] == [1, 2]
    for a, b in zip(full.per_epoch, resumed.per_epoch):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["top1"] == b["top1"]
    sa = torch.load(tmp_path / "a" / "ckpt" / "last.pt", weights_only=True)["method"]
    sb = torch.load(tmp_path / "b" / "ckpt" / "last.pt", weights_only=True)["method"]
    for name in sa:
        torch.testing.assert_close(sa[name], sb[name], rtol=1e-5, atol=1e-6)
    # a finished checkpoint: --resume trains nothing and returns the same history
    again = train(cfg, tiny_opts(tmp_path / "b", resume=True), on_epoch=epochs_run.append)
    assert epochs_run == epochs_run[:1] and again.per_epoch == resumed.per_epoch


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    train(tiny_cfg(), tiny_opts(tmp_path, epochs=1, warmup_epochs=0))
    with pytest.raises(ConfigError, match="another run"):
        train(tiny_cfg(), tiny_opts(tmp_path, epochs=3, warmup_epochs=0, resume=True))
    with pytest.raises(ConfigError, match="another run"):
        train(tiny_cfg(lr=0.01), tiny_opts(tmp_path, epochs=1, warmup_epochs=0, resume=True))


def test_non_finite_loss_stops_the_run_as_diverged(tmp_path, monkeypatch):
    import hpff_bench.methods as methods

    real_build = methods.build_method

    def build(cfg, device="cpu", foreach=None):
        m = real_build(cfg, device, foreach)
        real_step = m.train_step
        calls = {"n": 0}

        def step(x, y):
            out = real_step(x, y)
            calls["n"] += 1
            if calls["n"] == 6:  # second epoch, second step
                return out._replace(loss=torch.tensor(float("nan")))
            return out

        m.train_step = step
        return m

    monkeypatch.setattr(methods, "build_method", build)
    result = train(tiny_cfg(), tiny_opts(tmp_path, epochs=3))
    assert result.status == "diverged"
    assert "nan" in result.message and "epoch 2, step 2" in result.message
    assert [e["epoch"] for e in result.per_epoch] == [1]  # the finished epoch is kept
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["epoch"] == 1
    rec = store.make_record("train", result.status, message=result.message, **result.record_parts())
    json.loads(store.dumps(rec))  # strict JSON even with a nan around


# ----- the command --------------------------------------------------------------------------
def test_train_command_writes_a_record_and_resumes(tmp_path, capsys):
    argv = ["train", "--network", "resnet20", "--dataset", "fake", "--image-size", "8", "--batch-size", "8",
            "--device", "cpu", "--epochs", "1", "--train-subset", "16", "--test-subset", "8",
            "--results", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "lr 0.00625 (recipe)" in out  # 0.8 * 8 / 1024
    assert "top-1" in out and "record:" in out
    files = list(tmp_path.glob("*.jsonl"))
    assert [f.name for f in files] == ["resnet20-bp-k1-fake.jsonl"]
    assert main([*argv, "--resume", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["kind"] == "train" and rec["status"] == "ok" and rec["accuracy"]["epochs"] == 1
    frame = store.load_results(tmp_path)
    assert len(frame) == 2 and set(frame["accuracy.epochs"]) == {1}


def test_train_command_without_data_says_how_to_point_data_root(tmp_path, capsys):
    argv = ["train", "--network", "resnet20", "--dataset", "cifar10", "--epochs", "1", "--device", "cpu",
            "--data-root", str(tmp_path / "nothing"), "--no-download", "--results", str(tmp_path / "res")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "CIFAR-10 is not available" in err and "--data-root" in err
    assert list(tmp_path.iterdir()) == []  # bad input: no record, no directory, no "train ..." line


@pytest.mark.parametrize("flag", ["--steps", "--warmup"])
def test_train_has_no_step_count_flags(flag, capsys):
    """Training counts epochs; profile's step counts would be silently ignored there."""
    assert main(["train", flag, "3"]) == 2
    assert f"unrecognized arguments: {flag} 3" in capsys.readouterr().err
