"""Gradients that must (or must not) flow, and equal gradients between equivalent executions."""

from __future__ import annotations

import pytest
import torch

from hpff_bench.config import RunConfig
from hpff_bench.methods import build_method, synthetic_batch

LOCAL = ("greedy", "dgl", "infopro", "predsim")
ALL = ("bp", "gc", *LOCAL)


def cfg(**kw) -> RunConfig:
    base = dict(network="resnet20", batch_size=8, seed=3)
    base.update(kw)
    return RunConfig(**base)


def grads(method, x, y) -> dict[str, torch.Tensor]:
    method.compute_gradients(x, y)
    return {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in method.named_parameters()
    }


def backbone_grads(method, x, y) -> dict[str, torch.Tensor]:
    """Backbone gradients keyed by unit order, so differently split networks compare."""
    g = grads(method, x, y)
    names = [n for n, _ in method.named_parameters() if n.startswith("modules_.")]
    return {f"param{i}": g[n] for i, n in enumerate(names)}


def assert_same(a: dict, b: dict, atol=1e-5, rtol=1e-4):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.fixture(scope="module")
def batch():
    return synthetic_batch(cfg(), "cpu")


@pytest.mark.parametrize("method", ("gc", *LOCAL))
def test_k1_and_checkpointing_match_backprop(method, batch):
    x, y = batch
    ref = backbone_grads(build_method(cfg(method="bp")), x, y)
    k = 4 if method == "gc" else 1
    got = backbone_grads(build_method(cfg(method=method, k=k)), x, y)
    assert_same(ref, got)


@pytest.mark.parametrize("method", LOCAL)
def test_module_gradients_depend_only_on_their_own_loss(method, batch):
    x, y = batch
    m = build_method(cfg(method=method, k=4))
    before = grads(m, x, y)
    for j in (0, 2):
        m.il_weights[j] *= 7.0  # change the local losses of modules 0 and 2 only
    after = grads(m, x, y)
    for name in before:
        changed = not torch.allclose(before[name], after[name])
        if name.startswith("modules_.0.") or name.startswith("modules_.2.") or name.startswith(
            ("aux_nets.independent0.", "aux_nets.independent2.")
        ):
            assert changed or before[name].abs().max() == 0, name
        else:
            assert not changed, f"{name} changed when only modules 0 and 2's losses changed"


@pytest.mark.parametrize("method", LOCAL)
def test_last_module_learns_only_from_the_final_cross_entropy(method, batch):
    x, y = batch
    m = build_method(cfg(method=method, k=3))
    last = {n: g for n, g in grads(m, x, y).items() if n.startswith("modules_.2.")}
    m.il_weights[:2] = [0.0, 0.0]
    again = {n: g for n, g in grads(m, x, y).items() if n.startswith("modules_.2.")}
    assert_same(last, again, atol=0, rtol=0)
    # and module 0 gets nothing once its own loss is off
    assert all(
        g.abs().max() == 0 for n, g in grads(m, x, y).items() if n.startswith("modules_.0.")
    )


@pytest.mark.parametrize("method", LOCAL)
@pytest.mark.parametrize("hilo", (False, True))
def test_local_module_graph_is_released_before_the_next_forward(method, hilo, batch):
    """When module k runs, the output (and so the graph) of every earlier module is gone; under
    HiLo (windows of 2, fused) all but module k-1's, which the window (k-1, k) still needs."""
    import weakref

    x, y = batch
    m = build_method(cfg(method=method, k=4, hilo=hilo))
    alive = []

    def remember(mod, inp, out):
        alive.append(weakref.ref(out))

    def check(mod, inp):
        kept = alive[:-1] if hilo else alive
        held = [j for j, r in enumerate(kept) if r() is not None]
        assert not held, f"module {len(alive)} runs while the output of module(s) {held} is alive"

    for module in m.modules_:
        module.register_forward_hook(remember)
        module.register_forward_pre_hook(check)
    m.train_step(x, y)
    assert len(alive) == 4


