"""Effect or noise: seed-collapsed rows and paired tests on a synthetic sweep with per-query values; the one
test behind each p-value, interval and verdict, checked on designed per-query values."""

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
from splade_peft.sweep import build_report, load_sweep, run_study
from splade_peft.sweep.plots import trade_off_figure
from splade_peft.sweep.paired import MONTE_CARLO_ERROR, paired
from splade_peft.sweep.significance import compare, holm
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


def write_seeded_job(sweep_dir: Path, r: int, seed: int, study: dict | None = None, dev: dict | None = None,
                     status: str = "completed") -> None:
    overrides = [f"seed={seed}", f"lora.r={r}"]
    folder = sweep_dir / f"seed={seed},lora.r={r}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    rows = {"trained": {d: trained(d, r, seed) for d in DATASETS}, "zero_shot": {d: zero_shot(d) for d in DATASETS},
            "bm25": {d: {q: v - 0.1 for q, v in zero_shot(d).items()} for d in DATASETS}}
    write_per_query(folder, {row: {d: {"ndcg@10": values} for d, values in per_dataset.items()} for row, per_dataset in rows.items()})
    references = {system: {d: {"metrics": means(rows[system])[d]} for d in DATASETS} for system in ("bm25", "zero_shot")}
    config = {"sweep": {"metric": "ndcg@10", **(study or {})}, "data": {"name": "scifact"}, "lora": {"r": r}}
    if status != "completed":
        (folder / "results.json").write_text(json.dumps({"status": status, "error": "boom", "overrides": overrides, "config": config}))
        return
    results = {"status": "completed", "overrides": overrides, "config": config,
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


VS_CONTROL_CELL, VS_BEST_CELL = 3, 8  # with seeds: row, seeds, avg, Δ, p, seed ±, query ±, dominant, Δ vs best, p


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
    (ax,) = trade_off_figure(report.sweep, report.study).axes
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


def test_comparisons_reach_their_csv_with_every_job_of_a_point(report):
    frame = pd.read_csv(report.comparisons_path)
    assert list(frame.columns[:5]) == ["label", "jobs", "dataset", "group", "comparison"]
    macro = frame[(frame["dataset"] == "average") & (frame["group"] == "all") & (frame["comparison"] == "vs_control")]
    noise, effect = macro.set_index("label").loc["r=1"], macro.set_index("label").loc["r=4"]
    assert noise["p_adjusted"] > 0.05 and not noise["significant"] and effect["significant"]
    assert effect["jobs"].split(", ") == [f"seed={seed},lora.r=4" for seed in SEEDS]
    assert "vs_control.p" not in pd.read_csv(report.csv_path)  # the job table holds what the jobs measured


def test_seed_is_not_a_plot_axis(report):
    names = {path.name for path in report.plot_paths}
    assert "plot_ndcg@10_vs_lora.r.png" in names and not any("seed" in name for name in names)


def test_paired_difference_is_the_macro_average_and_the_randomization_test_flips_signs():
    row = {"a": {"q1": 0.5, "q2": 0.7}, "b": {"q1": 0.2, "q2": 0.3, "q3": 0.1, "q4": 0.5}}
    other = {"a": {"q1": 0.4, "q2": 0.5}, "b": {"q1": 0.2, "q2": 0.1, "q3": 0.1, "q4": 0.3}}
    assert compare([row], [other]).diff == pytest.approx((0.15 + 0.1) / 2)  # dataset a: +0.15, dataset b: +0.10
    # four positive differences: only "all +" and "all -" of the 16 sign flips reach the observed sum
    flipped = compare([{"a": dict(zip("wxyz", (0.3, 0.1, 0.2, 0.4)))}], [{"a": dict.fromkeys("wxyz", 0.0)}])
    assert flipped.p == pytest.approx(2 / 16) and flipped.exact
    differences = paired([row], [other]).differences
    t = stats.ttest_1samp(differences, 0.0)
    by_t = compare([row], [other], "t")
    assert by_t.p == pytest.approx(t.pvalue)
    assert (by_t.ci_low, by_t.ci_high) == pytest.approx(tuple(t.confidence_interval(0.95)))
    assert compare([{"a": {"q1": 1.0}}], [{"a": {"q1": 0.0}}]) is None  # one query: nothing to test


def one_dataset(values) -> list[dict]:
    return [{"a": {f"q{i}": float(v) for i, v in enumerate(values)}}]


def scipy_sign_flip_p(differences) -> float:
    """scipy's exact sign-flip test (permutation_type='samples' on one sample flips signs)."""
    return stats.permutation_test((np.asarray(differences, dtype=float),), lambda x, axis: np.mean(x, axis=axis),
                                  permutation_type="samples", n_resamples=np.inf, vectorized=True).pvalue


def every_flip_p(differences) -> float:
    """The two-sided sign-flip p-value over all 2^n sign vectors, by brute force."""
    x = np.asarray(differences, dtype=float)
    signs = 1 - 2 * ((np.arange(2 ** len(x))[:, None] >> np.arange(len(x))) & 1).astype(np.int8)
    return float(np.mean(np.abs(signs @ x) >= abs(x.sum()) * (1 - 1e-9)))


# Issue 29, point 1: 20 queries, 7 of them losing, the other 13 unchanged.
LOSSES = [-0.05, -0.1, -0.05, -0.3, -0.2, -1.0, -0.2]


def test_the_p_value_and_the_interval_come_from_one_test():
    """The old report printed p 0.015 (significant) beside a paired t interval [-0.203, +0.013] that holds 0."""
    differences = LOSSES + [0.0] * 13
    result = compare(one_dataset(differences), one_dataset([0.0] * 20))
    assert result.exact and result.queries == 20
    assert result.p == pytest.approx(2 / 128) == pytest.approx(scipy_sign_flip_p(LOSSES))  # zeros do not count
    assert result.ci_high < 0  # p < 0.05, so the interval of the same test excludes 0
    # The interval is the set of shifts the same test does not reject: p crosses 0.05 at both ends.
    for end in (result.ci_low, result.ci_high):
        inside = end + (1e-6 if end == result.ci_low else -1e-6)
        outside = end - (1e-6 if end == result.ci_low else -1e-6)
        assert every_flip_p(np.array(differences) - inside) >= 0.05 > every_flip_p(np.array(differences) - outside)
    assert result.ci_low < result.lower_bound < result.diff < result.upper_bound < result.ci_high  # 90% inside 95%


@pytest.mark.parametrize("seed", range(12))
def test_an_interval_holds_zero_exactly_when_p_is_at_least_alpha(seed):
    rng = np.random.default_rng(seed)
    queries = int(rng.integers(4, 40))
    values = rng.choice([0.0, 0.0, 0.1, -0.1, 0.25, -0.3, 0.5, 1.0], size=queries) * rng.choice([1, 0.5])
    values += rng.normal(0.03, 0.01, queries) * (seed % 2)  # odd seeds: no ties, even seeds: nDCG-like ties
    for test in ("randomization", "t"):
        result = compare(one_dataset(values), one_dataset(np.zeros(queries)), test)
        assert (result.ci_low <= 0 <= result.ci_high) == (result.p >= 0.05), (test, result)
        assert result.ci_low <= result.lower_bound <= result.upper_bound <= result.ci_high


def test_equal_gains_on_a_few_queries_are_not_declared_exact():
    """Issue 29, point 2: 3 queries each gaining +0.369 read p 0.0; the exact sign-flip p is 2 / 8."""
    result = compare(one_dataset([0.369] * 3), one_dataset([0.0] * 3))
    assert result.p == pytest.approx(0.25) == pytest.approx(scipy_sign_flip_p([0.369] * 3))
    assert (result.ci_low, result.ci_high) == (-np.inf, np.inf)  # 3 queries cannot reject anything at 0.05
    by_t = compare(one_dataset([0.369] * 3), one_dataset([0.0] * 3), "t")
    assert by_t.p == 1.0 and by_t.ci_low == -np.inf  # no spread: the t-test has nothing to say


def test_zero_differences_leave_a_comparison_exact_and_many_queries_are_drawn():
    mostly_equal = [0.05, -0.02, 0.3, 0.1, 0.1, -0.4, 0.2, 0.05, 0.05, 0.01] + [0.0] * 290  # as nDCG ties
    result = compare(one_dataset(mostly_equal), one_dataset([0.0] * 300))
    assert result.exact and result.p == pytest.approx(scipy_sign_flip_p(mostly_equal[:10]))
    noisy = np.random.default_rng(8).normal(0.012, 0.1, 300)
    drawn = compare(one_dataset(noisy), one_dataset(np.zeros(300)))
    assert not drawn.exact and MONTE_CARLO_ERROR < 0.002
    scipy_p = stats.permutation_test((noisy,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                     n_resamples=50_000, vectorized=True, random_state=0).pvalue
    assert 0.01 < scipy_p < 0.1  # near the threshold, where the Monte Carlo error matters
    assert abs(drawn.p - scipy_p) < 4 * np.sqrt(scipy_p * (1 - scipy_p) * (1 / 20_001 + 1 / 50_000))


def seeded_sweep(sweep_dir: Path, effects: dict, study: dict | None = None, dev: dict | None = None,
                 failed: tuple[int, ...] = ()) -> Path:
    """SEEDS jobs at each rank of `effects` (rank -> its effect, as in EFFECT), with the study's `sweep` keys;
    the ranks in `failed` fail."""
    saved = dict(EFFECT)
    EFFECT.update(effects)
    try:
        for seed in SEEDS:
            for r in effects:
                write_seeded_job(sweep_dir, r, seed, study, (dev or {}).get(r), "failed" if r in failed else "completed")
    finally:
        EFFECT.clear()
        EFFECT.update(saved)
    return sweep_dir


def write_multirun(sweep_dir: Path, task: list[str]) -> None:
    """multirun.yaml as Hydra writes it for `python -m splade_peft -m <task>`."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    hydra = {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
             "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": task}}
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))


SCOPE = ("dataset", "group", "comparison")


def studied(sweep_dir: Path):
    """The sweep folder read, and its study."""
    sweep = load_sweep(sweep_dir)
    return sweep, run_study(sweep)


def long_table(sweep, study) -> pd.DataFrame:
    """The study's comparisons of the grid rows, indexed by lora.r, dataset, group and comparison."""
    table = study.comparisons
    table = table[table["row"].map(lambda row: not isinstance(row, str)).astype(bool)]
    ranks = pd.Index([sweep.points.at[row, "lora.r"] if "lora.r" in sweep.points else label  # lora.r fixed: the label
                      for row, label in zip(table["row"], table["label"])], name="lora.r")
    return table.drop(columns=["row", "label", "jobs"]).set_index(ranks).set_index(list(SCOPE), append=True)


def scope(sweep, study, dataset: str = "average", group: str = "all", comparison: str = "vs_control") -> pd.DataFrame:
    """One scope of the long table (the macro average against the control by default), by lora.r."""
    return long_table(sweep, study).xs((dataset, group, comparison), level=SCOPE)


def judged(sweep, study) -> set[str]:
    """The datasets on which the grid rows got a non-inferiority verdict."""
    return set(long_table(sweep, study).dropna(subset=["verdict"]).index.get_level_values("dataset"))


def compared(sweep_dir: Path) -> pd.DataFrame:
    return long_table(*studied(sweep_dir))


def test_a_rows_p_value_does_not_change_when_an_unrelated_job_joins_the_folder(tmp_path):
    study = {"family": ["lora.r=2", "r=3"]}  # an override and a label
    sweep_dir = seeded_sweep(tmp_path / "sweep", {2: 0.01, 3: 0.008}, study)
    before = scope(*studied(sweep_dir))
    assert before["in_family"].all() and before["p_adjusted"].between(0.001, 0.5).all()
    assert (before["p_adjusted"] > before["p"]).any()  # Holm moved one: the family counts
    every_scope = compared(sweep_dir)
    seeded_sweep(sweep_dir, {16: 0.012}, study)  # outside the declared family
    pd.testing.assert_frame_equal(compared(sweep_dir).loc[["2", "3"]], every_scope.loc[["2", "3"]], check_exact=True)
    after = scope(*studied(sweep_dir))
    assert not after.at["16", "in_family"]
    assert after.at["16", "p_adjusted"] == after.at["16", "p"]  # shown, uncorrected


def test_the_default_family_is_the_sweeps_grid_not_what_the_folder_holds(tmp_path):
    """Issue 29, point 4: with sweep.family unset the family was whatever completed rows sat in the folder."""
    sweep_dir = tmp_path / "sweep"
    write_multirun(sweep_dir, ["seed=1,2,3", "lora.r=2,3"])
    seeded_sweep(sweep_dir, {2: 0.01, 3: 0.008})
    before = compared(sweep_dir)
    assert before.xs(("average", "all", "vs_control"), level=SCOPE)["in_family"].all()
    seeded_sweep(sweep_dir, {16: 0.012})  # an earlier stage's job filed into the folder: not in the grid
    after = compared(sweep_dir)
    pd.testing.assert_frame_equal(after.loc[["2", "3"]], before.loc[["2", "3"]], check_exact=True)
    sixteen = after.loc[("16", "average", "all", "vs_control")]
    assert not sixteen["in_family"] and sixteen["p_adjusted"] == sixteen["p"]
    markdown = markdown_report(*studied(sweep_dir))
    assert "the points of the sweep's grid" in markdown and "Holm over its 2 rows" in markdown


def test_a_failed_family_row_counts_with_p_one(tmp_path):
    sweep_dir = tmp_path / "sweep"
    write_multirun(sweep_dir, ["seed=1,2,3", "lora.r=2,3,4,5"])  # r=5 never ran
    seeded_sweep(sweep_dir, {2: 0.01, 3: 0.008, 4: 0.05}, failed=(4,))
    sweep, study = studied(sweep_dir)
    points = scope(sweep, study)
    p_values = [points.at[r, "p"] for r in ("2", "3")]
    assert points.loc[["2", "3"], "p_adjusted"].tolist() == pytest.approx(holm(p_values + [1.0, 1.0])[:2])
    assert study.family_size == 4 and study.missing == ["r=4 (failed)", "r=5 (not run)"]
    assert "Counted with p = 1 (no tested row): r=4 (failed), r=5 (not run)." in markdown_report(sweep, study)


def test_a_failed_seed_of_a_completed_row_is_not_a_missing_member(tmp_path):
    sweep_dir = tmp_path / "sweep"
    for seed, status in ((1, "completed"), (2, "completed"), (3, "failed")):
        write_seeded_job(sweep_dir, 4, seed, status=status)
    _, study = studied(sweep_dir)
    assert (study.family_size, study.missing) == (1, [])


def test_a_declared_family_counts_its_failed_and_unknown_rows(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {2: 0.01, 3: 0.008, 4: 0.05},
                             {"family": ["lora.r=2", "lora.r=4", "lora.r=99"]}, failed=(4,))
    sweep, study = studied(sweep_dir)
    points = scope(sweep, study)
    assert points.at["2", "p_adjusted"] == pytest.approx(min(1.0, 3 * points.at["2", "p"]))
    assert not points.at["3", "in_family"]
    assert study.missing == ["r=4 (failed)", "`lora.r=99` (no row)"]


def test_a_family_entry_may_name_a_row_by_any_config_key(tmp_path):
    """recipe_confirmation declares its row by what it is, so a confirmation filed beside it stays outside."""
    sweep_dir = seeded_sweep(tmp_path / "sweep", {2: 0.01, 3: 0.008}, {"family": ["data.name=scifact,lora.r=3"]})
    points = scope(*studied(sweep_dir))
    assert points["in_family"].tolist() == [False, True]  # lora.r from the saved config, not a grid key
    assert points.at["3", "p_adjusted"] == points.at["3", "p"]


def test_without_a_grid_every_row_of_the_folder_is_the_family(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {2: 0.01, 3: 0.008})
    sweep, study = studied(sweep_dir)
    points = scope(sweep, study)
    assert points["in_family"].all()
    assert points["p_adjusted"].min() == pytest.approx(2 * points["p"].min())  # Holm over 2
    assert "no multirun.yaml declares a grid" in markdown_report(sweep, study)


def test_out_of_domain_rows_get_a_non_inferiority_verdict_at_the_declared_margin(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {2: {"scifact": 0.1, "nfcorpus": 0.0}, 8: {"scifact": 0.1, "nfcorpus": -0.1}},
                             {"margin": 0.02})
    sweep, study = studied(sweep_dir)
    nfcorpus = scope(sweep, study, "nfcorpus")
    assert nfcorpus.at["2", "verdict"] == "non-inferior"
    assert nfcorpus.at["8", "verdict"] == "inferior"  # -0.1: the upper bound is below -0.02
    assert judged(sweep, study) == {"nfcorpus"}  # in domain: the jobs trained on scifact
    headers, rows = section_table(markdown_report(sweep, study), "### Per dataset")
    assert "nfcorpus verdict (margin 0.02)" in headers
    assert rows["r=2"][headers.index("nfcorpus verdict (margin 0.02)")].startswith("non-inferior (lower bound -0.0")
    assert (nfcorpus["margin"] == 0.02).all()
    strict = studied(seeded_sweep(tmp_path / "strict", {2: {"scifact": 0.1, "nfcorpus": 0.0}}, {"margin": 0}))
    assert scope(*strict, "nfcorpus").iloc[0]["verdict"] == "inconclusive"  # 0 inside the interval


def test_seed_noise_and_query_noise_are_shown_as_half_widths_side_by_side(report):
    headers, rows = section_table(report.markdown)
    assert headers[5:8] == ["seed ±", "query ±", "dominant"]
    for label in ("r=1", "r=4"):
        spread, half_width, dominant = rows[label][5:8]
        assert dominant == ("seeds" if float(spread) > float(half_width) else "queries")
    points, compared_to_control = report.sweep.points.set_index("lora.r"), scope(report.sweep, report.study)
    assert rows["r=4"][6] == f"{compared_to_control.at['4', 'query_half_width']:.3f}"
    # like for like: the seed mean's 95% half-width, t(2) times its standard error
    seed_error = points.at["4", "average/ndcg@10 std"] / np.sqrt(3)
    assert compared_to_control.at["4", "seed_half_width"] == pytest.approx(stats.t.ppf(0.975, 2) * seed_error, rel=0.1)


def test_the_interval_covers_seeds_as_well_as_queries():
    """Issue 29, point 6: seeds averaged per query, then tested over queries, left the seed noise out."""
    base = np.random.default_rng(5).uniform(0.3, 0.7, 200)
    row = [{"a": {f"q{i}": v + 0.02 + shift for i, v in enumerate(base)}} for shift in (0.0, 0.03, -0.03)]
    control = one_dataset(base)
    result = compare(row, control)
    single = compare([row[0]], control)
    assert result.diff == pytest.approx(0.02) and result.ci_high - result.ci_low > 2 * result.query_half_width
    assert result.seed_half_width > result.query_half_width and not result.exact
    assert (result.ci_low <= 0 <= result.ci_high) == (result.p >= 0.05)
    assert single.p < 0.001 and result.p > 0.05  # one seed looks certain; three that disagree do not
    by_t = compare(row, control, "t")
    assert (by_t.ci_low <= 0 <= by_t.ci_high) == (by_t.p >= 0.05) and by_t.p > 0.05


def margin_case(mean: float, spread: float, queries: int = 100) -> dict:
    """A row whose per-query differences to zero-shot on nfcorpus have this mean and spread."""
    noise = np.random.default_rng(0).normal(0, spread, queries)
    return {f"q{i}": mean + v - noise.mean() for i, v in enumerate(noise)}


@pytest.mark.parametrize("mean, spread, expected", [
    (-0.03, 0.02, "inferior"),        # the upper bound is below -margin
    (-0.0055, 0.03, "inconclusive"),  # the old report: "worse", the upper bound below 0
    (-0.0055, 0.005, "non-inferior"),  # a loss, but the lower bound is above -margin
])
def test_non_inferiority_in_its_standard_form(mean, spread, expected):
    from splade_peft.sweep.significance import verdict

    differences = margin_case(mean, spread)
    result = compare([{"nfcorpus": differences}], [{"nfcorpus": dict.fromkeys(differences, 0.0)}])
    assert verdict(result, 0.01) == expected
    assert (result.upper_bound < -0.01) == (expected == "inferior") and (result.lower_bound > -0.01) == (expected == "non-inferior")


def test_in_domain_is_what_the_jobs_trained_on_not_the_first_dataset(tmp_path):
    """Issue 29, point 10: without sweep.out_of_domain the first listed dataset was taken as in-domain."""
    sweep_dir = seeded_sweep(tmp_path / "sweep", {2: {"scifact": 0.1, "nfcorpus": 0.0}})
    for results in sweep_dir.glob("*/results.json"):
        record = json.loads(results.read_text())
        record["config"]["data"]["name"] = "nfcorpus"
        results.write_text(json.dumps(record))
    sweep, study = studied(sweep_dir)
    assert sweep.datasets[0] == "scifact" and sweep.trained_on == ["nfcorpus"]
    assert judged(sweep, study) == {"scifact"}
    assert "Trained on (data.name, data.mixture): nfcorpus; judged for non-inferiority: the other datasets, scifact." \
        in markdown_report(sweep, study)


def test_seen_and_unseen_queries_get_their_own_comparison(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {1: 0.0, 4: 0.15})
    seen, unseen = [f"q{i}" for i in range(30)], [f"q{i}" for i in range(30, 60)]
    for folder in sweep_dir.iterdir():  # training saw the first half's documents: the gain is there only
        (folder / "query_groups.json").write_text(json.dumps({"scifact": {"seen": seen, "unseen": unseen}}))
        per_query = json.loads((folder / "per_query.json").read_text())
        trained = per_query["trained"]["scifact"]["ndcg@10"]
        trained.update({q: trained[q] + 0.1 for q in seen})
        (folder / "per_query.json").write_text(json.dumps(per_query))
    sweep, study = studied(sweep_dir)
    seen, unseen = scope(sweep, study, "scifact", "seen").loc["1"], scope(sweep, study, "scifact", "unseen").loc["1"]
    assert seen["diff"] == pytest.approx(0.1, abs=0.02) and seen["significant"]
    assert abs(unseen["diff"]) < 0.02 and not unseen["significant"]
    assert seen["queries"] == 30 and ("nfcorpus", "seen") not in study.point_scopes()
    headers, rows = section_table(markdown_report(sweep, study), "### Seen, exposed and unseen documents")
    assert headers[2] == "scifact seen Δ vs control [95% CI]" and rows["r=1"][4].endswith("n.s. (30 queries)")
    written = pd.read_csv(build_report(sweep_dir).comparisons_path)
    assert written[(written["dataset"] == "scifact") & (written["group"] == "unseen")]["p_adjusted"].notna().all()


def test_the_best_row_is_chosen_on_dev_when_the_jobs_report_it(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {1: 0.0, 4: 0.15}, dev={1: {"ndcg@10": 0.8}, 4: {"ndcg@10": 0.5}})
    sweep, study = studied(sweep_dir)
    assert study.best_on_dev and sweep.points.at[study.best, "lora.r"] == "1"  # test says r=4, dev r=1
    markdown = markdown_report(sweep, study)
    assert "r=1 (best, chosen on dev)" in markdown and "selection figure" not in markdown
    assert difference(significance_rows(markdown)["r=4"][VS_BEST_CELL]) == pytest.approx(0.15, abs=0.01)


def test_a_grid_row_can_be_the_control(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {1: 0.0, 4: 0.15}, {"control": "lora.r=1"})
    sweep, study = studied(sweep_dir)
    rows = significance_rows(markdown_report(sweep, study))
    assert rows["r=1"][VS_CONTROL_CELL] == "-" and "r=1 (control)" in markdown_report(sweep, study)
    assert difference(rows["r=4"][VS_CONTROL_CELL]) == pytest.approx(0.15, abs=0.01)
    assert rows["zero-shot (reference)"][VS_CONTROL_CELL].startswith("-0.0")  # r=1 is noise around zero-shot
    assert study.family == [sweep.points.index[sweep.points["lora.r"] == "4"][0]]


def test_an_unknown_test_stops_with_the_key_and_the_fix(tmp_path):
    sweep_dir = seeded_sweep(tmp_path / "sweep", {1: 0.0}, {"test": "wilcoxon"})
    sweep = load_sweep(sweep_dir)  # reading needs no protocol: the statistics refuse it
    with pytest.raises(ConfigError, match="sweep.test.*randomization, t"):
        run_study(sweep)


def test_a_sweep_of_ten_rows_and_300_queries_reports_in_seconds(tmp_path):
    DATASETS["cranfield"] = 300
    try:
        sweep_dir = seeded_sweep(tmp_path / "sweep", {r: 0.01 * r for r in range(10, 20)})
        started = time.perf_counter()
        markdown_report(*studied(sweep_dir))
        assert time.perf_counter() - started < 20
    finally:
        del DATASETS["cranfield"]


def test_a_sweep_without_per_query_values_says_so(tmp_path):
    sweep_dir = tmp_path / "sweep"
    write_seeded_job(sweep_dir, 1, 1)
    (sweep_dir / "seed=1,lora.r=1" / "per_query.json").unlink()
    sweep, study = studied(sweep_dir)
    assert study.comparisons.empty and not any(column.startswith("vs_") for column in sweep.frame.columns)
    assert "not tested" in build_report(sweep_dir).markdown


def test_the_tests_sweep_test_accepts_are_the_tests_the_report_runs():
    from splade_peft.config import SIGNIFICANCE_TESTS
    from splade_peft.sweep.paired import COMPARISONS

    assert set(SIGNIFICANCE_TESTS) == set(COMPARISONS)
