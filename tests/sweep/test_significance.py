"""Effect or noise: seed-collapsed rows and paired tests on a synthetic sweep with per-query values."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from splade_peft.errors import ConfigError
from splade_peft.results import write_per_query
from splade_peft.sweep import build_report, load_sweep
from splade_peft.sweep.plots import trade_off_figure
from splade_peft.sweep.significance import compare, holm, weighted_differences
from splade_peft.sweep.table import markdown_report

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


def write_seeded_job(sweep_dir: Path, r: int, seed: int, study: dict | None = None, dev: dict | None = None) -> None:
    overrides = [f"seed={seed}", f"lora.r={r}"]
    folder = sweep_dir / f"seed={seed},lora.r={r}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    rows = {"trained": {d: trained(d, r, seed) for d in DATASETS}, "zero_shot": {d: zero_shot(d) for d in DATASETS},
            "bm25": {d: {q: v - 0.1 for q, v in zero_shot(d).items()} for d in DATASETS}}
    write_per_query(folder, {row: {d: {"ndcg@10": values} for d, values in per_dataset.items()} for row, per_dataset in rows.items()})
    references = {system: {d: {"metrics": means(rows[system])[d]} for d in DATASETS} for system in ("bm25", "zero_shot")}
    results = {"status": "completed", "overrides": overrides, "config": {"sweep": {"metric": "ndcg@10", **(study or {})}},
               "metrics": means(rows["trained"]), "references": references, "params": {"trainable": 1000 * r},
               "timing": {"train_s": 10.0 * r + seed}, "data": {"eval": {d: {} for d in DATASETS}},
               **({"dev": dev} if dev else {})}
    (folder / "results.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("seeds") / "sweep"
    for seed in SEEDS:
        for r in EFFECT:
            write_seeded_job(sweep_dir, r, seed)
    return build_report(sweep_dir)


def section_table(markdown: str, section: str = "## Significance") -> tuple[list[str], dict[str, list[str]]]:
    """The headers and the rows of a section's table, rows by label (a grid row's tags such as "(control)" left off)."""
    section = markdown.split(section, 1)[1].split("###", 1)[0].split("## ", 1)[0]
    lines = [[c.strip() for c in line.strip("|").split(" | ")] for line in section.splitlines() if line.startswith("| ")]
    def label(cell: str) -> str:
        return cell if cell.endswith("(reference)") else cell.split(" (", 1)[0]

    return lines[0], {label(cells[0]): cells for cells in lines[2:]}


def significance_rows(markdown: str, section: str = "## Significance") -> dict[str, list[str]]:
    return section_table(markdown, section)[1]


VS_CONTROL_CELL, VS_BEST_CELL = 3, 8  # with seeds: row, seeds, avg, Δ, p, seed std, query ±, dominant, Δ vs best, p


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
    assert difference(effect[VS_CONTROL_CELL]) == pytest.approx(0.15, abs=0.01) and "n.s." not in effect[VS_CONTROL_CELL]
    assert effect[VS_BEST_CELL] == "-"  # the best row is not compared with itself
    assert "n.s." in noise[VS_CONTROL_CELL]  # r=1 only moves within its interval around zero-shot
    assert difference(noise[VS_BEST_CELL]) == pytest.approx(-0.15, abs=0.01) and "n.s." not in noise[VS_BEST_CELL]
    assert difference(bm25[VS_CONTROL_CELL]) == pytest.approx(-0.1) and "n.s." not in bm25[VS_CONTROL_CELL]
    assert bm25[VS_CONTROL_CELL + 1].endswith("†")  # a reference: shown, uncorrected, never in the family
    assert "r=4 (best, chosen on test (selection figure))" in report.markdown  # no job reports a dev figure


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
    assert "n.s." in significance_rows(report.markdown)["r=4"][VS_BEST_CELL]


def test_a_loss_out_of_domain_shows_beside_the_gain_in_domain(tmp_path):
    report = report_with(tmp_path / "sweep", (1, 8), 8, {"scifact": 0.1, "nfcorpus": -0.1})  # the average hides both
    assert "n.s." in significance_rows(report.markdown)["r=8"][VS_CONTROL_CELL]
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
    assert "zero-shot (reference)" not in rows and rows["BM25 (reference)"][VS_CONTROL_CELL] == "-"
    assert difference(rows["r=4"][VS_CONTROL_CELL]) == pytest.approx(0.01, abs=1e-6)  # not the 0.15 over r=1's zero-shot
    assert "scifact zero-shot nDCG@10" in report.markdown.split("## Significance")[0]


def test_comparisons_reach_the_csv_for_every_job_of_a_point(report):
    frame = pd.read_csv(report.csv_path)
    noise = frame[frame["lora.r"] == 1]
    assert (noise["vs_control.p_adjusted"] > 0.05).all() and not noise["vs_control.significant"].any()
    assert frame[frame["lora.r"] == 4]["vs_control.significant"].all()


def test_seed_is_not_a_plot_axis(report):
    names = {path.name for path in report.plot_paths}
    assert "plot_ndcg@10_vs_lora.r.png" in names and not any("seed" in name for name in names)


def test_paired_difference_is_the_macro_average_and_the_randomization_test_flips_signs():
    row = {"a": {"q1": 0.5, "q2": 0.7}, "b": {"q1": 0.2, "q2": 0.3, "q3": 0.1, "q4": 0.5}}
    other = {"a": {"q1": 0.4, "q2": 0.5}, "b": {"q1": 0.2, "q2": 0.1, "q3": 0.1, "q4": 0.3}}
    assert compare(row, other).diff == pytest.approx((0.15 + 0.1) / 2)  # dataset a: +0.15, dataset b: +0.10
    # four positive differences: only "all +" and "all -" of the 16 sign flips reach the observed sum
    flipped = compare({"a": dict(zip("wxyz", (0.3, 0.1, 0.2, 0.4)))}, {"a": dict.fromkeys("wxyz", 0.0)})
    assert flipped.p == pytest.approx(2 / 16)
    assert compare(row, other, "t").p == pytest.approx(stats.ttest_rel(*weighted(row, other)).pvalue)
    assert compare({"a": {"q1": 1.0}}, {"a": {"q1": 0.0}}) is None  # one query: nothing to test


def weighted(row, other) -> tuple[np.ndarray, np.ndarray]:
    differences = weighted_differences(row, other)
    return differences, np.zeros_like(differences)


def test_holm_steps_down_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.3, 0.6]) == pytest.approx([0.6, 0.6]) and holm([]) == []


def seeded_sweep(sweep_dir: Path, effects: dict, study: dict | None = None, dev: dict | None = None) -> Path:
    """SEEDS jobs at each rank of `effects` (rank -> its effect, as in EFFECT), with the study's `sweep` keys."""
    saved = dict(EFFECT)
    EFFECT.update(effects)
    try:
        for seed in SEEDS:
            for r in effects:
                write_seeded_job(sweep_dir, r, seed, study, (dev or {}).get(r))
    finally:
        EFFECT.clear()
        EFFECT.update(saved)
    return sweep_dir


