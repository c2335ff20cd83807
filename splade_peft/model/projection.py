"""SPLADE's vocabulary projection pooled by max over the real tokens, without (batch, length, vocab) logits."""

import torch

# Encoding projects a block of the vocabulary at a time: about this many logits per block (16 MB in fp32).
LOGITS_PER_BLOCK = 2**22
MIN_VOCAB_BLOCK = 128


class MaskedMaxProjection(torch.autograd.Function):
    """max over non-padding tokens of (hidden @ weight.T + bias): (batch, length, hidden) -> (batch, vocab).

    Written by hand because autograd's version materialises (batch, length, vocab) logits and, in
    backward, a dense gradient of the same size, although SPLADE's log1p(relu(.)) passes gradient only
    to the active terms (a few hundred of 30k per text). In training, logits are computed one text at a
    time, only the argmax token per (text, term) is kept, and backward touches the active terms alone.

    Under torch.inference_mode (corpus encoding) no backward can follow, so the argmax is not kept
    (`amax` alone is about 1.7x faster than `max` with indices on this shape) and the whole batch goes
    through each matmul in vocabulary blocks (`_max_logits`).

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
        projection = weight.to(hidden.dtype).T
        for row, positions in enumerate(_real_positions(attention_mask)):
            row_max = (hidden[row, positions] @ projection).max(dim=0)
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
    """The whole batch per matmul (length-sorted batches carry little padding), a vocabulary block at a time so
    the (batch, length, block) logits stay bounded; padding positions get -inf and never win the max."""
    batch, length, _ = hidden.shape
    values = hidden.new_empty(batch, weight.shape[0])
    weight = weight.to(hidden.dtype)
    tokens = hidden.reshape(batch * length, -1)
    padding = torch.zeros(batch, length, 1, dtype=hidden.dtype, device=hidden.device)
    padding.masked_fill_(~attention_mask.bool().unsqueeze(-1), float("-inf"))
    block_size = min(weight.shape[0], max(MIN_VOCAB_BLOCK, LOGITS_PER_BLOCK // (batch * length)))
    for start in range(0, weight.shape[0], block_size):
        block = slice(start, start + block_size)
        logits = (tokens @ weight[block].T).view(batch, length, -1).add_(padding)
        torch.amax(logits, dim=1, out=values[:, block])
    return _add_bias(values, bias)


def _add_bias(values, bias):
    return values if bias is None else values.add_(bias.to(values.dtype))


def _real_positions(attention_mask):
    return (mask.nonzero().squeeze(1) for mask in attention_mask.bool())
