"""Every aux net accepts the channel counts and spatial sizes a CIFAR ResNet produces."""

import pytest
import torch

from hpff_bench.aux.heads import Decoder, DGLHead, GreedyHead, InfoProClassifier
from hpff_bench.aux.losses import supcon
from hpff_bench.aux.pff import PatchBatchNorm2d, fold_patches, patch_groups, patch_slices

STAGES = [(16, 32), (32, 16), (64, 8)]


@pytest.mark.parametrize("channels,spatial", STAGES)
@pytest.mark.parametrize("grid", [1, 2, 4])
def test_heads_accept_every_stage(channels, spatial, grid):
    s = spatial // grid
    x = torch.randn(4, channels, s, s)
    for head in (GreedyHead(channels, s, 10), DGLHead(channels, s, 10),
                 InfoProClassifier(channels, s, 10, "1c2f"), InfoProClassifier(channels, s, 128, "2c2f")):
        out = head(x)
        assert out.shape[0] == 4 and out.shape[1] in (10, 128)
    assert Decoder(channels, 32 // grid)(x).shape == (4, 3, 32 // grid, 32 // grid)


def test_infopro_classifier_widths_follow_the_paper():
    assert InfoProClassifier(16, 32, 10).features[0].out_channels == 32
    assert InfoProClassifier(16, 32, 10).features[0].stride == (2, 2)
    assert InfoProClassifier(64, 8, 10).features[0].stride == (1, 1)
    assert len(InfoProClassifier(32, 16, 10, "2c2f").features) == 6


def test_fold_patches_matches_slices():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    folded = fold_patches(x, 2).view(2, 4, 3, 2, 2)
    for p, (hs, ws) in enumerate(patch_slices(4, 4, 2)):
        assert torch.equal(folded[:, p], x[:, :, hs, ws])


def test_patch_batchnorm_normalises_each_patch_alone():
    bn = PatchBatchNorm2d(3)
    x = torch.randn(8, 3, 4, 4)
    folded = fold_patches(x, 2)
    with patch_groups(4):
        out = bn(folded).view(8, 4, 3, 2, 2)
    for p, (hs, ws) in enumerate(patch_slices(4, 4, 2)):
        alone = torch.nn.functional.batch_norm(x[:, :, hs, ws], None, None, training=True)
        torch.testing.assert_close(out[:, p], alone, atol=1e-5, rtol=1e-5)


def test_supcon_prefers_clustered_features():
    y = torch.tensor([0, 0, 1, 1])
    good = torch.tensor([[1.0, 0], [1, 0.01], [0, 1], [0.01, 1]])
    bad = torch.tensor([[1.0, 0], [0, 1], [1, 0.01], [0.01, 1]])
    assert supcon(good, y) < supcon(bad, y)
    assert torch.isfinite(supcon(torch.randn(4, 8), torch.tensor([0, 1, 2, 3])))


# PredSim as anokland/local-loss train.py builds it; counts from running its LocalLossBlockConv
@pytest.mark.parametrize("channels,spatial,params,pool", [
    (16, 32, 43_274, (2, 2)), (32, 16, 50_186, (2, 1)), (64, 8, 77_834, None),  # resnet32 / resnet110 stages
    (2048, 7, 37_789_706, (8, 4)),
])
def test_predsim_heads_have_the_originals_parameters(channels, spatial, params, pool):
    from hpff_bench.aux.heads import PredSimPrediction, PredSimSimilarity

    pred, sim = PredSimPrediction(channels, spatial, 10), PredSimSimilarity(channels, spatial)
    assert sum(p.numel() for m in (pred, sim) for p in m.parameters()) == params
    assert pred.fc.in_features <= 4096 and (pred.fc.weight == 0).all()
    assert (None if isinstance(pred.pool, torch.nn.Identity) else pred.pool.kernel_size) == pool
    assert pred(torch.randn(2, channels, spatial, spatial)).shape == (2, 10)
    assert sim(torch.randn(2, channels, spatial, spatial)).shape == (2, channels)  # std-pooled


def test_predsim_label_similarity_is_centred():
    from hpff_bench.aux.losses import centred_cosine_similarity, similarity_matching

    y = torch.tensor([0, 0, 1, 2])
    target = centred_cosine_similarity(torch.nn.functional.one_hot(y, 10).float())
    assert torch.allclose(target[0], torch.tensor([1.0, 1.0, -1 / 9, -1 / 9]))
    feats = torch.randn(4, 8)
    shifted = feats + torch.randn(4, 1) * 5  # centring: an offset per sample changes nothing
    torch.testing.assert_close(similarity_matching(shifted, y, 10), similarity_matching(feats, y, 10))
    assert not torch.allclose(torch.nn.functional.cosine_similarity(shifted[:1], shifted[1:]),
                              torch.nn.functional.cosine_similarity(feats[:1], feats[1:]))
    # features equal to the centred one-hot labels match them exactly
    perfect = torch.nn.functional.one_hot(y, 10).float()
    assert similarity_matching(perfect, y, 10) < 1e-10


@pytest.mark.parametrize("channels, size, out", [(64, 4, 16), (32, 8, 32), (16, 16, 16)])
def test_decoder_runs_channels_last_after_its_upsample_with_the_nchw_values(channels, size, out):
    """The decoder switches to channels-last before its upsample (faster on the CPU); the values
    and gradients are those of the plain NCHW computation, and without an upsample it stays NCHW
    (a channels-last copy would be saved by the conv: memory)."""
    torch.manual_seed(0)
    dec = Decoder(channels, out).double()
    x = torch.randn(6, channels, size, size, dtype=torch.float64, requires_grad=True)
    got = dec(x)
    upsampled = size != out
    assert got.is_contiguous(memory_format=torch.channels_last) == upsampled
    x2 = x.detach().clone().requires_grad_()
    h = torch.nn.functional.interpolate(x2, size=(out, out), mode="bilinear", align_corners=True) if upsampled else x2
    want = dec.net(h)
    assert want.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.rand_like(got)
    got.backward(g)
    grads = [p.grad.clone() for p in dec.parameters()]
    dec.zero_grad()
    want.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-12, atol=1e-12)
    for a, p in zip(grads, dec.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spatial, size", [(32, 8), (16, 4), (8, 2), (7, 2), (2, 2)])
def test_avg_pool_to_is_adaptive_avg_pool(spatial, size):
    """DGL's head pools through avg_pool2d where the size divides the input (faster on the CPU)
    and adaptive pooling elsewhere (7 -> 2: overlapping windows); values and gradients equal."""
    from hpff_bench.aux.heads import AvgPoolTo

    x = torch.randn(3, 5, spatial, spatial, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    got, want = AvgPoolTo(size)(x), torch.nn.functional.adaptive_avg_pool2d(x2, size)
    assert got.shape == want.shape == (3, 5, size, size)
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    g = torch.randn_like(got)
    got.backward(g)
    want.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reconstruction_equals_torch_binary_cross_entropy(dtype):
    """Our vectorised BCE gives torch's value and gradient, saturated outputs included (x = 0 and
    x = 1: log clamped at -100, the gradient's denominator at 1e-12), on a channels-last input."""
    from hpff_bench.aux.losses import reconstruction

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 6, 6, generator=g, dtype=dtype)
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 1e-30], dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    t = torch.rand(4, 3, 6, 6, generator=g, dtype=dtype)
    x2 = x.detach().clone().requires_grad_()
    got, want = reconstruction(x, t), torch.nn.functional.binary_cross_entropy(x2, t)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(got, want, rtol=tol, atol=0)
    (3 * got).backward()
    (3 * want).backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=tol, atol=0)
    assert abs(x.grad[0, 0, 0, 1].item()) > 1e9  # the clamped denominator, as torch's


