"""The wall time of one suite evaluation job: `python -m splade_peft lora=frozen eval=local`, once with
`index=lucene` (the pipeline's reference path: a Lucene index and a JVM per dataset) and once with
`index=exact` (the in-memory searcher), each in its own process with an empty cache (the BM25 and zero-shot
reference rows are computed, not read back), so the ratio is what the engine choice saves on a whole job.

What a job cost before the suites existed (the two datasets as `+eval.datasets` entries, the trained row of a
frozen model encoded a second time) cannot be run from this commit: RESULTS.md#suites gives that comparison.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = "local"
ENGINES = ("lucene", "exact")


def suite_section(checkpoints: str | Path, overrides: list[str]) -> dict:
    """{"suite": per engine its wall seconds, the job's stage timings and suite average; exact / lucene}."""
    rows = {engine: timed_job(engine, Path(checkpoints).resolve(), overrides) for engine in ENGINES}
    return {"suite": {"suite": SUITE, "overrides": overrides, "engines": rows,
                      "exact_vs_lucene_wall": rows["exact"]["wall_s"] / rows["lucene"]["wall_s"]}}


def timed_job(engine: str, checkpoints: Path, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"splade-bench-suite-{engine}-") as scratch:
        run_dir = Path(scratch) / "run"
        command = [sys.executable, "-m", "splade_peft", "lora=frozen", f"eval={SUITE}", f"index={engine}",
                   "logger=none", f"paths.cache={scratch}/cache", f"paths.checkpoints={checkpoints}",
                   f"hydra.run.dir={run_dir}", *overrides]
        print(f"[bench suite]   index={engine}", flush=True)
        started = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True)
        wall_s = time.perf_counter() - started
        if finished.returncode:
            raise RuntimeError(f"the index={engine} suite job failed ({' '.join(command)}):\n{finished.stderr[-2000:]}")
        results = json.loads((run_dir / "results.json").read_text())
    return {"wall_s": wall_s, "timing": results["timing"],
            "suite_ndcg@10": results["suites"][SUITE]["metrics"]["ndcg@10"],
            "datasets": results["suites"][SUITE]["datasets"]}


def suite_markdown(results: dict) -> list[str]:
    suite = results["suite"]
    lines = ["## Suite evaluation job", "",
             f"`python -m splade_peft lora=frozen eval={suite['suite']} index=<engine>` "
             f"{' '.join(suite['overrides'])}, cold cache, its own process; datasets: "
             f"{', '.join(suite['engines']['exact']['datasets'])}.", "",
             "| engine | wall s | encode s | index s | search s | suite nDCG@10 |", "|---|---|---|---|---|---|"]
    for engine, row in suite["engines"].items():
        timing = row["timing"]
        lines.append(f"| {engine} | {row['wall_s']:.1f} | {timing.get('encode_s', float('nan')):.1f} | "
                     f"{timing.get('index_s', float('nan')):.1f} | {timing.get('search_s', float('nan')):.1f} | "
                     f"{row['suite_ndcg@10']:.4f} |")
    return lines + ["", f"index=exact takes {suite['exact_vs_lucene_wall']:.2f} of index=lucene's wall time.", ""]
