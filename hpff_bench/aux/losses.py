"""Local losses: cross-entropy, supervised contrastive (InfoPro's 'contrast'), reconstruction."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def reconstruction(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE between the decoder's sigmoid output and the de-normalised image in [0, 1]."""
    return F.binary_cross_entropy(decoded, target)


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