def test_reconstruction_saves_what_torch_binary_cross_entropy_saves():
    from hpff_bench.aux.losses import reconstruction

    def saved(loss_fn):
        x = torch.rand(2, 3, 4, 4).requires_grad_()
        t = torch.rand(2, 3, 4, 4)
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda s: kept.append(s) or s, lambda s: s):
            loss_fn(x, t)
        return sorted((s.data_ptr() == x.data_ptr(), s.data_ptr() == t.data_ptr(), s.shape) for s in kept)

    assert saved(reconstruction) == saved(torch.nn.functional.binary_cross_entropy)


def test_reconstruction_rejects_mismatched_shapes():
    from hpff_bench.aux.losses import reconstruction

    with pytest.raises(ValueError, match=r"decoded \(2, 3, 4, 4\) and target \(2, 3, 2, 2\) differ"):
        reconstruction(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 2, 2))


def test_reconstruction_peaks_no_higher_than_torch_binary_cross_entropy():
    """Sigmoid -> loss -> backward, live tensor bytes: our 0-d loss holds only its own 4 bytes
    (torch's CPU loss keeps its per-element buffer), and our backward's extra buffer is freed
    before the sigmoid backward allocates; so the peak is not higher, and everything made is
    freed again."""
    from hpff_bench.aux.losses import reconstruction
    from hpff_bench.memory.tracker import LiveTensorTracker

    def peak(loss_fn):
        z = torch.randn(8, 3, 16, 16).requires_grad_()
        t = torch.rand(8, 3, 16, 16)
        with LiveTensorTracker() as tracker:
            loss = loss_fn(torch.sigmoid(z), t)
            assert loss.dim() == 0
            held = loss.untyped_storage().nbytes()
            loss.backward()
            del loss
        return tracker.peak, tracker.current, held

    ours, theirs = peak(reconstruction), peak(torch.nn.functional.binary_cross_entropy)
    assert ours[2] == 4
    assert ours[0] <= theirs[0]
    assert ours[1] == theirs[1] == 8 * 3 * 16 * 16 * 4  # z.grad alone stays


