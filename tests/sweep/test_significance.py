"""Effect or noise: seed-collapsed rows and paired tests on a synthetic sweep with per-query values."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from splade_peft.results import write_per_query
from splade_peft.sweep import build_report, load_sweep
from splade_peft.sweep.plots import trade_off_figure
from splade_peft.sweep.significance import compare

DATASETS = {"scifact": 60, "nfcorpus": 40}  # queries per dataset
SEEDS = (1, 2, 3)
# lora.r=4 gains 0.15 on every query (an effect); lora.r=1 moves each query by +-0.05 (noise around zero-shot).
EFFECT = {1: 0.0, 4: 0.15}


def zero_shot(dataset: str) -> dict[str, float]:
    rng = np.random.default_rng(len(dataset))
    return {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.2, 0.6, DATASETS[dataset]))}


def trained(dataset: str, r: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed * 100 + r)
    effect = EFFECT[r][dataset] if isinstance(EFFECT[r], dict) else EFFECT[r]
    return {q: v + effect + float(rng.choice([-0.05, 0.05])) for q, v in zero_shot(dataset).items()}


def means(per_dataset: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    metrics = {d: {"ndcg@10": float(np.mean(list(v.values())))} for d, v in per_dataset.items()}
    return {**metrics, "average": {"ndcg@10": float(np.mean([m["ndcg@10"] for m in metrics.values()]))}}


def write_seeded_job(sweep_dir: Path, r: int, seed: int) -> None:
    overrides = [f"seed={seed}", f"lora.r={r}"]
    folder = sweep_dir / f"seed={seed},lora.r={r}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    rows = {"trained": {d: trained(d, r, seed) for d in DATASETS}, "zero_shot": {d: zero_shot(d) for d in DATASETS},
            "bm25": {d: {q: v - 0.1 for q, v in zero_shot(d).items()} for d in DATASETS}}
    write_per_query(folder, {row: {d: {"ndcg@10": values} for d, values in per_dataset.items()} for row, per_dataset in rows.items()})
    references = {system: {d: {"metrics": means(rows[system])[d]} for d in DATASETS} for system in ("bm25", "zero_shot")}
    results = {"status": "completed", "overrides": overrides, "config": {"sweep": {"metric": "ndcg@10"}},
               "metrics": means(rows["trained"]), "references": references, "params": {"trainable": 1000 * r},
               "timing": {"train_s": 10.0 * r + seed}, "data": {"eval": {d: {} for d in DATASETS}}}
    (folder / "results.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("seeds") / "sweep"
    for seed in SEEDS:
        for r in EFFECT:
            write_seeded_job(sweep_dir, r, seed)
    return build_report(sweep_dir)


def significance_rows(markdown: str, section: str = "## Significance") -> dict[str, list[str]]:
    section = markdown.split(section, 1)[1].split("###", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")][2:]
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split(" | ")] for line in lines)}


def difference(cell: str) -> float:
    return float(cell.split(" ", 1)[0])


def test_seeds_collapse_into_one_row_per_grid_point_with_mean_and_std(report):
    sweep = report.sweep
    assert sweep.grid_keys == ["lora.r"] and sweep.seeded
    points = sweep.completed_points
    assert list(points["lora.r"].astype(int)) == [1, 4] and list(points["seeds"]) == [3, 3]
    averages = [means({d: trained(d, 4, seed) for d in DATASETS})["average"]["ndcg@10"] for seed in SEEDS]
    best = points[points["lora.r"].astype(int) == 4].iloc[0]
    assert best["average/ndcg@10"] == pytest.approx(np.mean(averages))
    assert best["average/ndcg@10 std"] == pytest.approx(np.std(averages, ddof=1))
    assert f"{np.mean(averages):.3f} ± {np.std(averages, ddof=1):.3f}" in report.markdown
    assert len(pd.read_csv(report.csv_path)) == 6  # the CSV keeps one row per job


def test_an_effect_is_significant_and_noise_is_not(report):
    rows = significance_rows(report.markdown)
    effect, noise, bm25 = rows["r=4"], rows["r=1"], rows["BM25 (reference)"]
    assert difference(effect[3]) == pytest.approx(0.15, abs=0.01) and "n.s." not in effect[3]  # vs zero-shot
    assert effect[5] == "-"  # the best row is not compared with itself
    assert "n.s." in noise[3]  # r=1 only moves within its interval around zero-shot
    assert difference(noise[5]) == pytest.approx(-0.15, abs=0.01) and "n.s." not in noise[5]  # clearly below the best
    assert difference(bm25[3]) == pytest.approx(-0.1) and "n.s." not in bm25[3]


def report_with(sweep_dir: Path, ranks: tuple[int, ...], r: int, effect):
    """The report of a sweep over `ranks` x SEEDS where rank `r` has the given effect."""
    EFFECT[r] = effect
    try:
        for seed in SEEDS:
            for rank in ranks:
                write_seeded_job(sweep_dir, rank, seed)
        return build_report(sweep_dir)
    finally:
        del EFFECT[r]


def test_the_best_column_marks_rows_tied_with_the_best(tmp_path):
    report = report_with(tmp_path / "sweep", (4, 16), 16, 0.152)  # r=16 indistinguishable from r=4
    table = report.markdown.split("## Significance")[0]
    assert table.count("**") // 2 >= 2  # both r=4 and r=16 are bold in the study column
    assert "n.s." in significance_rows(report.markdown)["r=4"][5]


def test_a_loss_out_of_domain_shows_beside_the_gain_in_domain(tmp_path):
    report = report_with(tmp_path / "sweep", (1, 8), 8, {"scifact": 0.1, "nfcorpus": -0.1})  # the average hides both
    assert "n.s." in significance_rows(report.markdown)["r=8"][3]
    row = significance_rows(report.markdown, "### Per dataset")["r=8"]
    headers = [h.strip() for h in report.markdown.split("### Per dataset")[1].split("\n| ")[1].split(" | ")]
    scifact, nfcorpus = row[headers.index("scifact nDCG@10") + 1], row[headers.index("nfcorpus nDCG@10") + 1]
    assert difference(scifact) == pytest.approx(0.1, abs=0.01) and "n.s." not in scifact
    assert difference(nfcorpus) == pytest.approx(-0.1, abs=0.01) and "n.s." not in nfcorpus


def test_the_trade_off_plot_draws_each_row_at_its_gain_on_each_dataset(tmp_path):
    report = report_with(tmp_path / "sweep", (1, 8), 8, {"scifact": 0.1, "nfcorpus": -0.1})
    assert "plot_trade_off.png" in {path.name for path in report.plot_paths}
    (ax,) = trade_off_figure(report.sweep).axes
    assert ax.get_xlabel().startswith("scifact") and ax.get_ylabel().startswith("nfcorpus")
    drawn = [(float(line.get_xdata()[0]), float(line.get_ydata()[0])) for line in ax.lines if line.get_marker() == "o"]
    assert any(x == pytest.approx(0.1, abs=0.01) and y == pytest.approx(-0.1, abs=0.01) for x, y in drawn)  # r=8
    assert any(abs(x) < 0.02 and abs(y) < 0.02 for x, y in drawn)  # r=1: noise around zero-shot


def test_a_grid_that_changes_the_zero_shot_model_compares_each_row_with_its_own(tmp_path):
    """Pooling or attention changes the untrained model too: a shared zero-shot row would credit the
    training with the pooling's effect."""
    sweep_dir = tmp_path / "sweep"
    for seed in SEEDS:
        write_seeded_job(sweep_dir, 1, seed)
        write_seeded_job(sweep_dir, 4, seed)
    for folder in sweep_dir.glob("*lora.r=4"):  # r=4's zero-shot is its trained row less 0.01 on every query
        per_query = json.loads((folder / "per_query.json").read_text())
        per_query["zero_shot"] = {d: {m: {q: v - 0.01 for q, v in by_q.items()} for m, by_q in by_m.items()}
                                  for d, by_m in per_query["trained"].items()}
        (folder / "per_query.json").write_text(json.dumps(per_query))
        results = json.loads((folder / "results.json").read_text())
        results["references"]["zero_shot"] = {d: {"metrics": {"ndcg@10": v["ndcg@10"] - 0.01}} for d, v in results["metrics"].items() if d != "average"}
        (folder / "results.json").write_text(json.dumps(results))
    report = build_report(sweep_dir)
    rows = significance_rows(report.markdown)
    assert "zero-shot (reference)" not in rows and rows["BM25 (reference)"][3] == "-"
    assert difference(rows["r=4"][3]) == pytest.approx(0.01, abs=1e-6)  # not the 0.15 over r=1's zero-shot
    assert "scifact zero-shot nDCG@10" in report.markdown.split("## Significance")[0]


