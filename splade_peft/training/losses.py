"""Ranking losses over (query, positive + negatives) groups (the `loss=` config group)."""

import torch
import torch.nn.functional as F


def contrastive_loss(
    queries: torch.Tensor, documents: torch.Tensor, docs_per_query: int, in_batch: bool = True, temperature: float = 1.0
) -> torch.Tensor:
    """InfoNCE. `documents` holds each query's group [positive, negatives...] back to back.

    With `in_batch`, every document of the batch competes for every query; otherwise only its own group.
    """
    batch = queries.shape[0]
    if in_batch:
        scores = queries @ documents.T
        targets = torch.arange(batch, device=queries.device) * docs_per_query
    else:
        groups = documents.view(batch, docs_per_query, -1)
        scores = torch.einsum("bv,bnv->bn", queries, groups)
        targets = torch.zeros(batch, dtype=torch.long, device=queries.device)
    return F.cross_entropy(scores / temperature, targets)