def _bn_run(bn, x, dy):
    x = x.detach().requires_grad_()
    y = bn(x)
    y.backward(dy)
    return y, x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var, bn.num_batches_tracked


@pytest.mark.parametrize("momentum", (0.1, None))
@pytest.mark.parametrize("shape", ((6, 12, 32, 32), (5, 7, 3, 5)))
def test_channels_last_batch_norm_equals_torchs(shape, momentum):
    """aux.batch_norm's CPU kernel, taken for channels-last maps: output, gradients and running
    statistics as torch's kernel on the same map in NCHW (float64), layouts kept channels-last."""
    import copy

    from hpff_bench.aux import batch_norm

    torch.manual_seed(0)
    bn = PatchBatchNorm2d(shape[1], momentum=momentum).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(1, 2)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    assert batch_norm.applies(x, bn.weight) and not batch_norm.applies(x.contiguous(), bn.weight)
    ours, theirs = copy.deepcopy(bn), copy.deepcopy(bn)
    for _ in range(2):  # the second call updates running stats that the first one moved
        got, want = _bn_run(ours, x, dy), _bn_run(theirs, x.contiguous(), dy.contiguous())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert got[1].is_contiguous(memory_format=torch.channels_last)
    # the statistics are visible: a different batch mean moves the output
    assert not torch.allclose(_bn_run(copy.deepcopy(bn), 2 * x, dy)[1], got[1])


def test_channels_last_batch_norm_keeps_torchs_bytes():
    """Kept for backward: the same bytes as torch's kernel (output, mean, 1/std; the input is
    the caller's). Ours adds only per-channel vectors during the call: at its backward's peak
    two of fold·C floats (fold 32, C 12: 1,536 B each) and four of C floats (48 B each)."""
    from hpff_bench.aux import batch_norm
    from hpff_bench.memory.tracker import LiveTensorTracker

    def live(norm):
        x = torch.randn(4, 12, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
        w, b = torch.rand(12, requires_grad=True), torch.rand(12, requires_grad=True)
        with LiveTensorTracker(rounding=None) as tracker:
            y = norm(x, w, b)
            kept = tracker.current
            y.backward(torch.ones_like(y))
            del y
        return kept, tracker.peak

    ours = live(lambda x, w, b: batch_norm.channels_last_batch_norm(x, w, b, 1e-5)[0])
    theirs = live(lambda x, w, b: torch.nn.functional.batch_norm(x, None, None, w, b, True, 0.1, 1e-5))
    assert ours[0] == theirs[0] == 4 * 12 * 8 * 8 * 4 + 2 * 12 * 4
    assert ours[1] - theirs[1] == 2 * 32 * 12 * 4 + 4 * 12 * 4


def test_channels_last_batch_norm_stays_off_fake_nchw_and_half_maps():
    """The CUDA prediction traces fake tensors: they must see torch's kernel, as a GPU runs it."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from hpff_bench.aux import batch_norm

    w = torch.ones(4)
    cl = torch.randn(2, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    assert batch_norm.applies(cl, w)
    assert not batch_norm.applies(cl.contiguous(), w)
    assert not batch_norm.applies(cl.bfloat16(), w)
    assert not batch_norm.applies(cl, None)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        assert not batch_norm.applies(mode.from_tensor(cl), w)
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 4, 1, 1\)"):
        batch_norm.channels_last_batch_norm(torch.randn(1, 4, 1, 1), w, w, 1e-5)


@pytest.mark.parametrize("channels,spatial", STAGES)
def test_predsim_similarity_std_equals_torchs_std(channels, spatial):
    """PredSim's similarity head takes each channel's spatial std in two passes in place: values
    and the gradients of its conv and its input as torch's std (float64); a channels-last map
    (not contiguous) goes through torch's std."""
    from hpff_bench.aux.heads import PredSimSimilarity

    torch.manual_seed(0)
    sim = PredSimSimilarity(channels, spatial).double()
    x = torch.randn(4, channels, spatial, spatial, dtype=torch.float64) * 2 + 1
    g = torch.randn(4, channels, dtype=torch.float64)

    def run(head, inp):
        sim.zero_grad()
        inp = inp.detach().requires_grad_()
        out = head(inp)
        out.backward(g)
        return out, inp.grad, sim.conv.weight.grad

    want = run(lambda inp: sim.conv(inp).flatten(2).std(dim=2), x)
    for inp, node in ((x, "_SpatialStdBackward"), (x.contiguous(memory_format=torch.channels_last), "StdBackward0")):
        got = run(sim, inp)
        assert type(got[0].grad_fn).__name__ == node
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_spatial_std_backward_is_its_jacobian():
    """Both outputs (the std and the deviations left in the map) against finite differences."""
    from hpff_bench.aux.heads import _SpatialStd

    h = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _SpatialStd.apply(t.clone()), (h,))


