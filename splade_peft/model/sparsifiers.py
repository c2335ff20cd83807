"""Sparsifiers applied to pooled SPLADE vectors (`encoder.sparsifiers.documents|queries`): (batch, vocab) -> same.

Each keeps the vectors non-negative and passes gradient to the weights it keeps; the learned ones
(soft threshold, mean threshold with `learned: true`) carry their cut-off as a trained parameter.
"""

import torch
from torch import nn

from splade_peft.model.config import SPARSIFIERS


class TopK(nn.Module):
    """Keep the k largest weights of each vector."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        if self.k >= weights.shape[-1]:
            return weights
        kept = weights.topk(self.k, dim=-1)
        return torch.zeros_like(weights).scatter(-1, kept.indices, kept.values)


class HardThreshold(nn.Module):
    """Zero every weight at or below a fixed threshold; the others pass unchanged."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        return weights * (weights > self.threshold)


class SoftThreshold(nn.Module):
    """relu(w - t) with a learned cut-off t (kept >= 0, else it would make every term active)."""

    def __init__(self, initial_threshold: float):
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(float(initial_threshold)))

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        return torch.relu(weights - self.threshold.clamp(min=0))


class MeanThreshold(nn.Module):
    """relu(w - lambda * mean(w)): keep the weights above a multiple of the vector's mean.

    The mean is taken over the vector's active (non-zero) terms rather than the whole vocabulary, so
    that lambda means the same thing whatever the vocabulary size (lambda = 1: keep the above-average
    terms); gradient reaches lambda (when learned) and the weights through it.
    """

    def __init__(self, scale: float, learned: bool):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=learned)

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        active = (weights > 0).sum(dim=-1, keepdim=True).clamp(min=1)
        mean = weights.sum(dim=-1, keepdim=True) / active
        return torch.relu(weights - self.scale.clamp(min=0) * mean)


@SPARSIFIERS.register("none")
def no_sparsifier(spec) -> nn.Module:
    return nn.Identity()


@SPARSIFIERS.register("top_k")
def top_k(spec) -> nn.Module:
    return TopK(spec.k)


@SPARSIFIERS.register("threshold")
def threshold(spec) -> nn.Module:
    return HardThreshold(spec.threshold)


@SPARSIFIERS.register("soft_threshold")
def soft_threshold(spec) -> nn.Module:
    return SoftThreshold(spec.threshold)


@SPARSIFIERS.register("mean_threshold")
def mean_threshold(spec) -> nn.Module:
    return MeanThreshold(spec.scale, spec.learned)


def build_sparsifier(spec, key: str) -> nn.Module:
    """The sparsifier that `spec` (an `encoder.sparsifiers.<side>` node, found at `key`) names."""
    return SPARSIFIERS.get(spec.method, key=f"{key}.method").implementation(spec)
