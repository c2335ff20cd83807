"""SPLADE's vocabulary projection pooled by max over the real tokens, without (batch, length, vocab) logits."""

import torch


class MaskedMaxProjection(torch.autograd.Function):
    """max over non-padding tokens of (hidden @ weight.T + bias): (batch, length, hidden) -> (batch, vocab).

    Written by hand because autograd's version materialises (batch, length, vocab) logits and, in
    backward, a dense gradient of the same size, although SPLADE's log1p(relu(.)) passes gradient only
    to the active terms (a few hundred of 30k per text). Here logits are computed one text at a time,
    only the argmax token per (text, term) is kept, and backward touches the active terms alone.

    Under torch.inference_mode (corpus encoding) no backward can follow, so the argmax is not kept:
    `amax` alone is about 1.7x faster than `max` with indices on this shape (see bench/summary.md).
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
            row_max = _logits(hidden[row, positions], weight, bias).max(dim=0)
            values[row], argmax[row] = row_max.values, positions[row_max.indices]
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
    for row, positions in enumerate(_real_positions(attention_mask)):
        torch.amax(_logits(hidden[row, positions], weight, bias), dim=0, out=values[row])
    return values


def _logits(hidden_rows, weight, bias) -> torch.Tensor:
    # addmm adds the bias inside the matmul kernel instead of in a second pass over (length, vocab).
    if bias is None:
        return hidden_rows @ weight.T
    return torch.addmm(bias.to(hidden_rows.dtype), hidden_rows, weight.T.to(hidden_rows.dtype))


def _real_positions(attention_mask):
    return (mask.nonzero().squeeze(1) for mask in attention_mask.bool())