def test_a_rows_p_value_does_not_change_when_an_unrelated_job_joins_the_folder(tmp_path):
    study = {"family": ["lora.r=2", "r=3"]}  # an override and a label
    sweep_dir = seeded_sweep(tmp_path / "sweep", {2: 0.01, 3: 0.008}, study)
    before = load_sweep(sweep_dir).points.set_index("lora.r")
    assert before["vs_control.in_family"].all() and before["vs_control.p_adjusted"].between(0.001, 0.5).all()
    assert (before["vs_control.p_adjusted"] > before["vs_control.p"]).any()  # Holm moved one: the family counts
    seeded_sweep(sweep_dir, {16: 0.012}, study)  # outside the declared family
    after = load_sweep(sweep_dir).points.set_index("lora.r")
    compared = [c for c in before.columns if c.startswith(("vs_control", "vs_best"))]
    pd.testing.assert_frame_equal(after.loc[["2", "3"], compared], before.loc[["2", "3"], compared], check_exact=True)
    assert not after.at["16", "vs_control.in_family"]
    assert after.at["16", "vs_control.p_adjusted"] == after.at["16", "vs_control.p"]  # shown, uncorrected


def test_every_grid_row_is_the_family_by_default(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {2: 0.01, 3: 0.008})
    points = load_sweep(sweep_dir).points.set_index("lora.r")
    assert points["vs_control.in_family"].all()
    assert points["vs_control.p_adjusted"].min() == pytest.approx(2 * points["vs_control.p"].min())  # Holm over 2


def test_out_of_domain_rows_get_a_non_inferiority_verdict_at_the_declared_margin(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {2: {"scifact": 0.1, "nfcorpus": 0.0}, 8: {"scifact": 0.1, "nfcorpus": -0.1}},
                             {"margin": 0.02})
    sweep = load_sweep(sweep_dir)
    points = sweep.points.set_index("lora.r")
    assert points.at["2", "vs_control@nfcorpus.verdict"] == "non-inferior"
    assert points.at["8", "vs_control@nfcorpus.verdict"] == "worse"
    assert "vs_control@scifact.verdict" not in points  # in domain: the first dataset is not judged
    headers, rows = section_table(markdown_report(sweep), "### Per dataset")
    assert "nfcorpus verdict (margin 0.02)" in headers
    assert rows["r=2"][headers.index("nfcorpus verdict (margin 0.02)")].startswith("non-inferior (lower bound -0.0")
    frame = sweep.frame.set_index("job")
    assert (frame["vs_control@nfcorpus.margin"] == 0.02).all()
    strict = load_sweep(seeded_sweep(tmp_path / "strict", {2: {"scifact": 0.1, "nfcorpus": 0.0}}, {"margin": 0}))
    assert strict.points.iloc[0]["vs_control@nfcorpus.verdict"] == "inconclusive"  # 0 inside the interval