def test_spatial_std_keeps_torchs_bytes_and_backpropagates_in_one_map_less():
    """Kept for backward: the map (holding the deviations) and the std, as torch's std keeps the
    map and the std. torch's backward then holds the map, its deviations and their product at
    once: its peak, 3 maps + five 128-B vectors. Ours holds the map and the gradient, and frees
    the map before the conv's backward: the peak comes there, 2 maps (our gradient, the conv's)
    + the conv's weight gradient + two 128-B vectors (the std and its incoming gradient)."""
    from hpff_bench.aux.heads import _SpatialStd
    from hpff_bench.memory.tracker import LiveTensorTracker

    def live(std):
        torch.manual_seed(0)
        x = torch.randn(4, 8, 16, 16, requires_grad=True)
        w = torch.randn(8, 8, 3, 3, requires_grad=True)
        with LiveTensorTracker(rounding=None) as tracker:
            s = std(torch.nn.functional.conv2d(x, w, padding=1))
            kept = tracker.current
            s.backward(torch.ones_like(s))
            del s
        return kept, tracker.peak, tracker.current

    ours = live(lambda h: _SpatialStd.apply(h)[0])
    theirs = live(lambda h: h.flatten(2).std(dim=2))
    map_bytes = 4 * 8 * 16 * 16 * 4
    assert ours[0] == theirs[0] == map_bytes + 4 * 8 * 4
    assert ours[2] == theirs[2]
    assert theirs[1] == 3 * map_bytes + 5 * 128
    assert ours[1] == 2 * map_bytes + 8 * 8 * 3 * 3 * 4 + 2 * 128


def test_predsim_similarity_std_keeps_torchs_dtype_under_autocast():
    """Under bf16 autocast the std comes out in the conv's dtype, as torch's std does (the norm
    inside runs with autocast off: CUDA autocast would take it to float32)."""
    from hpff_bench.aux.heads import PredSimSimilarity

    torch.manual_seed(0)
    sim = PredSimSimilarity(16, 8)
    x = torch.randn(4, 16, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = sim(x)
        want = sim.conv(x).flatten(2).std(dim=2)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-2)


@pytest.mark.parametrize("channels,spatial,kernel,padding", [
    (16, 32, (2, 2), (0, 0)), (32, 16, (2, 1), (0, 0)), (8, 7, (4, 2), (2, 1)),  # the last: padded, count_include_pad
])
def test_predsim_pool_as_a_depthwise_conv_equals_avg_pool(channels, spatial, kernel, padding):
    """Same values and input gradients as nn.AvgPool2d to the bit (weights 1/(kh·kw) are powers of
    two here), its weight is no checkpoint entry, and under autocast it stays in the input's dtype
    as the pool does."""
    from hpff_bench.aux.heads import AvgPoolAsConv

    torch.manual_seed(0)
    ours, theirs = AvgPoolAsConv(channels, kernel, padding), torch.nn.AvgPool2d(kernel, padding=padding)
    x = torch.randn(4, channels, spatial, spatial)
    g = None
    grads = []
    for pool in (ours, theirs):
        xr = x.clone().requires_grad_()
        out = pool(xr)
        g = torch.randn_like(out) if g is None else g
        out.backward(g)
        grads.append((out, xr.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert ours.state_dict() == {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ours(x).dtype == theirs(x).dtype == torch.float32


def test_patch_batchnorm_with_momentum_none_keeps_a_cumulative_average():
    """momentum=None (nn.BatchNorm's cumulative average) under patch groups: the grouped path
    once passed None to F.batch_norm. Two batches: the running mean is their patches' mean."""
    bn = PatchBatchNorm2d(3, momentum=None)
    a, b = torch.randn(8, 3, 4, 4) + 2, torch.randn(8, 3, 4, 4) - 1
    with patch_groups(2):
        bn(a), bn(b)
    want = torch.stack([t.view(4, 2, 3, 4, 4).mean(dim=(0, 3, 4)).mean(0) for t in (a, b)]).mean(0)
    torch.testing.assert_close(bn.running_mean, want)
    assert bn.num_batches_tracked.item() == 2
