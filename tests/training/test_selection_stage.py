"""A selection-stage job (eval.selection_only=true): it trains, reports its dev figure, and never opens the
splits a later confirmatory run is scored on; the sweep report of such jobs chooses on the dev column."""

import json

import pytest

from splade_peft.config import validate
from splade_peft.errors import ConfigError
from splade_peft.sweep.build import build_report
from tests.helpers import composed, run_cli

SELECTION = ("eval.selection_only=true", "eval.validate_every_n_steps=3", "training.keep_best=true")


@pytest.mark.parametrize("overrides, says", [
    (["lora=frozen"], "lora=frozen trains nothing"),
    (["eval.validation_split=test", "eval.allow_test_selection=true"], "eval.validation_split=test"),
    (["data.dev.queries=0"], "carves none"),
])
def test_a_selection_job_without_a_dev_split_to_score_is_refused(overrides, says):
    with pytest.raises(ConfigError, match="^config key 'eval.(selection_only|validation_split)': ") as refused:
        validate(composed("experiment=smoke", *SELECTION, *overrides))
    assert says in str(refused.value)


@pytest.mark.slow
def test_a_selection_job_never_opens_an_evaluation_dataset(tmp_path):
    # The evaluation entry points at no folder: a job that opened it would fail.
    missing = "+eval.datasets.confirm={name:confirm,source:beir,path:/nonexistent/collection,split:test}"
    for kl in (0.0, 1.0):
        done = run_cli(tmp_path / f"kl{kl:g}", "experiment=smoke", "logger=csv", *SELECTION, missing, f"loss.weights.kl={kl}")
        assert done.returncode == 0, done.stderr[-2000:]
        result = json.loads((tmp_path / f"kl{kl:g}" / "results.json").read_text())
        assert result["status"] == "completed" and set(result["dev"]) >= {"ndcg@10", "recall@1000"}
        assert "metrics" not in result and result["data"]["eval"] == {} and result["data"]["dev"]["queries"] >= 4
        assert set(result["dev_at_start"]) == set(result["dev"])  # the starting checkpoint on the same dev slice
    report = build_report(tmp_path)
    assert "| dev nDCG@10 |" in report.markdown and "on dev only" in report.markdown
    zero_shot = next(line for line in report.table.splitlines() if line.startswith("| zero-shot"))
    assert f"{result['dev_at_start']['ndcg@10']:.3f}" in zero_shot


def test_a_checkpoint_belongs_to_the_same_job_run_from_another_checkout():
    from splade_peft.pipeline import training_fingerprint

    here, there = composed("experiment=smoke"), composed("experiment=smoke", "paths.root=/elsewhere/checkout")
    assert there.model.name_or_path != here.model.name_or_path or there.paths.cache != here.paths.cache
    assert training_fingerprint(here) == training_fingerprint(there)
    assert training_fingerprint(here) != training_fingerprint(composed("experiment=smoke", "lora.r=2"))
