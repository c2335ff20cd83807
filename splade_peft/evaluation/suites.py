"""A suite of evaluation datasets (eval=beir13, eval=nanobeir, eval=local: each entry of eval.datasets names
the suite it belongs to) as one result: the macro average of its datasets, each counted once (the notes'
"BEIR avg"), and a verdict of the trained model against its zero-shot self on every member dataset.

The verdict tests each dataset with the sweep report's paired test (randomization by default), Holm over the
suite's datasets, and calls a dataset non-inferior when its one-sided 95% lower bound clears -margin: a suite
is where "it does not forget" is claimed, so it is claimed per dataset, with the noise of each.
"""

from collections.abc import Mapping, Sequence

from splade_peft.evaluation.metrics import macro_average
from splade_peft.sweep.significance import ALPHA, NON_INFERIOR, WORSE, compare, holm

TRAINED, CONTROL = "trained", "zero_shot"


def suite_summaries(members: Mapping[str, Sequence[str]], metrics: Mapping[str, Mapping[str, float]],
                    per_query: Mapping[str, Mapping], metric: str, margin: float, test: str) -> dict:
    """{suite: {"datasets": [...], "metrics": macro average, "verdict": {...}}} for results.json; the verdict
    only where the zero-shot row was evaluated on the suite's datasets."""
    summaries = {}
    for suite, datasets in members.items():
        evaluated = [name for name in datasets if name in metrics]
        summary = {"datasets": evaluated, "metrics": macro_average({name: metrics[name] for name in evaluated})}
        verdict = suite_verdict(evaluated, per_query, metric, margin, test)
        if verdict:
            summary["verdict"] = verdict
        summaries[suite] = summary
    return summaries


def suite_verdict(datasets: Sequence[str], per_query: Mapping[str, Mapping], metric: str, margin: float,
                  test: str) -> dict | None:
    """How many of `datasets` the trained row improves significantly, makes significantly worse, and keeps
    non-inferior, against the zero-shot row, with each dataset's difference, adjusted p-value and verdict."""
    comparisons = {}
    for name in datasets:
        trained = per_query.get(TRAINED, {}).get(name, {}).get(metric)
        control = per_query.get(CONTROL, {}).get(name, {}).get(metric)
        if trained and control and (comparison := compare({name: trained}, {name: control}, test)):
            comparisons[name] = comparison
    if not comparisons:
        return None
    adjusted = dict(zip(comparisons, holm([c.p for c in comparisons.values()])))
    per_dataset = {
        name: {"diff": c.diff, "p_adjusted": adjusted[name], "lower_bound": c.lower_bound, "verdict": c.verdict(margin)}
        for name, c in comparisons.items()
    }
    significant = {name for name, p in adjusted.items() if p < ALPHA}
    return {
        "metric": metric, "test": f"{test}, Holm over the suite's datasets", "margin": margin,
        "datasets": len(comparisons),
        "improved": sum(1 for name in significant if comparisons[name].diff > 0),
        "worse": sum(1 for name in significant if comparisons[name].diff < 0),
        "non_inferior": sum(1 for entry in per_dataset.values() if entry["verdict"] == NON_INFERIOR),
        "worse_than_margin": sum(1 for entry in per_dataset.values() if entry["verdict"] == WORSE),
        "per_dataset": per_dataset,
    }


def verdict_line(suite: str, verdict: Mapping) -> str:
    """One line: `<suite>: trained vs zero-shot on 13 datasets: 4 better, 2 worse (...), 7 non-inferior at 0.01`."""
    return (f"{suite}: trained vs zero-shot {verdict['metric']} on {verdict['datasets']} datasets: "
            f"{verdict['improved']} significantly better, {verdict['worse']} significantly worse, "
            f"{verdict['non_inferior']} non-inferior at margin {verdict['margin']:g} ({verdict['test']})")
