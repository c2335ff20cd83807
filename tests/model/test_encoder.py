"""The SPLADE head: log(1 + relu(logits)) pooled over non-padding tokens only."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from splade_peft.errors import ConfigError
from splade_peft.index.encode import length_sorted_batches
from splade_peft.model.encoder import MaskedMaxProjection, SpladeEncoder


@pytest.fixture(scope="module")
def tiny_encoder() -> SpladeEncoder:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    return SpladeEncoder(BertForMaskedLM(config).eval())


def reference_splade(logits: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """The textbook definition, one text at a time over its real tokens."""
    pool = (lambda w: w.amax(dim=0)) if pooling == "max" else (lambda w: w.sum(dim=0))
    return torch.stack([pool(torch.log1p(torch.relu(logits[i, mask[i].bool()]))) for i in range(len(mask))])


def test_masked_max_projection_matches_autograd_in_values_and_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [0] * 5 + [1] * 2])  # right and left padding
    upstream = torch.randn(3, 11, dtype=torch.float64)

    fast = torch.log1p(torch.relu(MaskedMaxProjection.apply(hidden, weight, bias, mask)))
    fast_grads = torch.autograd.grad((fast * upstream).sum(), (hidden, weight, bias))
    slow = reference_splade(hidden @ weight.T + bias, mask, "max")
    slow_grads = torch.autograd.grad((slow * upstream).sum(), (hidden, weight, bias))

    assert torch.allclose(fast, slow)
    for fast_grad, slow_grad in zip(fast_grads, slow_grads):
        assert torch.allclose(fast_grad, slow_grad)


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_encoder_matches_the_definition_on_the_full_logits(tiny_encoder, pooling):
    tiny_encoder.pooling = pooling
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        logits = tiny_encoder.masked_lm(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(tiny_encoder(ids, mask), reference_splade(logits, mask, pooling), atol=1e-5)


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_padding_does_not_change_a_vector(tiny_encoder, pooling):
    tiny_encoder.pooling = pooling
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    padded = torch.tensor([[2, 10, 11, 12, 3, 0, 0, 0]])
    with torch.no_grad():
        alone = tiny_encoder(ids, torch.ones_like(ids))
        with_padding = tiny_encoder(padded, (padded != 0).long())
    assert torch.allclose(alone, with_padding, atol=1e-5)
    assert (alone >= 0).all()


def test_unknown_pooling_names_the_key(tiny_encoder):
    with pytest.raises(ConfigError, match="encoder.pooling"):
        SpladeEncoder(tiny_encoder.masked_lm, pooling="mean")


def test_length_sorted_batches_cover_every_index_once_within_budget():
    lengths = [5, 50, 7, 30, 30, 2, 49]
    batches = list(length_sorted_batches(lengths, tokens_per_batch=100, max_batch_size=3))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3 and len(batch) * max(lengths[i] for i in batch) <= 100 or len(batch) == 1
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