@pytest.mark.parametrize("method", LOCAL)
def test_hilo_fused_equals_reference_with_il_weight_1(method, batch):
    """At the default IL weight (0.001) the tolerance cannot see the independent level; at 1 it can."""
    x, y = batch
    kw = dict(method=method, k=4, hilo=True, w_independent=1.0)
    fused, ref = build_method(cfg(**kw, hilo_exec="fused")), build_method(cfg(**kw, hilo_exec="reference"))
    g = grads(fused, x, y)
    assert_same(g, grads(ref, x, y))
    # the IL level is visible at this weight: dropping it changes module 0's gradients
    no_il = build_method(cfg(**kw, hilo_exec="fused", independent=False))
    g0 = grads(no_il, x, y)
    assert not torch.allclose(g["modules_.0.0.0.weight"], g0["modules_.0.0.0.weight"], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("method", LOCAL)
@pytest.mark.parametrize("independent", (True, False))
def test_hilo_fused_equals_reference(method, independent, batch):
    x, y = batch
    kw = dict(method=method, k=4, hilo=True, independent=independent)
    fused = build_method(cfg(**kw, hilo_exec="fused"))
    ref = build_method(cfg(**kw, hilo_exec="reference"))
    assert_same(grads(fused, x, y), grads(ref, x, y))
    # forward calls per step: K for fused, K + s(K - s + 1) for the reference
    assert fused.forward_calls == 4
    assert ref.forward_calls == 4 + 2 * 3


def test_hilo_fused_equals_reference_with_span_3_and_pff(batch):
    x, y = batch
    kw = dict(method="infopro", k=5, hilo=True, cascade_span=3, pff_grid=2)
    assert_same(
        grads(build_method(cfg(**kw, hilo_exec="fused")), x, y),
        grads(build_method(cfg(**kw, hilo_exec="reference")), x, y),
    )


def test_cascade_gradient_stops_at_the_window_input(batch):
    """CL only, span 2: module 0 is reached by window 0 alone; removing module 1's... """
    x, y = batch
    m = build_method(cfg(method="dgl", k=4, hilo=True, independent=False))
    base = grads(m, x, y)
    m.w_cascade = 0.0
    zero = grads(m, x, y)
    assert all(g.abs().max() == 0 for g in zero.values()), "with no loss, nothing may get a gradient"
    assert any(base[n].abs().max() > 0 for n in base if n.startswith("modules_.0."))
    # window 2 (modules 2-3) is closed by the classifier; window 1's aux net sits on module 2
    m.w_cascade = 0.999
    m.cascade[1].terms[0].coef = 0.0
    no_w1 = grads(m, x, y)
    # module 0 only belongs to window 0: unchanged; module 1 belongs to windows 0 and 1: changed
    assert_same({n: base[n] for n in base if n.startswith("modules_.0.")},
                {n: no_w1[n] for n in no_w1 if n.startswith("modules_.0.")})
    assert not all(
        torch.allclose(base[n], no_w1[n]) for n in base if n.startswith("modules_.1.")
    )


@pytest.mark.parametrize("method", LOCAL)
def test_pff_streamed_equals_batched(method, batch):
    x, y = batch
    kw = dict(method=method, k=3, hilo=True, pff_grid=2)
    assert_same(
        grads(build_method(cfg(**kw, pff_exec="batched")), x, y),
        grads(build_method(cfg(**kw, pff_exec="streamed")), x, y),
    )


def test_pff_linear_head_equals_no_patches(batch):
    """Greedy's head (GAP + linear) is linear in its pooled input: patch-averaging changes nothing."""
    x, y = batch
    one = grads(build_method(cfg(method="greedy", k=3)), x, y)
    for exec_mode in ("batched", "streamed"):
        two = grads(build_method(cfg(method="greedy", k=3, pff_grid=2, pff_exec=exec_mode)), x, y)
        assert_same(one, two)


def test_pff_changes_gradients_of_nonlinear_heads(batch):
    x, y = batch
    one = grads(build_method(cfg(method="dgl", k=3)), x, y)
    two = grads(build_method(cfg(method="dgl", k=3, pff_grid=2)), x, y)
    assert not all(torch.allclose(one[n], two[n]) for n in one if n.startswith("modules_.0."))


def test_pff_grid_must_divide_feature_maps():
    from hpff_bench.errors import ConfigError

    # resnet20 on 24x24 images: stage 3 maps are 6x6, which a 4x4 grid cannot split
    with pytest.raises(ConfigError, match=r"--pff-grid 4 .*module 2.*\(6x6\)"):
        build_method(cfg(method="dgl", k=4, split="uniform", pff_grid=4, image_size=24))


@pytest.mark.parametrize("method", ALL)
def test_train_step_updates_parameters_and_predict_works(method, batch):
    x, y = batch
    m = build_method(cfg(method=method, k=1 if method == "bp" else 3))
    before = [p.detach().clone() for p in m.backbone_parameters()]
    out = m.train_step(x, y)
    assert out.logits.shape == (8, 10) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, m.backbone_parameters()))
    assert m.predict(x).shape == (8, 10)


def test_infopro_supcon_and_2c2f_build_and_step(batch):
    x, y = batch
    m = build_method(cfg(method="infopro", k=3, local_loss="supcon", aux="2c2f"))
    assert torch.isfinite(m.train_step(x, y).loss)


def test_infopro_lambda_schedule():
    from hpff_bench.config import InfoProLambdas

    lam = InfoProLambdas(ixx_1=5, ixy_1=0.5, ixx_2=0, ixy_2=0)
    assert lam.at(0, 3) == (5, 0.5)
    assert lam.at(1, 3) == (2.5, 0.25)
    assert lam.at(2, 3) == (0, 0)
    assert lam.at(0, 1) == (5, 0.5)  # K = 2: one local module, ratio 0
    # the official code's denominator is the paper's K - 2, the position the module index:
    # at HPFF's K=16 (15 modules) ours ends at ratio 1 (λ = 0), the official at 13/14
    assert lam.at(13, 14) == (0, 0)
    assert lam.at_official(13, 16) == pytest.approx((5 / 14, 0.5 / 14))
    assert lam.at_official(1, 2) == (5, 0.5)
