"""The table a run ends with: BM25 vs the starting checkpoint (zero-shot) vs the trained model, per dataset;
the trained model on the split it was chosen on; what a mined negatives file's filter removed; and a warning line for each test-split choice the job was
allowed (eval.allow_test_selection)."""

from collections.abc import Mapping

from splade_peft.labels import REFERENCE_LABELS, TRAINED
from splade_peft.results import Evaluation, JobResult, mapping

SUMMARY_COLUMNS = ["dataset", "system", "nDCG@10", "MRR@10", "R@100", "R@1000", "doc nnz", "query nnz"]
METRIC_KEYS = ["ndcg@10", "mrr@10", "recall@100", "recall@1000"]
SELECTION_ROW = "chosen on"  # the dataset column of the dev figure's row
# training.keep_best: the dev figure is the maximum over the validated checkpoints on the split that chose it,
# so it overstates what the kept checkpoint would score on fresh dev queries.
KEPT_BEST = "kept (max)"
KEPT_NOTE = (f"{KEPT_BEST}: the best of the validated checkpoints on the split that chose it (optimistic; "
             "the rows above were not chosen on)")


def row(dataset: str, system: str, evaluation: Evaluation) -> list:
    metrics, sparsity = evaluation.on(dataset)
    return [dataset, system] + [metrics.get(k) for k in METRIC_KEYS] + [sparsity.get("doc_nnz_mean"), sparsity.get("query_nnz_mean")]


def summary_rows(result: JobResult) -> list[list]:
    references = result.reference_rows
    systems = {label: references[system] for system, label in REFERENCE_LABELS.items() if system in references}
    systems[TRAINED] = result.trained
    rows = [row(dataset, label, evaluation) for dataset in result.datasets
            for label, evaluation in systems.items() if dataset in evaluation.metrics]
    for suite in result.suite_members:
        for label, evaluation in systems.items():
            if average := result.suite_average(evaluation, suite):
                rows.append(row(f"{suite} avg", label, Evaluation({f"{suite} avg": average})))
    if result.dev_at_start:
        rows.append(row(SELECTION_ROW, "at start", Evaluation({SELECTION_ROW: result.dev_at_start})))
    if result.dev:
        label = KEPT_BEST if mapping(result.training).get("kept") else TRAINED
        rows.append(row(SELECTION_ROW, label, Evaluation({SELECTION_ROW: result.dev})))
    return rows


def format_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:.1f}"
    return str(value)


def format_table(result: JobResult) -> str:
    cells = [SUMMARY_COLUMNS] + [[format_cell(v) for v in r] for r in summary_rows(result)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(SUMMARY_COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [verdict_line(suite, entry["verdict"]) for suite, entry in mapping(result.suites).items()
              if isinstance(entry, dict) and isinstance(entry.get("verdict"), dict)]
    if result.dev and mapping(result.training).get("kept"):
        lines.append(KEPT_NOTE)
    if result.negatives_mining:
        lines.append(mining_line(result.negatives_mining))
    lines += [f"warning: {line}" for line in result.warnings or ()]
    return "\n".join(lines)


def mining_line(mining: dict) -> str:
    """What the job's mined negatives file says of its mining (mine.py's stats)."""
    removed, negative_filter = mapping(mining.get("removed_per_query")), mapping(mining.get("filter"))
    line = f"negatives: {mining.get('file')}, mined by {mining.get('retriever')}"
    if negative_filter.get("method", "none") != "none":
        line += (f"; {negative_filter['method']} {negative_filter.get('value')} removed {removed.get('mean', 0):.1f} "
                 f"candidates per query (max {removed.get('max')}), {mining.get('queries_without_negatives')} queries left without negatives")
    return line


def verdict_line(suite: str, verdict: Mapping) -> str:
    """One line: `<suite>: trained vs zero-shot ndcg@10 on 13 datasets: 4 significantly better, 2 significantly
    worse; at margin 0.01: 7 non-inferior, 1 inferior, 5 inconclusive (...)` (a record written before the
    inferior / inconclusive counts shows the non-inferior one alone)."""
    counts = [f"{verdict[key]} {key.replace('_', '-')}" for key in ("non_inferior", "inferior", "inconclusive") if key in verdict]
    return (f"{suite}: trained vs zero-shot {verdict['metric']} on {verdict['datasets']} datasets: "
            f"{verdict['improved']} significantly better, {verdict['worse']} significantly worse; "
            f"at margin {verdict['margin']:g}: {', '.join(counts)} ({verdict['test']})")
