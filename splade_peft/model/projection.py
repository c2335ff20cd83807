"""SPLADE's vocabulary projection pooled by max over the real tokens, without (batch, length, vocab) logits."""

import torch

# Vocabulary columns projected at a time when encoding on CPU (bench/summary.md measures it).
VOCAB_BLOCK = 2048


class MaskedMaxProjection(torch.autograd.Function):
    """max over non-padding tokens of (hidden @ weight.T + bias): (batch, length, hidden) -> (batch, vocab).

    Written by hand because autograd's version materialises (batch, length, vocab) logits and, in
    backward, a dense gradient of the same size, although SPLADE's log1p(relu(.)) passes gradient only
    to the active terms (a few hundred of 30k per text). Here logits are computed one text at a time,
    only the argmax token per (text, term) is kept, and backward touches the active terms alone.

    Under torch.inference_mode (corpus encoding) no backward can follow, so the argmax is not kept:
    `amax` alone is about 1.7x faster than `max` with indices on this shape (see bench/summary.md).

    The bias is the same for every token of a term, so it is added after the max, to (vocab,) values
    instead of (length, vocab) logits; the argmax does not change.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, attention_mask):
        if hidden.is_inference():
            return _max_logits(hidden, weight, bias, attention_mask)
        # One text at a time over its real tokens only: training batches are padded to their longest
        # text, and projecting padding onto the vocabulary would be most of the work.
        values = hidden.new_empty(hidden.shape[0], weight.shape[0])
        argmax = torch.empty(values.shape, dtype=torch.long, device=hidden.device)
        for row, positions in enumerate(_real_positions(attention_mask)):
            row_max = (hidden[row, positions] @ weight.T.to(hidden.dtype)).max(dim=0)
            values[row], argmax[row] = row_max.values, positions[row_max.indices]
        _add_bias(values, bias)
        ctx.save_for_backward(hidden, weight, argmax)
        ctx.has_bias = bias is not None
        return values

    @staticmethod
    def backward(ctx, grad_values):
        hidden, weight, argmax = ctx.saved_tensors
        rows, terms = grad_values.nonzero(as_tuple=True)
        grads = grad_values[rows, terms].unsqueeze(1)
        tokens = argmax[rows, terms]
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_hidden = torch.zeros_like(hidden)
            grad_hidden.index_put_((rows, tokens), grads * weight[terms].to(grads.dtype), accumulate=True)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(weight)
            grad_weight.index_put_((terms,), (grads * hidden[rows, tokens]).to(weight.dtype), accumulate=True)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = torch.zeros(weight.shape[0], dtype=grad_values.dtype, device=grad_values.device)
            grad_bias.index_put_((terms,), grads.squeeze(1), accumulate=True)
        return grad_hidden, grad_weight, grad_bias, None


def _max_logits(hidden, weight, bias, attention_mask) -> torch.Tensor:
    values = hidden.new_empty(hidden.shape[0], weight.shape[0])
    weight = weight.to(hidden.dtype)
    # On CPU a block of the vocabulary at a time, so each block's logits are reduced while still in cache;
    # on a GPU more kernel launches would cost more than they save.
    block_size = VOCAB_BLOCK if hidden.device.type == "cpu" else weight.shape[0]
    for row, positions in enumerate(_real_positions(attention_mask)):
        text = hidden[row, positions]
        for start in range(0, weight.shape[0], block_size):
            block = slice(start, start + block_size)
            torch.amax(text @ weight[block].T, dim=0, out=values[row, block])
    return _add_bias(values, bias)


def _add_bias(values, bias):
    return values if bias is None else values.add_(bias.to(values.dtype))


def _real_positions(attention_mask):
    return (mask.nonzero().squeeze(1) for mask in attention_mask.bool())
