"""The SPLADE encoder: token weights log(1 + relu(mlm_logits)), pooled over the non-padding tokens."""

from contextlib import contextmanager

import torch
from torch import nn

from splade_peft.errors import ConfigError

POOLINGS = ("max", "sum")


class SpladeEncoder(nn.Module):
    """One encoder shared by queries and documents; returns a (batch, vocab) non-negative weight matrix."""

    def __init__(self, masked_lm: nn.Module, pooling: str = "max"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError("encoder.pooling", f"unknown pooling '{pooling}'", f"use one of {', '.join(POOLINGS)}")
        self.masked_lm = masked_lm
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "sum":
            logits = self.masked_lm(input_ids=input_ids, attention_mask=attention_mask).logits
            return torch.log1p(torch.relu(logits)).masked_fill(~attention_mask.bool().unsqueeze(-1), 0.0).sum(dim=1)
        projection = self.masked_lm.get_output_embeddings()
        with vocabulary_projection_skipped(projection):
            hidden = self.masked_lm(input_ids=input_ids, attention_mask=attention_mask).logits
        return torch.log1p(torch.relu(MaskedMaxProjection.apply(hidden, projection.weight, projection.bias, attention_mask)))


@contextmanager
def vocabulary_projection_skipped(projection: nn.Module):
    """Make the masked LM return the input of its vocabulary projection (the transformed hidden states).

    The projection is applied by MaskedMaxProjection instead; the module itself (weights, tying,
    state dict) is untouched: only this instance's forward is shadowed for the duration.
    """
    projection.forward = lambda hidden: hidden
    try:
        yield
    finally:
        del projection.forward


class MaskedMaxProjection(torch.autograd.Function):
    """max over non-padding tokens of (hidden @ weight.T + bias): (batch, length, hidden) -> (batch, vocab).

    Written by hand because autograd's version materialises (batch, length, vocab) logits and, in
    backward, a dense gradient of the same size, although SPLADE's log1p(relu(.)) passes gradient only
    to the active terms (a few hundred of 30k per text). Here logits are computed in bounded chunks,
    only the argmax token per (text, term) is kept, and backward touches the active terms alone.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, attention_mask):
        # One text at a time over its real tokens only: training batches are padded to their longest
        # text, and projecting padding onto the vocabulary would be most of the work.
        values = hidden.new_empty(hidden.shape[0], weight.shape[0])
        argmax = torch.empty(values.shape, dtype=torch.long, device=hidden.device)
        for row, mask in enumerate(attention_mask.bool()):
            positions = mask.nonzero().squeeze(1)
            logits = hidden[row, positions] @ weight.T
            if bias is not None:
                logits += bias
            row_max = logits.max(dim=0)
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
