"""Sweep report: CSV, Markdown study table, plots, CLI, notebook and W&B logging on synthetic sweep folders."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from tests.helpers import REPO

from splade_peft import report as report_cli
from splade_peft.sweep import build_report, load_sweep, log_report_to_wandb, pareto_front, run_study, study_table
from splade_peft.sweep.load import grid_sort_key, parse_overrides
from splade_peft.sweep.plots import axis_kind

NOTEBOOK = REPO / "notebooks" / "sweep_analysis.ipynb"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STUDY = {
    "name": "rank_x_negatives", "question": "How do LoRA rank and negatives interact?", "metric": "ndcg@10", "rerun_failed": False,
}

# (lora.r, data.negatives) -> {dataset: (mrr@10, recall@1000, ndcg@10)}; the best of each column is unique.
GRID = {
    (1, 1): {"scifact": (0.580, 0.950, 0.600), "cranfield": (0.430, 0.900, 0.350)},
    (1, 2): {"scifact": (0.600, 0.960, 0.640), "cranfield": (0.410, 0.905, 0.360)},
    (4, 1): {"scifact": (0.590, 0.970, 0.620), "cranfield": (0.420, 0.910, 0.370)},
    (4, 2): {"scifact": (0.610, 0.965, 0.655), "cranfield": (0.405, 0.915, 0.385)},
}
TRAIN_SECONDS = {(1, 1): 60.0, (1, 2): 100.0, (4, 1): 70.0, (4, 2): 120.0}
# BM25 beats every grid row on scifact nDCG@10: references must not take the bold.
BM25 = {"scifact": (0.620, 0.930, 0.665), "cranfield": (0.350, 0.880, 0.300)}
ZERO_SHOT = {"scifact": (0.450, 0.900, 0.500), "cranfield": (0.300, 0.850, 0.250)}


def metric_dict(values: tuple) -> dict:
    mrr, recall, ndcg = values
    return {"mrr@10": mrr, "recall@100": recall - 0.1, "recall@1000": recall, "ndcg@10": ndcg}


def sparsity(doc_nnz: float) -> dict:
    return {"doc_nnz_mean": doc_nnz, "doc_nnz_median": doc_nnz - 5, "query_nnz_mean": 20.0, "query_nnz_median": 19,
            "empty_docs": 0, "empty_queries": 0, "flops": 3.2}


def job_config(r: int, negatives: int, logger: str) -> dict:
    return {"seed": 42, "lora": {"r": r, "alpha": "${lora.r}"}, "data": {"negatives": negatives}, "model": {"name": "tiny"},
            "logger": {"name": logger, "project": "splade_peft", "group": "${sweep.name}"}, "sweep": STUDY}


def completed_results(r: int, negatives: int, overrides: list[str], logger: str) -> dict:
    per_dataset = {name: metric_dict(values) for name, values in GRID[(r, negatives)].items()}
    average = {key: sum(m[key] for m in per_dataset.values()) / len(per_dataset) for key in per_dataset["scifact"]}
    references = {
        "bm25": {name: {"metrics": metric_dict(values)} for name, values in BM25.items()},
        "zero_shot": {name: {"metrics": metric_dict(values), "sparsity": sparsity(200.0), "timing": {"encode_s": 1.0}}
                      for name, values in ZERO_SHOT.items()},
    }
    return {
        "status": "completed", "seed": 42, "overrides": overrides, "config": job_config(r, negatives, logger),
        "metrics": {**per_dataset, "average": average},
        "sparsity": {name: sparsity(100.0 + 10 * r + negatives) for name in per_dataset},
        "references": references,
        "params": {"trainable": 9216 * r, "total": 4453562, "adapter_bytes": 37000 * r},
        "timing": {"train_s": TRAIN_SECONDS[(r, negatives)], "encode_s": 30.0, "index_s": 3.0, "search_s": 4.0},
        "memory": {"peak_rss_mb": 2500.0},
        "training": {"train_s": TRAIN_SECONDS[(r, negatives)], "steps": 100, "training_pairs": 900},
        "data": {"eval": {name: {"fingerprint": "abc", "split": "test", "documents": 5183, "queries": 300}
                          for name in per_dataset}},
        "versions": {"python": "3.11"},
    }


def write_job(sweep_dir: Path, name: str, overrides: list[str], results: dict | str | None) -> None:
    folder = sweep_dir / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if results is not None:
        (folder / "results.json").write_text(results if isinstance(results, str) else json.dumps(results))


def write_multirun(sweep_dir: Path, task: list[str], logger: str) -> None:
    multirun = {
        "hydra": {"sweep": {"dir": str(sweep_dir), "subdir": "${hydra.job.num}_${hydra.job.override_dirname}"},
                  "sweeper": {"params": None}, "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": task}},
        "sweep": STUDY, "logger": {"name": logger, "project": "splade_peft", "group": None},
    }
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(multirun))


def make_sweep(sweep_dir: Path, logger: str = "csv") -> Path:
    """The 2x2 grid (lora.r=1,4 x data.negatives=1,2) on two datasets, a failed job at r=16 and a corrupt
    results.json at r=8; folders numbered in launch order, as Hydra names them."""
    sweep_dir.mkdir(parents=True)
    write_multirun(sweep_dir, ["lora.r=1,4,16", "data.negatives=1,2", "model=tiny"], logger)
    for number, (r, negatives) in enumerate(GRID):
        overrides = [f"lora.r={r}", f"data.negatives={negatives}", "model=tiny"]
        results = completed_results(r, negatives, overrides, logger)
        write_job(sweep_dir, f"{number}_data.negatives={negatives},lora.r={r}", overrides, results)
    failed_overrides = ["lora.r=16", "data.negatives=1", "model=tiny"]
    write_job(sweep_dir, "4_data.negatives=1,lora.r=16", failed_overrides, {
        "status": "failed", "error": "ValueError: rank 16 exceeds the hidden size\nsecond line",
        "overrides": failed_overrides, "config": job_config(16, 1, logger),
    })
    write_job(sweep_dir, "5_data.negatives=2,lora.r=8", ["lora.r=8", "data.negatives=2", "model=tiny"], '{"status": "compl')
    return sweep_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return build_report(make_sweep(tmp_path_factory.mktemp("report") / "sweep"))


def table_rows(markdown: str) -> tuple[list[str], list[list[str]]]:
    """The header and the body rows of the first Markdown table."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    split = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]
    return split[0], split[2:]


