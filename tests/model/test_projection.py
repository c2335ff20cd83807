"""MaskedMaxProjection against its definition: log1p(relu(hidden @ W.T + b)), padding set to 0, max over tokens."""

import pytest
import torch

from splade_peft.model import projection
from splade_peft.model.projection import MaskedMaxProjection

# Right padding, left padding, a text of one real token, and no padding.
MASK = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [0] * 5 + [1] * 2, [1] + [0] * 6, [1] * 7])


def dense_reference(hidden, weight, bias, mask):
    """The definition, through autograd: (batch, length, vocab) logits, padding masked to 0 after log1p(relu)."""
    weights = torch.log1p(torch.relu(hidden @ weight.T + bias))
    return weights.masked_fill(~mask.bool().unsqueeze(-1), 0.0).amax(dim=1)


def random_inputs(dtype=torch.float64, vocab=11, width=5):
    """Continuous random values: no two tokens tie for a term's max (ties would make amax share the gradient)."""
    generator = torch.Generator().manual_seed(0)
    batch, length = MASK.shape
    hidden = torch.randn(batch, length, width, dtype=dtype, generator=generator).requires_grad_()
    weight = torch.randn(vocab, width, dtype=dtype, generator=generator).requires_grad_()
    bias = torch.randn(vocab, dtype=dtype, generator=generator).requires_grad_()
    upstream = torch.randn(batch, vocab, dtype=dtype, generator=generator)
    return hidden, weight, bias, upstream


def splade(hidden, weight, bias, mask):
    return torch.log1p(torch.relu(MaskedMaxProjection.apply(hidden, weight, bias, mask)))


@pytest.mark.parametrize("vocab_block", [None, 4])
def test_values_and_gradients_equal_the_dense_definition(monkeypatch, vocab_block):
    if vocab_block:  # several vocabulary blocks, the last one partial
        monkeypatch.setattr(projection, "LOGITS_PER_BLOCK", 1)
        monkeypatch.setattr(projection, "MIN_VOCAB_BLOCK", vocab_block)
    hidden, weight, bias, upstream = random_inputs()
    fast = splade(hidden, weight, bias, MASK)
    fast_grads = torch.autograd.grad((fast * upstream).sum(), (hidden, weight, bias))
    slow = dense_reference(hidden, weight, bias, MASK)
    slow_grads = torch.autograd.grad((slow * upstream).sum(), (hidden, weight, bias))

    assert (slow > 0).any() and (slow == 0).any()  # both active and inactive terms are exercised
    torch.testing.assert_close(fast, slow)
    for fast_grad, slow_grad in zip(fast_grads, slow_grads):
        torch.testing.assert_close(fast_grad, slow_grad)


def test_padding_never_wins_and_receives_no_gradient():
    hidden, weight, bias, upstream = random_inputs()
    with torch.no_grad():
        hidden[~MASK.bool()] = 100.0  # padding would dominate every term if it were not masked
    fast = splade(hidden, weight, bias, MASK)
    (grad_hidden,) = torch.autograd.grad((fast * upstream).sum(), (hidden,))
    torch.testing.assert_close(fast, dense_reference(hidden, weight, bias, MASK))
    assert (grad_hidden[~MASK.bool()] == 0).all()


def test_tied_maxima_send_the_whole_gradient_to_one_token():
    """Two identical real tokens: autograd's amax would split the gradient, this projection gives it to the first."""
    hidden = torch.randn(1, 1, 4, dtype=torch.float64).expand(1, 2, 4).clone().requires_grad_()
    weight = torch.randn(6, 4, dtype=torch.float64)
    values = MaskedMaxProjection.apply(hidden, weight, None, torch.ones(1, 2))
    (grad_hidden,) = torch.autograd.grad(values.sum(), (hidden,))
    torch.testing.assert_close(grad_hidden[0, 0], weight.sum(0))
    assert (grad_hidden[0, 1] == 0).all()


def test_gradients_are_bitwise_reproducible():
    hidden, weight, bias, upstream = random_inputs(torch.float32, vocab=300, width=16)
    runs = [torch.autograd.grad((splade(hidden, weight, bias, MASK) * upstream).sum(), (hidden, weight)) for _ in range(2)]
    assert all(torch.equal(first, second) for first, second in zip(*runs))


def test_inference_mode_gives_the_training_values():
    hidden, weight, bias, _ = random_inputs()
    training = MaskedMaxProjection.apply(hidden, weight, bias, MASK)
    with torch.inference_mode():
        inference = MaskedMaxProjection.apply(hidden.detach(), weight.detach(), bias.detach(), MASK)
    assert torch.equal(training.detach(), inference)


def test_bf16_autocast_computes_in_bf16_and_returns_fp32_close_to_the_fp32_definition():
    hidden, weight, bias, upstream = random_inputs(torch.float32, vocab=300, width=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = splade(hidden, weight, bias, MASK)
    grads = torch.autograd.grad((values * upstream).sum(), (hidden, weight, bias))
    reference = dense_reference(hidden, weight, bias, MASK)

    assert values.dtype == torch.float32
    assert [grad.dtype for grad in grads] == [torch.float32] * 3
    torch.testing.assert_close(values, reference, atol=0.05, rtol=0.02)  # bf16 logits: about 3 significant digits
    assert not torch.equal(values, reference)  # the logits really were computed in bf16
