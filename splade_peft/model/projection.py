"""SPLADE's vocabulary projection pooled by max over the real tokens, without (batch, length, vocab) logits."""

import warnings

import torch

# The projection runs a block of the vocabulary at a time: about this many logits per block (16 MB in fp32).
LOGITS_PER_BLOCK = 2**22
MIN_VOCAB_BLOCK = 128


class MaskedMaxProjection(torch.autograd.Function):
    """max over non-padding tokens of (hidden @ weight.T + bias): (batch, length, hidden) -> (batch, vocab).

    Written by hand because autograd's version materialises (batch, length, vocab) logits and, in
    backward, a dense gradient of the same size, although SPLADE's log1p(relu(.)) passes gradient only
    to the active terms (a few hundred of 30k per text). The whole batch goes through each matmul, a
    vocabulary block at a time, padding gets -inf, and only the (batch, vocab) maxima and, in training,
    the token that reached each of them are kept. Under torch.inference_mode (corpus encoding) no
    backward can follow, so the argmax is not kept (`amax` alone is several times faster than `max`
    with indices).

    Backward is one sparse matrix product per input, with exactly one entry per (text, term): the
    gradient of a term flows to the token that reached its max. The entries are laid out in a fixed
    order (a stable sort, no atomic adds), so gradients are deterministic, and nothing waits on the
    host: there is no count of non-zero gradients to read back. With tied maxima the first token wins
    and takes the whole gradient (autograd's `amax` would share it).

    Precision contract: the logits are computed in the *compute dtype*, the autocast dtype of hidden's
    device when autocast is on there (bf16 under bf16-mixed, as the model's own decoder Linear would),
    otherwise hidden's dtype. The maxima (a selection, so exact), the bias and the returned values are
    float32, or hidden's dtype where it is wider (float64 in tests). Backward computes in that same
    output dtype and returns each gradient in its input's dtype.

    The bias is the same for every token of a term, so it is added after the max, to (vocab,) values
    instead of (length, vocab) logits; the argmax does not change.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, attention_mask):
        compute_dtype = autocast_dtype(hidden) or hidden.dtype
        with torch.autocast(hidden.device.type, enabled=False):
            values, argmax = max_logits(
                hidden.to(compute_dtype), weight.to(compute_dtype), attention_mask,
                with_argmax=not hidden.is_inference(),
            )
        if bias is not None:
            values.add_(bias.to(values.dtype))
        if argmax is not None:
            ctx.save_for_backward(hidden, weight, argmax)
            ctx.has_bias = bias is not None
        return values

    @staticmethod
    def backward(ctx, grad_values):
        hidden, weight, argmax = ctx.saved_tensors
        batch, length, width = hidden.shape
        # Row of the flattened (batch * length) tokens whose logit was each (text, term)'s max. 32-bit
        # indices where they fit: the sort and the sparse products run about twice as fast as with 64.
        index_dtype = torch.int32 if argmax.numel() < 2**31 and batch * length < 2**31 else torch.int64
        offsets = torch.arange(0, batch * length, length, dtype=index_dtype, device=argmax.device)
        winners = argmax.to(index_dtype) + offsets.unsqueeze(1)
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            to_tokens = tokens_by_terms(winners, grad_values, batch * length)
            grad_hidden = (to_tokens @ weight.to(grad_values.dtype)).view(batch, length, width).to(hidden.dtype)
        if ctx.needs_input_grad[1]:
            to_terms = terms_by_tokens(winners, grad_values, batch * length)
            grad_weight = (to_terms @ hidden.reshape(-1, width).to(grad_values.dtype)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_values.sum(dim=0)
        return grad_hidden, grad_weight, grad_bias, None


def autocast_dtype(tensor: torch.Tensor) -> torch.dtype | None:
    device = tensor.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def output_dtype(compute_dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(compute_dtype, torch.float32)


def max_logits(hidden, weight, attention_mask, with_argmax: bool):
    """(batch, vocab) maxima over the real tokens, and the token of each when `with_argmax`.

    The logits of a block are laid out (block, batch, length) so that the max runs over contiguous memory;
    the whole batch goes through each matmul (length-sorted or truncated batches carry little padding), and
    padding positions get -inf and never win."""
    batch, length, _ = hidden.shape
    vocab = weight.shape[0]
    values = torch.empty(vocab, batch, dtype=output_dtype(hidden.dtype), device=hidden.device)
    argmax = torch.empty(vocab, batch, dtype=torch.long, device=hidden.device) if with_argmax else None
    tokens = hidden.reshape(batch * length, -1).T
    padding = torch.zeros(batch, length, dtype=hidden.dtype, device=hidden.device)
    padding.masked_fill_(~attention_mask.bool(), float("-inf"))
    block_size = min(vocab, max(MIN_VOCAB_BLOCK, LOGITS_PER_BLOCK // (batch * length)))
    for start in range(0, vocab, block_size):
        block = slice(start, start + block_size)
        logits = (weight[block] @ tokens).view(-1, batch, length).add_(padding)
        if with_argmax:
            block_max = logits.max(dim=-1)
            values[block], argmax[block] = block_max.values, block_max.indices
        else:
            values[block] = logits.amax(dim=-1)
    return values.T.contiguous(), None if argmax is None else argmax.T.contiguous()


def tokens_by_terms(winners, grad_values, tokens: int) -> torch.Tensor:
    """Sparse (tokens, vocab): row `winners[b, v]` holds grad_values[b, v] in column v.

    A CSR matrix needs its entries sorted by row: a stable sort of each text's winners (every text's
    rows come after the previous text's), and row starts found by binary search, not by counting."""
    sorted_rows, terms = winners.sort(dim=1, stable=True)
    rows = torch.arange(tokens + 1, dtype=winners.dtype, device=winners.device)
    row_starts = torch.searchsorted(sorted_rows.flatten(), rows).to(winners.dtype)
    entries = grad_values.gather(1, terms)
    return csr_matrix(row_starts, terms.flatten().to(winners.dtype), entries.flatten(), (tokens, winners.shape[1]))


def terms_by_tokens(winners, grad_values, tokens: int) -> torch.Tensor:
    """Sparse (vocab, tokens), the transpose of tokens_by_terms: one entry per text in each row, already in order."""
    batch, vocab = winners.shape
    row_starts = torch.arange(0, vocab * batch + 1, batch, dtype=winners.dtype, device=winners.device)
    return csr_matrix(row_starts, winners.T.flatten(), grad_values.T.flatten(), (vocab, tokens))


def csr_matrix(row_starts, columns, entries, size) -> torch.Tensor:
    """Without invariant checks: they would read the indices back on the host, and these are valid by construction.
    Torch warns once per process that CSR support is in beta; the two products used here are long-standing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(row_starts, columns, entries, size=size, check_invariants=False)