def grid_row(rows: list[list[str]], r: str, negatives: str) -> list[str]:
    return next(row for row in rows if row[:2] == [r, negatives])


# --- CSV ------------------------------------------------------------------------------------------------

def test_csv_has_one_row_per_job_with_overrides_metrics_and_costs(report):
    frame = pd.read_csv(report.csv_path)
    assert len(frame) == 6
    assert list(frame.columns[:6]) == ["job", "status", "error", "lora.r", "data.negatives", "model"]
    for column in ["scifact/mrr@10", "cranfield/ndcg@10", "average/ndcg@10", "scifact/doc_nnz_mean", "average/doc_nnz_mean",
                   "params.trainable", "params.total", "params.adapter_bytes", "timing.train_s", "timing.encode_s",
                   "timing.index_s", "timing.search_s", "memory.peak_rss_mb"]:
        assert column in frame.columns, column
    best = frame[(frame["lora.r"] == 4) & (frame["data.negatives"] == 2)].iloc[0]
    assert best["job"] == "3_data.negatives=2,lora.r=4"
    assert best["scifact/ndcg@10"] == pytest.approx(0.655)
    assert best["average/ndcg@10"] == pytest.approx(0.52)
    assert best["params.trainable"] == 36864 and best["timing.train_s"] == 120.0
    statuses = dict(zip(frame["lora.r"], frame["status"]))
    assert statuses[16] == "failed" and statuses[8] == "unreadable"
    failed = frame[frame["lora.r"] == 16].iloc[0]
    assert failed["error"].startswith("ValueError: rank 16") and pd.isna(failed["scifact/ndcg@10"])
    assert "JSONDecodeError" in frame[frame["lora.r"] == 8].iloc[0]["error"]


def test_rows_are_sorted_numerically_by_the_swept_keys(report):
    frame = pd.read_csv(report.csv_path)
    assert list(zip(frame["lora.r"], frame["data.negatives"])) == [(1, 1), (1, 2), (4, 1), (4, 2), (8, 2), (16, 1)]
    assert sorted(["16", "1", "4", "true"], key=grid_sort_key) == ["1", "4", "16", "true"]


def test_swept_and_fixed_keys_come_from_the_jobs_and_multirun_yaml(report):
    assert report.sweep.swept == ["lora.r", "data.negatives"]
    assert report.sweep.fixed == {"model": "tiny"}
    assert report.sweep.datasets == ["scifact", "cranfield"]


