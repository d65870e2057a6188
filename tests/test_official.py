"""`--variant official`: the official HPFF CIFAR code's step (methods/official.py).

The reference here is a direct transcription of the official forward as the HPFF paper and
DESIGN.md §7 describe it, written as one summed loss and one backward (the official code
backpropagates per position; the gradients are the same sums)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hpff_bench.config import HPFF_INFOPRO_LAMBDAS, RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.methods import build_method, synthetic_batch


def official(**kw) -> RunConfig:
    base = dict(network="resnet32", method="infopro", k=4, hilo=True, pff_grid=2, aux="2c2f",
                variant="official", hilo_exec="official", batch_size=4, seed=5, lambdas=HPFF_INFOPRO_LAMBDAS)
    base.update(kw)
    return RunConfig(**base)


def transcribed_loss(m, x, y, cfg) -> torch.Tensor:
    """The official step's total loss, from the paper's description (positions i = 1 … n-2)."""
    mods, n, k = m.modules_, len(m.modules_), cfg.k
    wx, wy = cfg.w_independent, cfg.w_cascade
    stem, rest0 = mods[0][0], torch.nn.Sequential(*list(mods[0])[1:])
    s = stem(x)  # the stem is trained through the first window only
    h = [rest0(s).detach()]  # x path: each module on the detached output of the one before
    for j in range(1, n):
        h.append(mods[j](h[-1]).detach())
    image = x * m._std + m._mean
    total = 0.0
    for i in range(1, n - 1):
        ratio = i / (k - 2)  # the paper's K, not the module count
        lam1 = cfg.lambdas.ixx_1 * (1 - ratio) + cfg.lambdas.ixx_2 * ratio
        lam2 = cfg.lambdas.ixy_1 * (1 - ratio) + cfg.lambdas.ixy_2 * ratio
        il = F.cross_entropy(m.independent[str(i)].head(mods[i](h[i - 1])), y)
        window_in = rest0(s) if i == 1 else mods[i - 1](h[i - 2])
        z = mods[i](window_in)
        cl = m.cascade[str(i)]
        bce = 0.0
        half, hi = z.shape[2] // 2, x.shape[2] // 2
        if cfg.pff_grid == 1:  # HiLo alone: InfoPro's whole-map decoder (the official code has no such path)
            up = F.interpolate(z, size=x.shape[2:], mode="bilinear", align_corners=True)
            bce = F.binary_cross_entropy(cl.decoder.decoder(up), image)
        for q, (r, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1)) if cfg.pff_grid == 2 else ()):
            patch = z[:, :, r * half:(r + 1) * half, c * half:(c + 1) * half]
            up = F.interpolate(patch, size=(hi, hi), mode="bilinear", align_corners=True)
            target = image[:, :, r * hi:(r + 1) * hi, c * hi:(c + 1) * hi]
            bce = bce + F.binary_cross_entropy(cl.decoder.decoders[q](up), target)  # summed, not averaged
        ce = F.cross_entropy(cl.classifier.head(z), y)
        total = total + wx * il + wy * (lam1 * bce + lam2 * ce)
    last_x = mods[n - 1](h[n - 2])
    last_y = mods[n - 1](rest0(s) if n == 2 else mods[n - 2](h[n - 3]))
    return total + wx * F.cross_entropy(last_x, y) + wy * F.cross_entropy(last_y, y)


@pytest.mark.parametrize("k,pff_grid", ((2, 2), (4, 2), (16, 2), (4, 1)))
def test_official_step_equals_the_transcribed_official_forward(k, pff_grid):
    # K=16 (15 modules): the λ denominator K-2 = 14 differs from ours (13 local modules - 1);
    # pff_grid 1: InfoPro's HiLo without PFF, its whole-map decoder in place of the quadrants
    cfg = official(k=k, batch_size=2 if k == 16 else 4, pff_grid=pff_grid)
    m = build_method(cfg).double()
    x, y = synthetic_batch(cfg)
    x = x.double()
    m.compute_gradients(x, y)
    got = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad(set_to_none=True)
    m.train()
    transcribed_loss(m, x, y, cfg).backward()
    want = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys()
    for name in want:
        rel = (got[name] - want[name]).norm() / want[name].norm().clamp_min(1e-300)
        assert rel <= 1e-6, f"{name}: relative difference {rel:.2e}"
    # the stem learns (through the first window), the unused official modules never do
    assert any(n.startswith("modules_.0.0.") for n in got)
    assert not any(n.startswith("unused.") for n in got)


def test_official_aux_parameter_counts_equal_the_official_code():
    """Counts measured on the official model (Zeudfish/HPFF, 2c2f, cross-entropy, CIFAR-10):
    aux nets a step uses = net_classifier/aux_decoder/aux_classifier at positions 1 … n-2."""
    for network, k, aux_used, total in (("resnet32", 16, 1_702_336, 2_677_176), ("resnet110", 55, 6_761_728, 9_685_996)):
        m = build_method(official(network=network, k=k, split="hpff"), device="meta")
        assert sum(p.numel() for p in m.aux_parameters()) == aux_used
        assert sum(p.numel() for p in m.parameters()) == total
        assert m.module_count == {16: 15, 55: 54}[k]


def test_official_lambda_uses_the_papers_k():
    lam = HPFF_INFOPRO_LAMBDAS
    # resnet32 "K=16" has 15 modules; the last local position i = 13 gets ratio 13/14 officially
    assert lam.at_official(13, 16) == pytest.approx((5 / 14, 0.5 / 14))
    assert lam.at_official(1, 16) == pytest.approx((5 * 13 / 14, 0.5 * 13 / 14))
    assert lam.at_official(1, 2) == (5.0, 0.5)
    # ours: position 13 of 14 local modules is the last: ratio 1, λ = (ixx_2, ixy_2) = (0, 0)
    assert lam.at(13, 14) == (0.0, 0.0)


def test_official_infopro_hilo_alone_swaps_in_infopro_s_whole_map_decoder():
    """The official HPFF code always runs PFF's quadrant decoders; for HiLo alone InfoPro's own
    decoder (C -> 12 -> 3, biases, BN) takes their place, one instead of four."""
    m = build_method(official(pff_grid=1, k=4), device="meta")
    dec = m.cascade["1"].decoder
    ch = m.cascade["1"].classifier.head[0].in_channels
    assert sum(p.numel() for p in dec.parameters()) == (ch * 12 * 9 + 12) + 2 * 12 + (12 * 3 * 9 + 3)
    quads = build_method(official(k=4), device="meta").cascade["1"].decoder
    assert sum(p.numel() for p in quads.parameters()) == 4 * sum(p.numel() for p in dec.parameters())
    assert official(pff_grid=1).validate().label == "InfoPro+HiLo (official code)"
    with pytest.raises(ConfigError, match="InfoPro runs --hpff .* or --hilo"):
        official(pff_grid=4).validate()


def test_label_and_record_say_which_variant_ran():
    cfg = official()
    assert cfg.label == "InfoPro+HPFF (official code)"
    assert cfg.to_dict()["variant"] == "official"
    assert official(method="dgl", pff_grid=1).label == "DGL+HiLo (official code)"
    assert RunConfig(method="infopro", k=4, hilo=True, pff_grid=2).label == "InfoPro+HPFF (n=2)"


def test_an_official_config_survives_the_round_trip_a_sweep_worker_makes():
    """Workers get config.to_dict() (image size resolved to the dataset's own): still valid; a
    foreign image size is not."""
    cfg = official(k=16).validate()
    again = RunConfig.from_dict(cfg.to_dict()).validate()
    assert again.image_size == 32 and again.label == "InfoPro+HPFF (official code)"
    with pytest.raises(ConfigError, match="at their own image size"):
        cfg.replace(image_size=64).validate()


@pytest.mark.parametrize("method", ("dgl", "greedy", "predsim"))
def test_official_execution_runs_other_local_methods(method):
    cfg = official(method=method, pff_grid=1)
    m = build_method(cfg)
    out = m.train_step(*synthetic_batch(cfg))
    assert torch.isfinite(out.loss)
    # forward calls: module 0 twice (x path, first window), every other module 2-3 times
    n = m.module_count
    assert m.forward_calls == 2 + 3 * (n - 2) + 2


@pytest.mark.parametrize(
    "argv,message",
    [
        (("--method", "bp"), "no path for --method bp"),
        (("--network", "resnet20"), "no path for --network resnet20"),
        (("--k", "5"), "no K=5"),
        (("--split", "uniform"), "--split must be auto or hpff"),
        (("--method", "dgl"), "--method dgl has no decoder"),
        (("--hilo-exec", "fused"), "own execution"),
        (("--dataset", "imagenet"), "the official code runs"),
        (("--precision", "bf16"), "fp32"),
    ],
)
def test_bad_official_combination_is_one_line_and_exit_2(argv, message, cli, monkeypatch):
    from hpff_bench import methods

    def never(*a, **k):
        raise AssertionError("a model was built before the combination was refused")

    monkeypatch.setattr(methods, "build_method", never)
    base = ["--network", "resnet32", "--method", "infopro", "--k", "4", "--hpff", "--variant", "official",
            "--batch-size", "2"]
    code, out, err = cli("estimate", *base, *argv)
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_hilo_exec_official_needs_the_official_variant(cli):
    code, _, err = cli("estimate", "--method", "infopro", "--k", "4", "--hilo", "--hilo-exec", "official")
    assert code == 2 and "needs --variant official" in err


def test_official_variant_peak_holds_every_graph_of_a_position():
    """The official step keeps both paths' graphs and all aux graphs until one backward per
    position, so on the same aux nets it peaks above ours (which frees each level at once)."""
    from hpff_bench.memory.trace import trace_training

    common = dict(network="resnet32", method="infopro", k=4, hilo=True, pff_grid=2, aux="2c2f", batch_size=8)
    off = trace_training(official(**{**common}), fake=True, warmup=1, steps=1).tracker
    ours = trace_training(RunConfig(**common, hilo_exec="reference"), fake=True, warmup=1, steps=1).tracker
    assert off.peak > ours.peak


def test_supcon_counts_anchors_without_positives_as_the_official_loss():
    """Batch of 3: anchors 0 and 2 share a class (one positive each), anchor 1 has none.
    Official: mean over all 3 anchors, anchor 1 contributing 0."""
    import math

    from hpff_bench.aux.losses import supcon

    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    t = 0.5  # a temperature where the float32 loss is far above rounding
    # anchor 0: others are z1 (dot 0) and z2 (dot 1, the positive)
    per_positive_anchor = -(1 / t - math.log(math.exp(0 / t) + math.exp(1 / t)))
    want = (2 * per_positive_anchor + 0.0) / 3
    assert supcon(z, y, temperature=t).item() == pytest.approx(want, rel=1e-6)
    assert want < per_positive_anchor  # a mean over anchors with positives only would be 1.5x this


def test_recipes_are_the_default_for_unset_infopro_options():
    import argparse

    from hpff_bench.cli_options import add_config_arguments, config_from_args
    from hpff_bench.recipes import infopro_recipe

    p = argparse.ArgumentParser()
    add_config_arguments(p)
    c = config_from_args(p.parse_args(["--network", "resnet110", "--method", "infopro", "--k", "16"]))
    assert (c.aux, c.local_loss, tuple(vars(c.lambdas).values())) == ("1c2f", "supcon", (5, 0, 0.5, 1))
    c = config_from_args(p.parse_args(["--network", "resnet32", "--method", "infopro", "--k", "4", "--ixy-2", "3"]))
    assert tuple(vars(c.lambdas).values()) == (6, 0, 1, 3)  # the user's value wins, the rest from the recipe
    c = config_from_args(p.parse_args(["--method", "infopro", "--k", "16", "--split", "hpff", "--hpff"]))
    assert (c.aux, c.local_loss, c.lambdas) == ("2c2f", "ce", HPFF_INFOPRO_LAMBDAS)
    assert infopro_recipe("cifar10", "resnet110", 55, False) is None  # no published command
    assert "comand.sh" in infopro_recipe("svhn", "resnet110", 8, False).source
    assert infopro_recipe("cifar10", "resnet32", 16, True).epochs == 400


def test_official_model_holds_batch_sized_denormalisation_tensors():
    """The official model's mean/std are `.expand(batch, 3, H, W).cuda()`: a device copy of an
    expanded tensor is materialised, 2 x B x 3 x H x W floats for the model's life."""
    from hpff_bench.memory.trace import trace_training
    from hpff_bench.memory.tracker import cuda_block_size

    b = 8
    m = build_method(official(batch_size=b))
    mean, std = m._batch_mean, m._batch_std
    assert mean.shape == std.shape == (b, 3, 32, 32)
    assert mean.untyped_storage().nbytes() == std.untyped_storage().nbytes() == b * 3 * 32 * 32 * 4
    x = torch.randn(b, 3, 32, 32)
    assert torch.equal(m.denormalize(x), x * m._std + m._mean)
    assert torch.equal(m.denormalize(x[:3]), x[:3] * m._std + m._mean)  # a last, smaller batch

    t = trace_training(official(batch_size=b), fake=True, warmup=1, steps=1, rounding=cuda_block_size).tracker
    params = sum(cuda_block_size(p.untyped_storage().nbytes()) for p in m.parameters())
    buffers = sum(cuda_block_size(x.untyped_storage().nbytes()) for x in m.buffers())
    # the tracker counts them as the model's state, present at the peak
    assert t.peak_breakdown["parameters"] == params + buffers
    assert buffers >= 2 * b * 3 * 32 * 32 * 4


def test_report_puts_the_official_rows_beside_ours(tmp_path):
    """One setting, ours and the official code's InfoPro+HPFF: both in the headline rows, in the
    same InfoPro panel of memory_vs_k, each with its own label."""
    import matplotlib.pyplot as plt

    from hpff_bench.report import figures as Fg
    from hpff_bench.report import tables as T
    from hpff_bench.report.load import read_results
    from hpff_bench.runner.store import dumps, make_record

    common = dict(network="resnet32", method="infopro", k=16, split="hpff", hilo=True, pff_grid=2,
                  batch_size=1024)
    runs = {
        RunConfig(network="resnet32", method="bp", batch_size=1024): 2.5e9,
        RunConfig(**common): 1.3e9,
        RunConfig(**common, variant="official", hilo_exec="official"): 1.7e9,
    }
    f = tmp_path / "r.jsonl"
    f.write_text("".join(dumps(make_record("estimate", "ok", config=c, predicted={
        "peak_allocated_bytes": int(v), "device_used_bytes": int(v)})) + "\n" for c, v in runs.items()))
    cfg = T.configs(T.add_method_names(read_results([f]).frame))
    rows = T.main_variants(cfg)
    names = set(rows["name"])
    assert {"InfoPro+HPFF (n=2)", "InfoPro+HPFF (official code)"} <= names
    compact = Fg.compact_settings(rows)
    panel = Fg._panel_rows(compact, "setting", compact["setting"].iloc[0], "InfoPro")
    assert {"InfoPro+HPFF (n=2)", "InfoPro+HPFF (official code)"} <= set(panel["name"])
    assert set(T.memory_table(cfg).data["method"]) >= {"InfoPro+HPFF (n=2)", "InfoPro+HPFF (official code)"}
    fig = Fg.memory_vs_k(cfg)
    legend = {t.get_text() for lg in fig.legends for t in lg.get_texts()}
    plt.close(fig)
    assert {"InfoPro+HPFF (n=2)", "InfoPro+HPFF (official code)"} <= legend
