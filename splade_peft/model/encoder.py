"""The SPLADE encoder: token weights log(1 + relu(mlm_logits)), pooled over the non-padding tokens."""

from contextlib import contextmanager

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from splade_peft.errors import ConfigError
from splade_peft.model.projection import MaskedMaxProjection


class SpladeEncoder(nn.Module):
    """One encoder shared by queries and documents; returns a (batch, vocab) non-negative weight matrix."""

    def __init__(self, masked_lm: nn.Module, pooling: str = "max"):
        super().__init__()
        if pooling == "max":
            refuse_unsupported_projection(masked_lm.get_output_embeddings())
        self.masked_lm = masked_lm
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "sum":
            logits = self.masked_lm(input_ids=input_ids, attention_mask=attention_mask).logits
            return torch.log1p(torch.relu(logits)).masked_fill(~attention_mask.bool().unsqueeze(-1), 0.0).sum(dim=1)
        projection = self.masked_lm.get_output_embeddings()
        with vocabulary_projection_skipped(projection):
            hidden = self.masked_lm(input_ids=input_ids, attention_mask=attention_mask).logits
        hidden, weight, bias = projection_operands(projection, hidden)
        return torch.log1p(torch.relu(MaskedMaxProjection.apply(hidden, weight, bias, attention_mask)))


def compiled(encoder: SpladeEncoder, **compile_options) -> SpladeEncoder:
    """The encoder with its masked LM compiled in place by torch.compile (the state dict keeps its names).

    Only the backbone is compiled: MaskedMaxProjection stays eager, by choice. It is already one matmul
    per vocabulary block with nothing left to fuse, and its backward builds sparse CSR matrices, which
    the compiler does not trace; inside the graph it would only add a graph break. Batches of varying
    length recompile once, then run with dynamic shapes (torch.compile's default)."""
    encoder.masked_lm.compile(**compile_options)
    return encoder


def refuse_unsupported_projection(projection: nn.Module) -> None:
    """MaskedMaxProjection multiplies by the vocabulary matrix itself, so it can honour a plain LoRA on that
    projection (projection_operands) and nothing else that changes how the projection computes."""
    if isinstance(projection, BaseTunerLayer) and not isinstance(projection, LoraLinear):
        problem = f"a {type(projection).__name__} adapter on the vocabulary projection, which SPLADE's max pooling cannot apply"
    elif isinstance(projection, LoraLinear) and projection.lora_variant:
        problem = "a LoRA variant (DoRA) on the vocabulary projection, which SPLADE's max pooling cannot apply"
    elif not projection.weight.dtype.is_floating_point:
        problem = f"a quantised vocabulary projection ({projection.weight.dtype}); SPLADE's max pooling needs its weights"
    else:
        return
    raise ConfigError(
        "lora.target_modules", problem,
        "leave the vocabulary projection (e.g. cls.predictions.decoder) out of lora.target_modules, target it with "
        "lora.method=lora without DoRA, or train it whole with lora.train_head=full",
    )


def projection_operands(projection: nn.Module, hidden: torch.Tensor) -> tuple:
    """(hidden, weight, bias) whose max-pooled product equals the projection module's own output.

    A LoRA on the projection adds scaling * lora_B(lora_A(dropout(hidden))) to the logits: each active
    adapter appends its scaled rank-r activations to the hidden states and its lora_B to the weight's
    columns, so one product gives base + adapter logits exactly as peft's forward does (same dropout), and
    gradients reach lora_A through the activations and lora_B through the weight. The cost is r more
    columns in the vocabulary matmul."""
    if not isinstance(projection, LoraLinear) or projection.disable_adapters or projection.merged:
        base = projection.base_layer if isinstance(projection, LoraLinear) else projection
        return hidden, base.weight, base.bias
    hiddens, weights, bias = [hidden], [projection.base_layer.weight], projection.base_layer.bias
    for name in projection.active_adapters:
        if name not in projection.lora_A:
            continue
        lora_a, lora_b, scaling = projection.lora_A[name], projection.lora_B[name], projection.scaling[name]
        hiddens.append(lora_a(projection.lora_dropout[name](hidden)) * scaling)
        weights.append(lora_b.weight)
        if lora_b.bias is not None:
            bias = lora_b.bias * scaling if bias is None else bias + lora_b.bias * scaling
    return torch.cat(hiddens, dim=-1), torch.cat(weights, dim=1), bias


@contextmanager
def vocabulary_projection_skipped(projection: nn.Module):
    """Make the masked LM return the input of its vocabulary projection (the transformed hidden states).

    The projection is applied by MaskedMaxProjection instead; the module itself (weights, tying,
    state dict) is untouched: only this instance's forward is shadowed for the duration.
    """
    # One function object for every call, so a compiled backbone's guards see the same forward each time.
    projection.forward = passthrough
    try:
        yield
    finally:
        del projection.forward


def passthrough(hidden: torch.Tensor) -> torch.Tensor:
    return hidden