# --- Markdown -----------------------------------------------------------------------------------------------

def test_report_md_has_title_fixed_keys_references_and_grid_rows(report):
    markdown = report.markdown_path.read_text()
    assert markdown.startswith("# Sweep report: rank_x_negatives\n\n> How do LoRA rank and negatives interact?")
    assert "fixed: `model=tiny`" in markdown
    header, rows = table_rows(markdown)
    assert header[:2] == ["lora.r", "data.negatives"]
    assert header[2:5] == ["scifact MRR@10", "scifact R@1000", "scifact nDCG@10"]
    assert header[-4:] == ["doc nnz", "trainable params", "train s", "status"]
    assert "avg nDCG@10" in header
    assert [row[0] for row in rows[:2]] == ["BM25 (reference)", "zero-shot (reference)"]
    assert [row[:2] for row in rows[2:]] == [["1", "1"], ["1", "2"], ["4", "1"], ["4", "2"], ["8", "2"], ["16", "1"]]
    zero_shot = rows[1]
    assert zero_shot[header.index("scifact nDCG@10")] == "0.500" and zero_shot[header.index("doc nnz")] == "200.0"


def test_best_value_of_each_quality_column_is_bold_and_references_never_are(report):
    header, rows = table_rows(report.markdown)
    scifact_ndcg, cranfield_mrr = header.index("scifact nDCG@10"), header.index("cranfield MRR@10")
    assert grid_row(rows, "4", "2")[scifact_ndcg] == "**0.655**"
    assert grid_row(rows, "1", "2")[scifact_ndcg] == "0.640"
    assert rows[0][scifact_ndcg] == "0.665"  # BM25 is higher, but a reference
    assert grid_row(rows, "1", "1")[cranfield_mrr] == "**0.430**"
    assert grid_row(rows, "4", "1")[header.index("scifact R@1000")] == "**0.970**"
    assert grid_row(rows, "4", "2")[header.index("avg nDCG@10")] == "**0.520**"
    assert grid_row(rows, "4", "2")[header.index("trainable params")] == "36,864"  # cost: never bold
    bold_cells = [cell for row in rows for cell in row if cell.startswith("**")]
    assert len(bold_cells) == 7  # one per quality column: 3 metrics x 2 datasets + the average


def test_nothing_is_bold_when_all_grid_rows_tie(tmp_path):
    for r in (1, 4):
        write_job(tmp_path, f"lora.r={r}", [f"lora.r={r}"], completed_results(1, 1, [f"lora.r={r}"], "csv"))
    sweep = load_sweep(tmp_path)
    assert "**" not in study_table(sweep, run_study(sweep))


def test_failed_and_unreadable_jobs_show_status_and_first_error_line(report):
    header, rows = table_rows(report.markdown)
    failed = grid_row(rows, "16", "1")
    assert failed[-1] == "failed (4_data.negatives=1,lora.r=16): ValueError: rank 16 exceeds the hidden size"
    assert failed[header.index("scifact nDCG@10")] == "-"
    assert grid_row(rows, "8", "2")[-1].startswith("unreadable (5_data.negatives=2,lora.r=8): JSONDecodeError")


# --- plots ------------------------------------------------------------------------------------------------

def test_plots_are_written_as_png_files(report):
    names = {path.name for path in report.plot_paths}
    expected = {
        f"plot_{metric}_vs_{axis}.png" for metric in ("ndcg@10", "mrr@10", "recall@1000") for axis in ("lora.r", "data.negatives")
    }
    assert names == expected | {"plot_quality_vs_cost.png"}
    for path in report.plot_paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        assert f"]({path.name})" in report.markdown


def test_pareto_front_keeps_the_undominated_points_ordered_by_cost():
    quality = [0.50, 0.60, 0.55, 0.70, 0.40, 0.60, None, 0.70]
    cost = [10, 20, 30, 40, 5, 25, 1, 40]
    # 2 is beaten by 1 (better and cheaper), 5 by 1 (same quality, cheaper); 6 has no quality; 3 and 7 tie.
    assert pareto_front(quality, cost) == [4, 0, 1, 3, 7]
    assert pareto_front([], []) == []


def test_axis_scale_follows_the_grid():
    assert axis_kind(["1", "4", "16", "64"]) == "log2"
    assert axis_kind(["2e-5", "1e-4", "2e-3"]) == "log10"
    assert axis_kind(["50", "150", "450"]) == "linear"
    assert axis_kind(["false", "true"]) == "categorical"


