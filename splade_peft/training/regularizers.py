"""Sparsity regularisers and their warm-up schedule; kept apart from the ranking loss they are added to."""

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_autograd


def flops(weights: torch.Tensor) -> torch.Tensor:
    """FLOPS regulariser (Paria et al.): sum over the vocabulary of the squared mean activation in the batch.

    Under data-parallel training the mean is over the global batch (every process's documents), so the
    value and its gradient do not depend on how many devices share the batch: the per-term activation
    sums are all-reduced with gradient, and DDP's gradient averaging then yields the global gradient.
    """
    term_sums = weights.abs().sum(dim=0)
    count = torch.tensor(float(weights.shape[0]), device=weights.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        term_sums = distributed_autograd.all_reduce(term_sums)
        dist.all_reduce(count)
    return (term_sums / count).pow(2).sum()


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
