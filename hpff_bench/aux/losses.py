"""Local losses: cross-entropy, supervised contrastive (InfoPro's 'contrast'), reconstruction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y)


def supcon(features: torch.Tensor, y: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., 2020), one view per sample.

    Anchors without a positive in the batch count in the mean with a loss of 0, as in the
    official code (InfoPro's and HPFF's SupConLoss: mask_sum 0 -> 1): at small batches, where
    many anchors have no positive, the loss is smaller than a mean over anchors with positives.
    """
    z = F.normalize(features, dim=1)
    logits = z @ z.T / temperature
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    pos_count = positives.sum(1)
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)
    per_anchor = -pos_log_prob / pos_count.clamp(min=1)  # 0 where an anchor has no positive
    return per_anchor.mean()


# ATen's EPSILON for this loss is the float literal 1e-12f, also in double precision
_BCE_EPSILON = torch.tensor(1e-12, dtype=torch.float32).item()


class _BinaryCrossEntropy(torch.autograd.Function):
    """`F.binary_cross_entropy(x, t)` (mean) by torch's own formulas, in vectorised ops.

    Why: torch's CPU kernels for this loss run one scalar log per element (4-6 ms forward +
    backward at 128 x 3 x 32 x 32 on 2 threads; 15 calls per InfoPro K=16 step, 27 per
    InfoPro+HPFF's); these take ~1.2 ms. Same formulas as ATen's Loss.cpp:
    loss = -(t·max(log x, -100) + (1-t)·max(log(1-x), -100)), d loss/dx = (x - t) / max((1-x)·x,
    1e-12) / numel. Same saved tensors (x, t). Memory: the forward's one x-sized buffer is freed
    before it returns, where torch's CPU loss is its per-element buffer resized to 0-d (its storage
    keeps x's size while the loss lives, i.e. through the aux net's backward); the backward makes
    two x-sized buffers where torch's makes one, the denominator freed before the sigmoid backward
    allocates. Sigmoid -> this loss -> backward peaks one buffer lower than with torch's (test).
    Values differ from ATen's in the last bits (vectorised log), and log(1-x) is taken as
    log(1 - x), not ATen's log1p(-x): torch's CPU log1p is a scalar loop (1.8 ms against 0.3 ms
    at 128 x 3 x 32 x 32). They differ by the rounding of 1 - x (exact for x >= 0.5): at most
    ~6e-8 per element in float32, in the loss value only; no gradient uses it.
    """

    @staticmethod
    def forward(ctx, x, t):
        ctx.save_for_backward(x, t)
        buf = torch.rsub(x, 1).log_().clamp_(min=-100)  # max(log(1-x), -100)
        log_not_x = buf.sum()
        t_log_not_x = buf.mul_(t).sum()
        torch.log(x, out=buf)
        t_log_x = buf.clamp_(min=-100).mul_(t).sum()
        return (t_log_x + log_not_x - t_log_not_x).neg_().div_(x.numel())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, t = ctx.saved_tensors
        denominator = torch.rsub(x, 1).mul_(x).clamp_(min=_BCE_EPSILON)
        return torch.sub(x, t).div_(denominator).mul_(grad / x.numel()), None


def reconstruction(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE between the decoder's sigmoid output and the de-normalised image in [0, 1]
    (`F.binary_cross_entropy`, mean, computed by _BinaryCrossEntropy)."""
    if decoded.shape != target.shape:
        raise ValueError(f"reconstruction: decoded {tuple(decoded.shape)} and target {tuple(target.shape)} differ")
    return _BinaryCrossEntropy.apply(decoded, target)


LOCAL_LOSSES = {"ce": cross_entropy, "supcon": supcon}


def centred_cosine_similarity(x: torch.Tensor) -> torch.Tensor:
    """Sample-by-sample cosine similarity of the rows of `x` after subtracting each row's mean,
    clamped to [-1, 1] (local-loss train.py, similarity_matrix)."""
    xc = x - x.mean(dim=1, keepdim=True)
    xn = xc / (1e-8 + xc.norm(dim=1, keepdim=True))
    return (xn @ xn.T).clamp(-1, 1)


def similarity_matching(features: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """PredSim's similarity loss: MSE between the centred cosine similarity matrices of the
    features (already std-pooled by the similarity head) and of the one-hot labels (1 for the
    same class, -1/(classes-1) otherwise)."""
    target = centred_cosine_similarity(F.one_hot(y, num_classes).to(features.dtype))
    return F.mse_loss(centred_cosine_similarity(features), target)