# --- partial files ------------------------------------------------------------------------------------------

def test_partial_missing_and_odd_results_become_rows_not_errors(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    write_job(sweep_dir, "0_lora.r=1", ["lora.r=1"], {"status": "running", "overrides": ["lora.r=1"]})
    write_job(sweep_dir, "1_lora.r=2", ["lora.r=2"], None)
    write_job(sweep_dir, "2_lora.r=4", ["lora.r=4"], "[1, 2]")
    write_job(sweep_dir, "3_lora.r=8", ["lora.r=8"], {
        "status": "completed", "metrics": {"scifact": {"ndcg@10": 0.5, "mrr@10": "n/a"}, "broken": 3},
        "params": {"trainable": None}, "references": {"bm25": "oops"},
    })
    (sweep_dir / "4_nested" / "deeper").mkdir(parents=True)
    (sweep_dir / "4_nested" / "deeper" / "results.json").write_text("{}")  # two levels down: not a job
    sweep = load_sweep(sweep_dir)
    assert list(zip(sweep.frame["lora.r"], sweep.frame["status"])) == [
        ("1", "running"), ("2", "not started"), ("4", "unreadable"), ("8", "completed"),
    ]
    assert sweep.frame.loc[3, "scifact/ndcg@10"] == 0.5 and sweep.references.empty
    report = build_report(sweep_dir)
    assert "| 8 | - | - | 0.500 |" in report.markdown  # a single competitor is not marked best


# --- entry points -----------------------------------------------------------------------------------------------

def test_cli_prints_the_table_and_the_paths(tmp_path):
    # One axis and one dataset: the CLI's wiring is under test here, the report's content above.
    sweep_dir = tmp_path / "sweep"
    for number, r in enumerate((4, 1)):
        results = completed_results(r, 2, [f"lora.r={r}"], "csv")
        results["metrics"] = {"scifact": results["metrics"]["scifact"]}
        write_job(sweep_dir, f"{number}_lora.r={r}", [f"lora.r={r}"], results)
    command = [sys.executable, "-m", "splade_peft.report", str(sweep_dir)]
    found = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert "| BM25 (reference) |" in found.stdout and "| 4 | **0.610** |" in found.stdout
    assert str(sweep_dir / "report.md") in found.stdout and str(sweep_dir / "plot_quality_vs_cost.png") in found.stdout
    assert (sweep_dir / "sweep_results.csv").exists()


def test_cli_rejects_a_missing_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report_cli.main([str(tmp_path / "nope")])
    assert exit_info.value.code == 2 and "is not a folder" in capsys.readouterr().err


# The report's W&B run itself (a real offline run, read back) is tested in tests/cli/test_tracking.py.


def test_wandb_is_skipped_when_the_jobs_did_not_log_to_it(report):
    assert log_report_to_wandb(report) is False


# --- notebook ---------------------------------------------------------------------------------------------------

def venv_kernel(tmp_path: Path, monkeypatch) -> str:
    """A kernelspec for this very interpreter, found first: a `python3` kernelspec elsewhere on the
    machine may point at another Python without this package."""
    from ipykernel.kernelspec import install

    name = "splade-peft-test"
    install(kernel_name=name, prefix=str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return name


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "SWEEP_DIR" in notebook.cells[0].source


def test_notebook_runs_against_a_synthetic_sweep(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    sweep_dir = make_sweep(tmp_path / "sweep")
    monkeypatch.setenv("SWEEP_DIR", str(sweep_dir))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, kernel_name=venv_kernel(tmp_path, monkeypatch), timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("lora.r" in output.get("data", {}).get("text/markdown", "") for output in outputs)
    assert any("text/html" in output.get("data", {}) for output in outputs)  # the DataFrame
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 7
    assert not (sweep_dir / "report.md").exists()  # the notebook reads; it writes nothing into the sweep


def test_a_jobs_overrides_are_read_by_hydras_parser_with_values_as_typed():
    overrides = parse_overrides(["+sweep=rank", "++optim.lr=1e-4", "~lora.dropout", "data@train=scifact",
                                 "lora.target_modules=[query,value]", "bad=a=b"])
    assert overrides == {"sweep": "rank", "optim.lr": "1e-4", "lora.dropout": "(deleted)", "data": "scifact",
                         "lora.target_modules": "[query,value]"}  # a line Hydra refuses was never applied
    assert parse_overrides("lora.r=4") is None  # not a list: the overrides are unknown
