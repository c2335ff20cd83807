"""The SPLADE head: log(1 + relu(logits)) pooled over non-padding tokens only."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from splade_peft.errors import ConfigError
from splade_peft.index.encode import length_sorted_batches
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.encoder import SpladeEncoder, compiled
from tests.helpers import lora_cfg


@pytest.fixture(scope="module")
def tiny_encoder() -> SpladeEncoder:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    return SpladeEncoder(BertForMaskedLM(config).eval())


def reference_splade(logits: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """The textbook definition, one text at a time over its real tokens."""
    pool = (lambda w: w.amax(dim=0)) if pooling == "max" else (lambda w: w.sum(dim=0))
    return torch.stack([pool(torch.log1p(torch.relu(logits[i, mask[i].bool()]))) for i in range(len(mask))])


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


def test_unknown_pooling_names_the_key():
    from splade_peft.config import validate
    from tests.helpers import composed

    with pytest.raises(ConfigError, match="encoder.pooling"):
        validate(composed("encoder.pooling=mean"))


def test_length_sorted_batches_cover_every_index_once_within_budget():
    lengths = [5, 50, 7, 30, 30, 2, 49]
    batches = list(length_sorted_batches(lengths, tokens_per_batch=100, max_batch_size=3))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3 and len(batch) * max(lengths[i] for i in batch) <= 100 or len(batch) == 1
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)


def decoder_adapted(method="lora", **overrides) -> SpladeEncoder:
    """A tiny BERT with the adapter on its attention and on the vocabulary projection (cls.predictions.decoder)."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    cfg = lora_cfg(method=method, target_modules=["query", "decoder"], **overrides)
    return SpladeEncoder(wrap_with_adapter(BertForMaskedLM(config), cfg))


def test_lora_on_the_vocabulary_projection_shapes_the_vectors_and_trains():
    encoder = decoder_adapted()
    decoder = encoder.masked_lm.get_output_embeddings()
    with torch.no_grad():  # B starts at zero: give the adapter a visible effect
        decoder.lora_B["default"].weight.normal_()
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = (ids != 0).long()

    vectors = encoder.eval()(ids, mask)
    with torch.no_grad():
        logits = encoder.masked_lm(input_ids=ids, attention_mask=mask).logits
        with encoder.masked_lm.disable_adapter():
            without_adapter = encoder(ids, mask)
    assert torch.allclose(vectors, reference_splade(logits, mask, "max"), atol=1e-5)
    assert not torch.allclose(vectors, without_adapter, atol=1e-3)

    vectors.sum().backward()
    for name in ("lora_A", "lora_B"):
        grad = getattr(decoder, name)["default"].weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("method,overrides", [("ia3", {}), ("lora", {"use_dora": True})])
def test_an_adapter_the_projection_cannot_apply_is_refused_naming_the_key(method, overrides):
    with pytest.raises(ConfigError, match="lora.target_modules"):
        decoder_adapted(method, **overrides)


@pytest.mark.slow  # compiling forward and backward takes about a minute on two CPU cores
def test_compiled_encoder_gives_the_eager_values_and_gradients(tiny_encoder):
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = (ids != 0).long()
    eager = SpladeEncoder(tiny_encoder.masked_lm)
    fast = compiled(SpladeEncoder(BertForMaskedLM(tiny_encoder.masked_lm.config).eval()))
    fast.load_state_dict(eager.state_dict())  # the state dict keeps its names when compiled

    torch.testing.assert_close(fast(ids, mask), eager(ids, mask), atol=1e-5, rtol=1e-5)
    fast_grads = torch.autograd.grad(fast(ids, mask).sum(), list(fast.parameters()), allow_unused=True)
    eager_grads = torch.autograd.grad(eager(ids, mask).sum(), list(eager.parameters()), allow_unused=True)
    for fast_grad, eager_grad in zip(fast_grads, eager_grads):
        if eager_grad is not None:
            torch.testing.assert_close(fast_grad, eager_grad, atol=1e-5, rtol=1e-4)
