"""A suite of evaluation datasets (eval=beir13, eval=nanobeir, eval=local: each entry of eval.datasets names
the suite it belongs to) as one result: the macro average of its datasets, each counted once (the notes'
"BEIR avg"), and a verdict of the trained model against its zero-shot self on every member dataset.

The verdict tests each dataset with the sweep report's paired test (randomization by default; its p-value,
interval and bounds come from that one test, splade_peft/sweep/paired.py), Holm over the suite's datasets for
"significantly better / worse", and the standard non-inferiority verdict from the same test's one-sided 95%
bounds: non-inferior when the lower bound is above -margin, inferior when the upper bound is below -margin,
inconclusive otherwise. A suite is where "it does not forget" is claimed, so it is claimed per dataset, with
the noise of each.
"""

from collections.abc import Mapping, Sequence

from splade_peft.results import macro_average
from splade_peft.sweep.paired import ALPHA, compare, holm
from splade_peft.sweep.significance import INCONCLUSIVE, INFERIOR, NON_INFERIOR, verdict as margin_verdict

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
    non-inferior (or shows inferior, or leaves inconclusive) against the zero-shot row, with each dataset's
    difference, adjusted p-value, bounds and verdict."""
    comparisons = {}
    for name in datasets:
        trained = per_query.get(TRAINED, {}).get(name, {}).get(metric)
        control = per_query.get(CONTROL, {}).get(name, {}).get(metric)
        if trained and control and (comparison := compare([{name: trained}], [{name: control}], test)):
            comparisons[name] = comparison
    if not comparisons:
        return None
    adjusted = dict(zip(comparisons, holm([c.p for c in comparisons.values()])))
    per_dataset = {
        name: {"diff": c.diff, "ci_low": c.ci_low, "ci_high": c.ci_high, "p": c.p, "p_adjusted": adjusted[name],
               "lower_bound": c.lower_bound, "upper_bound": c.upper_bound, "verdict": margin_verdict(c, margin)}
        for name, c in comparisons.items()
    }
    significant = {name for name, p in adjusted.items() if p < ALPHA}
    verdicts = [entry["verdict"] for entry in per_dataset.values()]
    return {
        "metric": metric, "margin": margin, "datasets": len(comparisons),
        "test": f"{test}, p Holm over the suite's datasets; 95% intervals and one-sided 95% bounds from the same test",
        "improved": sum(1 for name in significant if comparisons[name].diff > 0),
        "worse": sum(1 for name in significant if comparisons[name].diff < 0),
        "non_inferior": verdicts.count(NON_INFERIOR), "inferior": verdicts.count(INFERIOR),
        "inconclusive": verdicts.count(INCONCLUSIVE),
        "per_dataset": per_dataset,
    }
