"""Sparsity regularisers and their warm-up schedule (RegularizerWarmup, a callback); kept apart from the
ranking loss they are added to."""

import math

import lightning as L
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_autograd

from splade_peft.errors import ConfigError
from splade_peft.training.config import FLOPS_NORMALIZATIONS
from splade_peft.training.losses import in_fp32


@in_fp32
def flops(weights: torch.Tensor, normalization: str = "batch") -> torch.Tensor:
    """FLOPS regulariser (Paria et al.): sum over the vocabulary of the squared mean activation, the
    expected cost of a query-document product, estimated on the batch's documents.

    `batch` is Paria's estimate, (sum_i |w_iv| / N)^2. Its expectation is mu_v^2 + var_v / N: every
    document also pairs with itself, and for the rare terms of sparse vectors that self-pair dominates,
    so the value and its pull on rare terms fall as 1/N, N = batch x (1 + negatives) -- changing
    data.batch_size or data.negatives changes the regulariser's strength. `unbiased` counts distinct
    pairs only, sum_{i != j} |w_iv||w_jv| / (N (N - 1)), whose expectation is mu_v^2 whatever N.

    Under data-parallel training the sums run over the global batch (every process's documents), so the
    value and its gradient do not depend on how many devices share the batch: the per-term sums are
    all-reduced with gradient, and DDP's gradient averaging then yields the global gradient.
    In float32 whatever the vectors' dtype (losses.in_fp32), like the ranking losses it is added to.
    """
    if normalization not in FLOPS_NORMALIZATIONS:
        raise ConfigError("loss.flops_normalization", f"unknown normalisation {normalization!r}",
                          f"use one of {', '.join(FLOPS_NORMALIZATIONS)}")
    magnitudes = weights.abs()
    term_sums = magnitudes.sum(dim=0)
    count = torch.tensor(float(weights.shape[0]), device=weights.device)
    self_pairs = magnitudes.pow(2).sum(dim=0) if normalization == "unbiased" else None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        term_sums = distributed_autograd.all_reduce(term_sums)
        self_pairs = distributed_autograd.all_reduce(self_pairs) if self_pairs is not None else None
        dist.all_reduce(count)
    if self_pairs is None:
        return (term_sums / count).pow(2).sum()
    # A single document has no pair to estimate from: 0 (training batches hold >= 2: positive + negative).
    return (term_sums.pow(2) - self_pairs).sum() / (count * (count - 1)).clamp_min(1.0)


@in_fp32
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


def warmup_steps(loss_cfg, total_steps: float) -> int:
    """The regularisers' warm-up length: loss.warmup_steps when set (older configs), else
    loss.warmup_fraction of the run's `total_steps`, so a short run still reaches its full weights and a
    long one does not regularise a barely trained model."""
    if loss_cfg.get("warmup_steps") is not None:
        return loss_cfg.warmup_steps
    fraction = loss_cfg.get("warmup_fraction") or 0.0
    if fraction and not math.isfinite(total_steps):
        raise ConfigError("loss.warmup_fraction", "needs a run of known length",
                          "set trainer.max_steps or trainer.max_epochs, or give loss.warmup_steps")
    return round(fraction * total_steps)


class RegularizerWarmup(L.Callback):
    """Before every training step, sets the module's regulariser weights: loss.lambda_d on the documents'
    FLOPS and loss.lambda_q on the queries' L1, each ramped up quadratically over the warm-up.

    An encoder that does not regularise its queries (encoder.regularise_queries: an inference-free query
    table) gets lambda_q 0, and a dense encoder both 0: FLOPS and L1 make vectors sparse, which means
    nothing for dense embeddings.
    """

    def __init__(self, loss_cfg):
        self.loss_cfg = loss_cfg
        self.warmup = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.warmup = warmup_steps(self.loss_cfg, trainer.estimated_stepping_batches)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        encoder, step = pl_module.encoder, trainer.global_step
        sparse = encoder.is_sparse
        pl_module.lambda_d = quadratic_warmup(step, self.loss_cfg.lambda_d, self.warmup) if sparse else 0.0
        regularised = sparse and encoder.regularise_queries
        pl_module.lambda_q = quadratic_warmup(step, self.loss_cfg.lambda_q, self.warmup) if regularised else 0.0


def gradient_share(ranking: torch.Tensor, regulariser: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """|grad reg| / (|grad ranking| + |grad reg|) on `vectors` (the regulariser already weighted): how much of
    the push on the vectors is sparsity. Both gradients stop at the vectors (a few products of batch x
    vocabulary, not a pass through the encoder), cheap enough to log every step."""
    ranking_grad, regulariser_grad = (
        torch.autograd.grad(term, vectors, retain_graph=True, allow_unused=True)[0] for term in (ranking, regulariser)
    )
    norms = [torch.linalg.vector_norm(g, dtype=torch.float32) if g is not None else torch.zeros((), device=vectors.device)
             for g in (ranking_grad, regulariser_grad)]
    return (norms[1] / (norms[0] + norms[1]).clamp_min(1e-12)).detach()
