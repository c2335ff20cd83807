"""Every ranking loss on one hand-computed case: 2 queries, each with a group of 3 documents
[positive, negative, negative]; the loss config's weights pick and combine them."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from splade_peft.errors import ConfigError
from splade_peft.training.losses import (
    contrastive_loss, group_scores, kl_loss, margin_mse_loss, mean_margins, ranking_loss,
)

QUERIES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
DOCUMENTS = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0],    # q1's group: student scores 2, 1, 0
                          [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])   # q2's group: student scores 1, 3, 0
TEACHER = torch.tensor([[3.0, 1.0, 1.0], [2.0, 0.0, 1.0]])


def loss_cfg(**weights):
    return OmegaConf.create({"weights": weights, "in_batch": True, "temperature": 1.0, "teacher_temperature": None})


def test_group_scores_are_each_query_against_its_own_group():
    assert group_scores(QUERIES, DOCUMENTS, 3).tolist() == [[2.0, 1.0, 0.0], [1.0, 3.0, 0.0]]


def test_in_batch_contrastive():
    # q1 against all six documents scores [2, 1, 0, 0, 0, 1], target 2; q2 scores [0, 0, 0, 1, 3, 0], target 1
    q1 = -2 + math.log(math.e**2 + math.e + 1 + 1 + 1 + math.e)
    q2 = -1 + math.log(4 + math.e + math.e**3)
    expected = (q1 + q2) / 2  # = 1.52508725
    assert contrastive_loss(QUERIES, DOCUMENTS, 3).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1.52508725, rel=1e-6)


def test_margin_mse():
    # student margins q1: 2-1, 2-0 = [1, 2]; q2: 1-3, 1-0 = [-2, 1]
    # teacher margins q1: 3-1, 3-1 = [2, 2]; q2: 2-0, 2-1 = [2, 1]
    # squared errors 1, 0, 16, 0 -> mean 17 / 4
    student = group_scores(QUERIES, DOCUMENTS, 3)
    assert margin_mse_loss(student, TEACHER).item() == pytest.approx(4.25)


def test_kl_from_teacher_to_student():
    def softmax(scores):
        total = sum(math.exp(s) for s in scores)
        return [math.exp(s) / total for s in scores]

    expected = sum(
        sum(t * math.log(t / s) for t, s in zip(softmax(teacher), softmax(student)))
        for teacher, student in (([3, 1, 1], [2, 1, 0]), ([2, 0, 1], [1, 3, 0]))
    ) / 2
    assert expected == pytest.approx(0.73183599, rel=1e-6)
    student = group_scores(QUERIES, DOCUMENTS, 3)
    assert kl_loss(student, TEACHER).item() == pytest.approx(expected, rel=1e-6)


def test_kl_temperature_softens_both_distributions():
    student = group_scores(QUERIES, DOCUMENTS, 3)
    assert kl_loss(student, TEACHER, temperature=2.0).item() == pytest.approx(
        kl_loss(student / 2, TEACHER / 2).item(), rel=1e-6)


def test_kl_teacher_temperature_rescales_the_teacher_alone():
    student = group_scores(QUERIES, DOCUMENTS, 3)
    assert kl_loss(student, TEACHER, temperature=1.0, teacher_temperature=4.0).item() == pytest.approx(
        kl_loss(student, TEACHER / 4).item(), rel=1e-6)
    terms = ranking_loss(OmegaConf.merge(loss_cfg(kl=1.0), {"teacher_temperature": 4.0}), QUERIES, DOCUMENTS, 3, TEACHER)
    assert terms["kl"].item() == pytest.approx(kl_loss(student, TEACHER / 4).item(), rel=1e-6)


def test_contrastive_beside_distillation():
    terms = ranking_loss(loss_cfg(contrastive=0.5, margin_mse=1.0), QUERIES, DOCUMENTS, 3, TEACHER)
    assert set(terms) == {"contrastive", "margin_mse", "total"}
    assert terms["total"].item() == pytest.approx(0.5 * 1.52508725 + 4.25, rel=1e-6)


def test_same_query_positives_leave_the_in_batch_negatives():
    # both groups are the same query's: q1's second positive (row 3) must not be a negative of the first pair
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    documents = torch.tensor([[2.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[False, False, True, False], [True, False, False, False]])
    masked = contrastive_loss(queries, documents, 2, false_negatives=mask)
    first = -2 + math.log(math.e**2 + math.e + 1)       # candidates 2, 1, 0 (3 masked)
    second = -3 + math.log(math.e + math.e**3 + 1)      # candidates 1, 3, 0 (2 masked)
    assert masked.item() == pytest.approx((first + second) / 2, rel=1e-6)
    assert masked < contrastive_loss(queries, documents, 2)
    via_config = ranking_loss(loss_cfg(contrastive=1.0), queries, documents, 2, None, false_negatives=mask)
    assert via_config["total"].item() == pytest.approx(masked.item())


def test_mean_margins_of_student_and_teacher():
    margins = mean_margins(QUERIES, DOCUMENTS, 3, TEACHER)
    assert margins["student_margin"].item() == pytest.approx((1 + 2 - 2 + 1) / 4)
    assert margins["teacher_margin"].item() == pytest.approx((2 + 2 + 2 + 1) / 4)
    assert set(mean_margins(QUERIES, DOCUMENTS, 3, None)) == {"student_margin"}


def test_weighted_sum_as_in_splade_v3():
    terms = ranking_loss(loss_cfg(contrastive=0.0, margin_mse=0.05, kl=1.0), QUERIES, DOCUMENTS, 3, TEACHER)
    assert set(terms) == {"margin_mse", "kl", "total"}
    assert terms["total"].item() == pytest.approx(0.73183599 + 0.05 * 4.25, rel=1e-6)


def test_distillation_without_teacher_scores_names_the_loss():
    with pytest.raises(ConfigError, match="loss.weights.kl"):
        ranking_loss(loss_cfg(contrastive=1.0, kl=1.0), QUERIES, DOCUMENTS, 3, None)


def test_losses_are_differentiable_through_the_scores():
    documents = DOCUMENTS.clone().requires_grad_(True)
    terms = ranking_loss(loss_cfg(contrastive=1.0, margin_mse=1.0, kl=1.0), QUERIES, documents, 3, TEACHER)
    terms["total"].backward()
    assert documents.grad.abs().sum() > 0


@pytest.mark.parametrize("overrides,key", [
    (["data.negatives=60", "data.negatives_depth=50"], "data.negatives"),
    (["data.negatives=65", "data.negatives_depth=100"], "data.negatives"),
    (["loss=kl", "data.teacher.scorers=[]"], "loss.weights.kl"),
    (["data.sampling=teacher_rank", "data.teacher.scorers=[]"], "data.sampling"),
    (["data.negatives_source=file"], "data.negatives_file"),
    (["loss.weights.contrastive=0"], "loss.weights"),
    (["loss.flops_normalization=mean"], "loss.flops_normalization"),
    (["loss.warmup_fraction=2"], "loss.warmup_fraction"),
    (["loss.teacher_temperature=0"], "loss.teacher_temperature"),
    (["data.teacher.ensemble=median"], "data.teacher.ensemble"),
])
def test_unworkable_training_configs_fail_before_any_model_loads(overrides, key):
    from hydra import compose, initialize_config_dir

    from splade_peft.config import validate
    from tests.helpers import REPO

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with pytest.raises(ConfigError, match=f"'{key}'"):
        validate(cfg)


# --- precision: scores and losses in float32 whatever the autocast state -----------------------------------

def splade_sized_batch():
    """2 queries x groups of 3 documents over 512 dimensions, scores about 32 (a SPLADE score's range, where a
    bf16 number is only known to +-0.125), and teacher scores on another scale."""
    generator = torch.Generator().manual_seed(0)
    queries = torch.rand(2, 512, generator=generator) * 0.5
    documents = torch.rand(6, 512, generator=generator) * 0.5
    return queries, documents, torch.rand(2, 3, generator=generator) * 10


@pytest.mark.parametrize("in_batch", [True, False])
def test_ranking_losses_under_bf16_autocast_are_the_fp32_losses(in_batch):
    queries, documents, teacher = splade_sized_batch()
    cfg = OmegaConf.merge(loss_cfg(contrastive=1.0, margin_mse=1.0, kl=1.0), {"in_batch": in_batch})
    expected = ranking_loss(cfg, queries, documents, 3, teacher)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ranking_loss(cfg, queries, documents, 3, teacher)
        margins = mean_margins(queries, documents, 3, teacher)
        pooled = ranking_loss(cfg, queries, documents, 3, teacher, document_pool=(documents, 0))["contrastive"]
    for name, value in expected.items():
        assert value.dtype == mixed[name].dtype == torch.float32, name
        assert torch.allclose(mixed[name], value, rtol=1e-5, atol=0), name
    assert torch.allclose(pooled, expected["contrastive"] if in_batch else ranking_loss(
        loss_cfg(contrastive=1.0), queries, documents, 3, None)["contrastive"], rtol=1e-5, atol=0)
    assert margins["student_margin"].dtype == torch.float32
    assert torch.allclose(margins["student_margin"], mean_margins(queries, documents, 3, teacher)["student_margin"],
                          rtol=1e-5, atol=1e-6)


def test_bf16_vectors_are_scored_in_fp32():
    """What the encoder returns under bf16-mixed: bf16 vectors. Their scores and losses are those of the same
    numbers in float32, not of bf16 products."""
    queries, documents, teacher = splade_sized_batch()
    queries, documents = queries.bfloat16(), documents.bfloat16()
    cfg = loss_cfg(contrastive=1.0, margin_mse=1.0)
    expected = ranking_loss(cfg, queries.float(), documents.float(), 3, teacher)["total"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ranking_loss(cfg, queries, documents, 3, teacher)["total"]
        scores = group_scores(queries, documents, 3)
    assert mixed.dtype == scores.dtype == torch.float32
    assert torch.allclose(mixed, expected, rtol=1e-6, atol=0)
    assert torch.equal(scores, group_scores(queries.float(), documents.float(), 3))


@pytest.mark.parametrize("normalization", ["batch", "unbiased"])
def test_regularisers_of_bf16_vectors_are_fp32(normalization):
    from splade_peft.training.regularizers import flops, l1

    queries, documents, _ = splade_sized_batch()
    queries, documents = queries.bfloat16(), documents.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = {"flops": flops(documents, normalization), "l1": l1(queries)}
    expected = {"flops": flops(documents.float(), normalization), "l1": l1(queries.float())}
    for name, value in expected.items():
        assert mixed[name].dtype == torch.float32, name
        assert torch.allclose(mixed[name], value, rtol=1e-6, atol=0), name
