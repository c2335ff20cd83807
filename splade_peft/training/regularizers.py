"""Sparsity regularisers and their warm-up schedule; kept apart from the ranking loss they are added to."""

import torch


def flops(weights: torch.Tensor) -> torch.Tensor:
    """FLOPS regulariser (Paria et al.): sum over the vocabulary of the squared mean activation in the batch."""
    return weights.abs().mean(dim=0).pow(2).sum()


def l1(weights: torch.Tensor) -> torch.Tensor:
    """Mean L1 norm of the vectors."""
    return weights.abs().sum(dim=1).mean()


def quadratic_warmup(step: int, weight: float, warmup_steps: int) -> float:
    """The regulariser weight at `step`: weight * min(1, step / T)^2, as in SPLADE."""
    if warmup_steps <= 0:
        return weight
    return weight * min(1.0, step / warmup_steps) ** 2


def nonzeros_per_vector(weights: torch.Tensor) -> torch.Tensor:
    return (weights > 0).sum(dim=1).float()