def test_seed_spread_is_shown_beside_the_query_interval(report):
    headers, rows = section_table(report.markdown)
    assert headers[5:8] == ["seed std", "query ±", "dominant"]
    for label in ("r=1", "r=4"):
        spread, half_width, dominant = rows[label][5:8]
        assert dominant == ("seeds" if float(spread) > float(half_width) else "queries")
    points = report.sweep.points.set_index("lora.r")
    half_width = (points.at["4", "vs_control.ci_high"] - points.at["4", "vs_control.ci_low"]) / 2
    assert rows["r=4"][6] == f"{half_width:.3f}" and rows["r=4"][5] == f"{points.at['4', 'average/ndcg@10 std']:.3f}"


def test_seen_and_unseen_queries_get_their_own_comparison(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {1: 0.0, 4: 0.15})
    seen, unseen = [f"q{i}" for i in range(30)], [f"q{i}" for i in range(30, 60)]
    for folder in sweep_dir.iterdir():  # training saw the first half's documents: the gain is there only
        (folder / "query_groups.json").write_text(json.dumps({"scifact": {"seen": seen, "unseen": unseen}}))
        per_query = json.loads((folder / "per_query.json").read_text())
        trained = per_query["trained"]["scifact"]["ndcg@10"]
        trained.update({q: trained[q] + 0.1 for q in seen})
        (folder / "per_query.json").write_text(json.dumps(per_query))
    sweep = load_sweep(sweep_dir)
    point = sweep.points.set_index("lora.r").loc["1"]
    assert point["vs_control@scifact/seen.diff"] == pytest.approx(0.1, abs=0.02) and point["vs_control@scifact/seen.significant"]
    assert abs(point["vs_control@scifact/unseen.diff"]) < 0.02 and not point["vs_control@scifact/unseen.significant"]
    assert point["vs_control@scifact/seen.queries"] == 30 and "vs_control@nfcorpus/seen.diff" not in sweep.points
    headers, rows = section_table(markdown_report(sweep), "### Seen vs unseen documents")
    assert headers[2] == "scifact seen Δ vs control [95% CI]" and rows["r=1"][4].endswith("n.s. (30 queries)")
    assert "vs_control@scifact/unseen.p_adjusted" in sweep.frame


def test_the_best_row_is_chosen_on_dev_when_the_jobs_report_it(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {1: 0.0, 4: 0.15}, dev={1: {"ndcg@10": 0.8}, 4: {"ndcg@10": 0.5}})
    sweep = load_sweep(sweep_dir)
    assert sweep.study.best_on_dev and sweep.points.at[sweep.study.best, "lora.r"] == "1"  # test says r=4, dev r=1
    markdown = markdown_report(sweep)
    assert "r=1 (best, chosen on dev)" in markdown and "selection figure" not in markdown
    assert difference(significance_rows(markdown)["r=4"][VS_BEST_CELL]) == pytest.approx(0.15, abs=0.01)


def test_a_grid_row_can_be_the_control(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {1: 0.0, 4: 0.15}, {"control": "lora.r=1"})
    sweep = load_sweep(sweep_dir)
    rows = significance_rows(markdown_report(sweep))
    assert rows["r=1"][VS_CONTROL_CELL] == "-" and "r=1 (control)" in markdown_report(sweep)
    assert difference(rows["r=4"][VS_CONTROL_CELL]) == pytest.approx(0.15, abs=0.01)
    assert rows["zero-shot (reference)"][VS_CONTROL_CELL].startswith("-0.0")  # r=1 is noise around zero-shot
    assert sweep.study.family == [sweep.points.index[sweep.points["lora.r"] == "4"][0]]


def test_an_unknown_test_stops_with_the_key_and_the_fix(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {1: 0.0}, {"test": "wilcoxon"})
    with pytest.raises(ConfigError, match="sweep.test.*randomization, t"):
        load_sweep(sweep_dir)


def test_a_sweep_of_ten_rows_and_300_queries_reports_in_seconds(tmp_path):
    DATASETS["cranfield"] = 300
    try:
        sweep_dir = seeded_sweep(tmp_path / "sweep", {r: 0.01 * r for r in range(10, 20)})
        started = time.perf_counter()
        markdown_report(load_sweep(sweep_dir))
        assert time.perf_counter() - started < 20
    finally:
        del DATASETS["cranfield"]


def test_a_sweep_without_per_query_values_says_so(tmp_path):
    sweep_dir = tmp_path / "sweep"
    write_seeded_job(sweep_dir, 1, 1)
    (sweep_dir / "seed=1,lora.r=1" / "per_query.json").unlink()
    sweep = load_sweep(sweep_dir)
    assert not any(column.startswith("vs_") for column in sweep.frame.columns)
    assert "not tested" in build_report(sweep_dir).markdown
