"""Reproduce the published reference rows on SciFact test with the offline trained SPLADE checkpoint.

Goes through the pipeline's reference stages and their cache (keyed by checkpoint, collection and
encoding settings), as every job does: a fresh clone computes the rows, a warm cache reuses them.
"""

import pytest
from hydra import compose, initialize_config_dir

import splade_peft.config  # noqa: F401  (resolvers)
from tests.helpers import REPO, offline_checkpoint, shared_collection
from splade_peft.data.sources import load_collection
from splade_peft.model.backbones import load_backbone
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.evaluation.references import bm25_reference, zero_shot_reference
from splade_peft.pipeline import describe_model, evaluation_settings

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def scifact_cfg():
    shared_collection("scifact")
    offline_checkpoint("splade-2l")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["data=scifact", f"paths.root={REPO}"])


@pytest.fixture(scope="module")
def scifact_test(scifact_cfg):
    return load_collection("beir", "test", path=scifact_cfg.data.path, name="scifact")


def test_zero_shot_splade_reproduces_the_published_row(scifact_cfg, scifact_test):
    masked_lm, tokenizer = load_backbone(scifact_cfg.model, scifact_cfg.paths.cache)
    model_fingerprint = describe_model(scifact_cfg, masked_lm)
    _, evaluation = zero_shot_reference(SpladeEncoder(masked_lm), tokenizer, scifact_test, evaluation_settings(scifact_cfg),
                                        scifact_cfg.paths.cache, model_fingerprint)
    assert evaluation["metrics"]["ndcg@10"] == pytest.approx(0.644, abs=0.01)
    assert evaluation["metrics"]["recall@1000"] == pytest.approx(0.973, abs=0.01)
    assert 20 < evaluation["sparsity"]["doc_nnz_mean"] < 1000


def test_bm25_reference_is_close_to_the_published_bm25(scifact_cfg, scifact_test):
    metrics = bm25_reference(scifact_test, scifact_cfg.paths.cache, scifact_cfg.eval.k, scifact_cfg.eval.search_threads)[1]["metrics"]
    assert metrics["ndcg@10"] == pytest.approx(0.676, abs=0.015)
