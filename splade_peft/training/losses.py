"""Ranking losses over (query, positive + negatives) groups (the `loss=` config group).

`documents` always holds each query's group [positive, negatives...] back to back. The distillation
losses compare the student's scores within each group with the teacher's scores of the same documents,
given as a (queries, docs_per_query) tensor in the same order.

Each loss `loss.weights` can name is registered below with RANKING_LOSSES: a function of the batch's
RankingBatch and the `loss` section; `needs_teacher=True` for those that read teacher scores.

Every score and loss is computed in float32 whatever the autocast state (`in_fp32`): under bf16-mixed the
vectors come out of the encoder in bf16, and a bf16 score of 32-64 (SPLADE) is only known to +-0.125, a
dense cos/0.01 logit to +-0.25 -- coarser than the margins the losses learn from.
"""

from dataclasses import dataclass
from functools import cached_property, wraps

import torch
import torch.nn.functional as F

from splade_peft.errors import ConfigError
from splade_peft.training.config import RANKING_LOSSES


def in_fp32(function):
    """`function` run with autocast off and its floating-point tensor arguments (also those inside a tuple,
    like a document pool) cast to float32; integer and boolean tensors pass as they are."""

    @wraps(function)
    def in_float32(*args, **kwargs):
        device = next((value.device.type for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return function(*map(as_float32, args), **{name: as_float32(value) for name, value in kwargs.items()})

    return in_float32


def as_float32(value):
    if isinstance(value, tuple):
        return tuple(map(as_float32, value))
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


@in_fp32
def contrastive_loss(
    queries: torch.Tensor, documents: torch.Tensor, docs_per_query: int, in_batch: bool = True, temperature: float = 1.0,
    false_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE. With `in_batch`, every document of the batch competes for every query, except those
    `false_negatives` marks (a positive of the same query in another pair); otherwise only its own group."""
    batch = queries.shape[0]
    if in_batch:
        scores = without_false_negatives(queries @ documents.T, false_negatives)
        targets = torch.arange(batch, device=queries.device) * docs_per_query
    else:
        scores = group_scores(queries, documents, docs_per_query)
        targets = torch.zeros(batch, dtype=torch.long, device=queries.device)
    return F.cross_entropy(scores / temperature, targets)


@in_fp32
def pooled_contrastive_loss(queries: torch.Tensor, pool: torch.Tensor, first_document: int, docs_per_query: int,
                            temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE of every query against every document of `pool` (loss.in_batch=global: the documents of all
    devices); query i's positive is row first_document + i * docs_per_query of the pool."""
    scores = queries @ pool.T
    targets = first_document + torch.arange(queries.shape[0], device=queries.device) * docs_per_query
    return F.cross_entropy(scores / temperature, targets)


def without_false_negatives(scores: torch.Tensor, false_negatives: torch.Tensor | None) -> torch.Tensor:
    """`scores` (queries, documents) with the marked documents out of the softmax (score -inf)."""
    if false_negatives is None:
        return scores
    return scores.masked_fill(false_negatives.to(scores.device), float("-inf"))


@in_fp32
def group_scores(queries: torch.Tensor, documents: torch.Tensor, docs_per_query: int) -> torch.Tensor:
    """(queries, docs_per_query): each query's dot product with the documents of its own group."""
    groups = documents.view(queries.shape[0], docs_per_query, -1)
    return torch.einsum("bv,bnv->bn", queries, groups)


@in_fp32
def margin_mse_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MarginMSE (Hofstätter et al.): squared error between student and teacher margins positive - negative,
    averaged over every (query, negative)."""
    return F.mse_loss(group_margins(student), group_margins(teacher))


@in_fp32
def kl_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
            teacher_temperature: float | None = None) -> torch.Tensor:
    """KL(teacher || student) between the softmax distributions over each group, averaged over queries.
    Student and teacher scores may live on different scales: each has its own temperature (the teacher's
    is the student's unless given)."""
    student_log_probs = F.log_softmax(student / temperature, dim=1)
    teacher_log_probs = F.log_softmax(teacher / (teacher_temperature or temperature), dim=1)
    return F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)


@dataclass
class RankingBatch:
    """What a registered ranking loss may read of one training batch."""

    queries: torch.Tensor
    documents: torch.Tensor
    docs_per_query: int
    teacher: torch.Tensor | None = None
    document_pool: tuple[torch.Tensor, int] | None = None  # (documents, where this batch starts): global negatives
    false_negatives: torch.Tensor | None = None

    @cached_property
    def student(self) -> torch.Tensor:
        """(queries, docs_per_query): the student's scores of each query's own group."""
        return group_scores(self.queries, self.documents, self.docs_per_query)


@RANKING_LOSSES.register("contrastive")
def contrastive(batch: RankingBatch, loss_cfg) -> torch.Tensor:
    if batch.document_pool is not None:
        return pooled_contrastive_loss(batch.queries, *batch.document_pool, batch.docs_per_query, loss_cfg.temperature)
    return contrastive_loss(batch.queries, batch.documents, batch.docs_per_query, loss_cfg.in_batch,
                            loss_cfg.temperature, batch.false_negatives)


@RANKING_LOSSES.register("margin_mse", needs_teacher=True)
def margin_mse(batch: RankingBatch, loss_cfg) -> torch.Tensor:
    return margin_mse_loss(batch.student, batch.teacher)


@RANKING_LOSSES.register("kl", needs_teacher=True)
def kl(batch: RankingBatch, loss_cfg) -> torch.Tensor:
    return kl_loss(batch.student, batch.teacher, loss_cfg.temperature, loss_cfg.teacher_temperature)


@in_fp32
def ranking_loss(
    loss_cfg, queries: torch.Tensor, documents: torch.Tensor, docs_per_query: int, teacher: torch.Tensor | None,
    document_pool: tuple[torch.Tensor, int] | None = None, false_negatives: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The weighted sum of the losses named in `loss.weights` (zero weights are skipped), and each term.
    `document_pool` (documents, where this batch starts) replaces the batch's documents as InfoNCE's candidates."""
    batch = RankingBatch(queries, documents, docs_per_query, teacher, document_pool, false_negatives)
    weights = loss_cfg.weights
    terms = {}
    for name, weight in weights.items():
        if not weight:
            continue
        loss = RANKING_LOSSES.get(name, key=f"loss.weights.{name}")
        if loss.needs_teacher and teacher is None:
            raise ConfigError(f"loss.weights.{name}", "needs teacher scores and the training data has none",
                              "set data.teacher.files or data.teacher.scorers, or give this loss weight 0")
        terms[name] = loss.implementation(batch, loss_cfg)
    terms["total"] = sum(weights[name] * value for name, value in terms.items())
    return terms


def needs_teacher_scores(weights) -> bool:
    """Whether a loss given weight in `loss.weights` reads teacher scores."""
    return any(weight and RANKING_LOSSES.get(name, key=f"loss.weights.{name}").needs_teacher
               for name, weight in weights.items())


@in_fp32
def mean_margins(queries: torch.Tensor, documents: torch.Tensor, docs_per_query: int,
                 teacher: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The mean margin positive - negative of the student (and of the teacher, when there is one) over the
    batch's groups: logged every step, so a teacher on another scale than the student shows at once."""
    with torch.no_grad():
        margins = {"student_margin": group_margins(group_scores(queries, documents, docs_per_query)).mean()}
        if teacher is not None:
            margins["teacher_margin"] = group_margins(teacher).mean()
    return margins


def group_margins(scores: torch.Tensor) -> torch.Tensor:
    return scores[:, :1] - scores[:, 1:]
