"""Ranking loss and sparsity regularisers on hand-computed examples; the regulariser warm-up schedule."""

import math

import pytest
import torch

from splade_peft.training.losses import contrastive_loss
from splade_peft.training.regularizers import flops, l1, quadratic_warmup


def test_quadratic_warmup_schedule():
    assert quadratic_warmup(0, 0.5, 100) == 0.0
    assert quadratic_warmup(50, 0.5, 100) == pytest.approx(0.5 * 0.25)
    assert quadratic_warmup(100, 0.5, 100) == pytest.approx(0.5)
    assert quadratic_warmup(1000, 0.5, 100) == pytest.approx(0.5)
    assert quadratic_warmup(3, 0.5, 0) == 0.5


def test_flops_is_the_sum_of_squared_mean_activations():
    weights = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert flops(weights).item() == pytest.approx(2.0**2 + 0.0 + 1.0**2)


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