def test_comparisons_reach_the_csv_for_every_job_of_a_point(report):
    frame = pd.read_csv(report.csv_path)
    noise = frame[frame["lora.r"] == 1]
    assert (noise["vs_zero_shot.p_adjusted"] > 0.05).all() and not noise["vs_zero_shot.significant"].any()
    assert frame[frame["lora.r"] == 4]["vs_zero_shot.significant"].all()


def test_seed_is_not_a_plot_axis(report):
    names = {path.name for path in report.plot_paths}
    assert "plot_ndcg@10_vs_lora.r.png" in names and not any("seed" in name for name in names)


def test_paired_difference_is_the_macro_average_and_is_bonferroni_corrected():
    row = {"a": {"q1": 0.5, "q2": 0.7}, "b": {"q1": 0.2, "q2": 0.3, "q3": 0.1, "q4": 0.5}}
    other = {"a": {"q1": 0.4, "q2": 0.5}, "b": {"q1": 0.2, "q2": 0.1, "q3": 0.1, "q4": 0.3}}
    once, twice = compare(row, other, 1), compare(row, other, 2)
    assert once.diff == pytest.approx((0.15 + 0.1) / 2)  # dataset a: +0.15, dataset b: +0.10
    assert twice.p_adjusted == pytest.approx(min(1.0, 2 * once.p_adjusted))
    assert twice.ci_low < once.ci_low and twice.ci_high > once.ci_high
    assert compare({"a": {"q1": 1.0}}, {"a": {"q1": 0.0}}, 1) is None  # one query: nothing to test


def test_a_sweep_without_per_query_values_says_so(tmp_path):
    sweep_dir = tmp_path / "sweep"
    write_seeded_job(sweep_dir, 1, 1)
    (sweep_dir / "seed=1,lora.r=1" / "per_query.json").unlink()
    sweep = load_sweep(sweep_dir)
    assert not any(column.startswith("vs_") for column in sweep.frame.columns)
    assert "not tested" in build_report(sweep_dir).markdown
