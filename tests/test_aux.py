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
