"""The SPLADE head: log(1 + relu(logits)) pooled over non-padding tokens only."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from splade_peft.errors import ConfigError
from splade_peft.index.encode import length_sorted_batches
from splade_peft.model.encoder import SpladeEncoder, splade_pool


@pytest.fixture(scope="module")
def tiny_encoder() -> SpladeEncoder:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    return SpladeEncoder(BertForMaskedLM(config).eval())


def test_max_pooling_matches_the_elementwise_definition():
    logits = torch.randn(3, 7, 11)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    expected = torch.stack([torch.log1p(torch.relu(logits[i, : int(mask[i].sum())])).amax(dim=0) for i in range(3)])
    assert torch.allclose(splade_pool(logits, mask, "max"), expected)


def test_sum_pooling_matches_the_elementwise_definition():
    logits = torch.randn(2, 5, 11)
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    expected = torch.stack([torch.log1p(torch.relu(logits[i, : int(mask[i].sum())])).sum(dim=0) for i in range(2)])
    assert torch.allclose(splade_pool(logits, mask, "sum"), expected)


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
