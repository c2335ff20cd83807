"""Ranking loss and sparsity regularisers on hand-computed examples; the regulariser warm-up schedule."""

import math

import pytest
import torch

from splade_peft.training.losses import contrastive_loss
from omegaconf import OmegaConf

from splade_peft.errors import ConfigError
from splade_peft.training.regularizers import flops, gradient_share, l1, quadratic_warmup, warmup_steps


def test_quadratic_warmup_schedule():
    assert quadratic_warmup(0, 0.5, 100) == 0.0
    assert quadratic_warmup(50, 0.5, 100) == pytest.approx(0.5 * 0.25)
    assert quadratic_warmup(100, 0.5, 100) == pytest.approx(0.5)
    assert quadratic_warmup(1000, 0.5, 100) == pytest.approx(0.5)
    assert quadratic_warmup(3, 0.5, 0) == 0.5


def test_flops_is_the_sum_of_squared_mean_activations():
    weights = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert flops(weights).item() == pytest.approx(2.0**2 + 0.0 + 1.0**2)


def test_unbiased_flops_counts_distinct_document_pairs():
    weights = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    # term 0: pairs 1*3 + 1*1 + 3*1 = 7; term 1: none; term 2: none -> 2 * 7 / (3 * 2)
    assert flops(weights, "unbiased").item() == pytest.approx(2 * 7 / 6)
    with pytest.raises(ConfigError, match="loss.flops_normalization"):
        flops(weights, "per_query")


def test_unbiased_flops_keeps_its_expected_value_whatever_the_batch_size():
    generator = torch.Generator().manual_seed(0)

    def sparse_batch(documents: int) -> torch.Tensor:
        return torch.rand(documents, 200, generator=generator) * (torch.rand(documents, 200, generator=generator) < 0.05)

    def average(normalization: str, documents: int) -> float:
        return sum(flops(sparse_batch(documents), normalization).item() for _ in range(200)) / 200

    small, large = average("unbiased", 8), average("unbiased", 64)
    assert small == pytest.approx(large, rel=0.1)
    assert average("batch", 8) > 2.5 * average("batch", 64)  # the self-pairs dominate a small batch


def test_warmup_relative_to_the_run_unless_given_in_steps():
    assert warmup_steps(OmegaConf.create({"warmup_steps": None, "warmup_fraction": 0.1}), 200) == 20
    assert warmup_steps(OmegaConf.create({"warmup_steps": 100, "warmup_fraction": 0.1}), 200) == 100
    assert warmup_steps(OmegaConf.create({"warmup_steps": 7}), 200) == 7  # a config older than the fraction
    with pytest.raises(ConfigError, match="loss.warmup_fraction"):
        warmup_steps(OmegaConf.create({"warmup_steps": None, "warmup_fraction": 0.1}), float("inf"))


def test_gradient_share_on_the_vectors():
    vectors = torch.tensor([[1.0, 2.0], [0.5, 0.0]], requires_grad=True)
    ranking = (vectors * torch.tensor([[3.0, 0.0], [0.0, 4.0]])).sum()  # gradient norm 5
    regulariser = 5.0 * vectors.sum() / 5  # gradient all ones: norm 2
    assert gradient_share(ranking, regulariser, vectors).item() == pytest.approx(2 / 7)
    assert vectors.grad is None  # only measured: nothing accumulated


def test_l1_is_the_mean_vector_norm():
    assert l1(torch.tensor([[1.0, 2.0], [0.0, 1.0]])).item() == pytest.approx(2.0)


def test_contrastive_loss_with_in_batch_documents():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # two queries, each with [positive, negative]: scores q1 -> [1, 0, 0, 2], q2 -> [0, 0, 3, 0]
    documents = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 3.0], [2.0, 0.0]])
    loss = contrastive_loss(queries, documents, docs_per_query=2, in_batch=True)
    q1 = -1 + math.log(math.e**1 + 1 + 1 + math.e**2)
    q2 = -3 + math.log(1 + 1 + math.e**3 + 1)
    assert loss.item() == pytest.approx((q1 + q2) / 2, rel=1e-6)


def test_contrastive_loss_within_groups_only():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    documents = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 3.0], [2.0, 0.0]])
    loss = contrastive_loss(queries, documents, docs_per_query=2, in_batch=False)
    q1 = -1 + math.log(math.e**1 + 1)
    q2 = -3 + math.log(math.e**3 + 1)
    assert loss.item() == pytest.approx((q1 + q2) / 2, rel=1e-6)
