"""Stage 2 from stage 1's folder: `python -m splade_peft.confirm` picks a selection sweep's best rows on dev
and runs each again with its own overrides and the confirmation's; a grid without dev figures is refused."""

import json
import sys

import pytest

from splade_peft.confirm import main, selected_points

DEV = {0.0: 0.80, 1.0: 0.86, 3.0: 0.85}


def write_stage_one(sweep_dir, dev: bool = True):
    for kl, value in DEV.items():
        folder = sweep_dir / f"loss.weights.kl={kl}"
        folder.mkdir(parents=True)
        overrides = [f"loss.weights.kl={kl}", "+sweep=recipe_selection", f"hydra.run.dir={folder}"]
        result = {"status": "completed", "seed": 42, "overrides": overrides,
                  "config": {"sweep": {"name": "recipe_selection", "metric": "ndcg@10"}}}
        if dev:
            result["dev"] = {"ndcg@10": value}
        else:
            result["metrics"] = {"scifact": {"ndcg@10": value}, "average": {"ndcg@10": value}}
        (folder / "results.json").write_text(json.dumps(result))


def test_the_best_rows_on_dev_come_back_with_their_own_overrides(tmp_path):
    write_stage_one(tmp_path)
    chosen = selected_points(tmp_path, top=2, allow_test_selection=False)
    assert [value for _, value, _ in chosen] == [0.86, 0.85]
    assert chosen[0][2] == ["loss.weights.kl=1.0", "+sweep=recipe_selection"]  # where it ran is not carried


def test_the_confirmation_command_replaces_what_it_is_given(tmp_path, capsys):
    write_stage_one(tmp_path)
    assert main([str(tmp_path), "--dry-run", "seed=1,2,3", "loss.weights.kl=3.0"]) == 0
    command = capsys.readouterr().out.strip().split("): ", 1)[1].split()
    assert command == ["-m", "splade_peft", "-m", "+sweep=recipe_selection", "eval.selection_only=false",
                       "sweep.name=recipe_selection_confirmation", "seed=1,2,3", "loss.weights.kl=3.0"]
    assert main([str(tmp_path), "--dry-run", "sweep.name=recipe_confirmation"]) == 0
    assert capsys.readouterr().out.count("sweep.name=") == 1


def test_a_grid_without_dev_figures_is_refused_unless_asked(tmp_path, capsys):
    write_stage_one(tmp_path, dev=False)
    assert main([str(tmp_path), "--dry-run"]) == 2
    assert "only have been chosen on test" in capsys.readouterr().err
    assert main([str(tmp_path), "--dry-run", "--allow-test-selection"]) == 0
    printed = capsys.readouterr()
    assert "a selection figure" in printed.err and "loss.weights.kl=1.0" in printed.out


@pytest.mark.slow
def test_a_confirmation_runs_the_chosen_row_as_a_sweep_of_its_own(tmp_path):
    """Stage 1: two smoke selection jobs in a multirun; stage 2: the better one on dev, scored on test."""
    import subprocess

    from tests.helpers import REPO

    stage_one = tmp_path / "selection"
    common = ["experiment=smoke", "logger=csv", "eval.selection_only=true", "eval.validate_every_n_steps=3",
              "training.keep_best=true", f"paths.outputs={tmp_path}"]
    done = subprocess.run([sys.executable, "-m", "splade_peft", "-m", *common, "loss.weights.kl=0.0,1.0",
                           f"hydra.sweep.dir={stage_one}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    best = selected_points(stage_one, 1, False)[0]
    confirmed = subprocess.run([sys.executable, "-m", "splade_peft.confirm", str(stage_one), "seed=7",
                                f"hydra.sweep.dir={tmp_path / 'confirmation'}"],
                               cwd=REPO, capture_output=True, text=True, timeout=600)
    assert confirmed.returncode == 0, confirmed.stderr[-2000:]
    (job,) = [folder for folder in (tmp_path / "confirmation").iterdir() if (folder / "results.json").exists()]
    result = json.loads((job / "results.json").read_text())
    assert result["status"] == "completed" and result["seed"] == 7 and "average" in result["metrics"]
    carried = [entry for entry in best[2] if not entry.startswith("eval.selection_only=")]
    assert set(carried) <= set(result["overrides"]) and "eval.selection_only=False" in result["overrides"]  # Hydra's spelling


def test_a_confirmation_filed_beside_an_earlier_stage_has_only_real_axes(tmp_path):
    """Jobs started by different commands spell bookkeeping keys and defaults apart: neither is an axis."""
    from splade_peft.sweep.load import load_sweep

    for seed, overrides, negatives_file in ((1, ["seed=1", "+sweep=recipe_confirmation"], None),
                                            (1, ["seed=1", "+sweep=mining_selection", "eval.selection_only=false",
                                                 "sweep.name=recipe_confirmation", "logger.group=x",
                                                 "data.negatives_file=mined.jsonl"], "mined.jsonl")):
        folder = tmp_path / ",".join(overrides).replace("/", "_")
        folder.mkdir()
        config = {"seed": seed, "eval": {"selection_only": False}, "data": {"negatives_file": negatives_file},
                  "sweep": {"name": "recipe_confirmation"}}
        (folder / "results.json").write_text(json.dumps({"status": "completed", "seed": seed, "overrides": overrides,
                                                         "config": config, "metrics": {"average": {"ndcg@10": 0.5}}}))
    assert load_sweep(tmp_path).swept == ["data.negatives_file"]
