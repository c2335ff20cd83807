"""The README.md an exported encoder ships with: a Hugging Face model card, i.e. YAML front matter the hub reads
(base model, library, tags, license, datasets, model-index with the measured figures) followed by prose and
tables saying what the model is, how it was trained and how it scored.

Everything comes from what the job recorded: results.json through JobResult (its config is already redacted),
the adapter's splade_peft.json, and what the base checkpoint says about itself (config.json, its README's front
matter). `model_card` and the functions it calls are pure; the readers at the end gather their inputs, and
`write_model_card` is what the export calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from splade_peft.model.adapters import METADATA_FILE
from splade_peft.model.config import ADAPTER_METHODS, TARGETING
from splade_peft.records import redact
from splade_peft.results import AVERAGE, COMPLETED, RESULTS_FILE, JobResult, mapping, numbers
from splade_peft.summary import format_cell

CARD_FILE = "README.md"
METRICS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@100": "R@100", "recall@1000": "R@1000"}
SPARSITY = {"doc_nnz_mean": "doc nnz (mean)", "doc_nnz_median": "doc nnz (median)",
            "query_nnz_mean": "query nnz (mean)", "query_nnz_median": "query nnz (median)", "flops": "FLOPS"}
REFERENCE_LABELS = {"bm25": "BM25", "zero_shot": "zero-shot base", "fusion": "BM25 + zero-shot"}
ENCODERS = {
    "splade": "SPLADE: one masked LM encodes queries and documents; a text's vector holds log(1 + ReLU(logit)) "
              "per vocabulary term, {pooling}-pooled over its tokens",
    "splade_separate": "SPLADE with two masked LMs, one for queries and one for documents (a query/document "
                       "Router), each {pooling}-pooled",
    "inference_free": "inference-free SPLADE: documents through the masked LM ({pooling}-pooled), queries through "
                      "a learned weight per vocabulary token, so no model runs at query time",
}
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class CheckpointFacts:
    """What the base checkpoint says about itself; empty where it says nothing."""

    origin: str | None = None  # the hub id a local folder was saved from (config.json `_name_or_path`)
    license: str | None = None
    model_type: str | None = None
    architecture: str | None = None


@dataclass(frozen=True)
class Suite:
    datasets: list[str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class CardInputs:
    result: JobResult  # an empty record (status unknown) when the export found no results.json
    model_name: str  # the exported folder's name: the model-index entry and the usage snippet name it
    encoder: str = "splade"
    adapter: dict = field(default_factory=dict)  # splade_peft.json: method, base_model, quantization, train_head
    checkpoint: CheckpointFacts = CheckpointFacts()
    suites: dict[str, Suite] = field(default_factory=dict)
    sentence_transformers: bool = True  # False: the export wrote only the merged masked LM

    @property
    def config(self) -> dict:
        return mapping(self.result.config)

    def section(self, name: str) -> dict:
        return mapping(self.config.get(name))


# --- facts the card states, each from one place ---------------------------------------------------------------

def suites_of(result: JobResult) -> dict[str, Suite]:
    """results.json `suites` (absent in older results)."""
    suites = {}
    for name, entry in mapping(result.suites).items():
        datasets = mapping(entry).get("datasets")
        suites[str(name)] = Suite([str(d) for d in datasets] if isinstance(datasets, list) else [],
                                  numbers(mapping(entry).get("metrics")))
    return suites


def base_checkpoint(inputs: CardInputs) -> str | None:
    """The hub id the base came from where known, else the path the job named; None for a random init."""
    model = inputs.section("model")
    if model.get("random_init"):
        return None
    return inputs.checkpoint.origin or model.get("name_or_path") or inputs.adapter.get("base_model")


def adapter_method(inputs: CardInputs) -> str:
    return str(inputs.section("lora").get("method") or inputs.adapter.get("method") or "lora")


def is_peft(method: str) -> bool:
    # An unregistered method (a plugin the export did not import) is taken for an adapter.
    return method not in ADAPTER_METHODS or bool(ADAPTER_METHODS.get(method).peft)


def adapter_settings(inputs: CardInputs) -> dict[str, Any]:
    """The lora.* keys the method reads (its registered `reads`), plus where it was applied; a null one (the
    family's default targets, no quantisation) says nothing a reader needs."""
    lora, method = inputs.section("lora"), adapter_method(inputs)
    reads = ADAPTER_METHODS.get(method).reads if method in ADAPTER_METHODS else ("r", "alpha")
    return {key: lora[key] for key in (*reads, *TARGETING) if lora.get(key) is not None}


def training_datasets(inputs: CardInputs) -> list[str]:
    data = inputs.section("data")
    if not data or not mapping(inputs.result.data).get("train"):
        return []  # an evaluation-only job trained on nothing
    mixture = mapping(mapping(data.get("mixture")).get("datasets"))
    entries = [mapping(entry) for entry in mixture.values()] or [data]
    return [str(entry.get("hub_id") or entry.get("name")) for entry in entries if entry.get("hub_id") or entry.get("name")]


def eval_spec(inputs: CardInputs, dataset: str) -> dict:
    """eval.datasets' entry for a dataset as results.json names it (the entry's `name`, else its key)."""
    for key, entry in mapping(inputs.section("eval").get("datasets")).items():
        if mapping(entry).get("name", key) == dataset:
            return mapping(entry)
    return {}


def eval_split(inputs: CardInputs, dataset: str) -> str | None:
    described = mapping(mapping(mapping(inputs.result.data).get("eval")).get(dataset))
    return described.get("split") or eval_spec(inputs, dataset).get("split")


# --- front matter -----------------------------------------------------------------------------------------------

def ordered(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics, nDCG@10 first (the figure a reader looks for), then the others as recorded."""
    values = numbers(metrics)
    return {key: values[key] for key in [*(k for k in METRICS if k in values), *(k for k in values if k not in METRICS)]}


def metric_entries(metrics: Mapping[str, float]) -> list[dict]:
    return [{"type": key.replace("@", "_at_"), "value": value, "name": METRICS.get(key, key)}
            for key, value in ordered(metrics).items()]


def model_index_result(dataset: dict, metrics: Mapping[str, float]) -> dict:
    return {"task": {"type": "retrieval", "name": "Retrieval"}, "dataset": dataset, "metrics": metric_entries(metrics)}


def model_index(inputs: CardInputs) -> list[dict]:
    result, entries = inputs.result, []
    for name in result.datasets:
        metrics, _ = result.trained.on(name)
        if metrics:
            dataset = {"name": name, "type": str(eval_spec(inputs, name).get("hub_id") or name)}
            if split := eval_split(inputs, name):
                dataset["split"] = str(split)
            entries.append(model_index_result(dataset, metrics))
    for name, suite in inputs.suites.items():
        if suite.metrics:
            label = f"{name} (average over {len(suite.datasets)} datasets)" if suite.datasets else f"{name} (average)"
            entries.append(model_index_result({"name": label, "type": name}, suite.metrics))
    return [{"name": inputs.model_name, "results": entries}] if entries else []


def front_matter(inputs: CardInputs) -> dict:
    method = adapter_method(inputs)
    meta: dict[str, Any] = {}
    if base := base_checkpoint(inputs):
        meta["base_model"] = str(base)
    meta["library_name"] = "sentence-transformers" if inputs.sentence_transformers else "transformers"
    meta["pipeline_tag"] = "feature-extraction"
    tags = ["sentence-transformers", "sparse-encoder", "splade", *(["peft"] if is_peft(method) else []), method]
    meta["tags"] = list(dict.fromkeys([*tags, inputs.encoder.replace("_", "-")]))
    if inputs.checkpoint.license:
        meta["license"] = inputs.checkpoint.license
    if datasets := training_datasets(inputs):
        meta["datasets"] = datasets
    if index := model_index(inputs):
        meta["model-index"] = index
    return meta


# --- prose and tables ------------------------------------------------------------------------------------------

def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(format_cell(cell) if not isinstance(cell, str) else cell for cell in row) + " |"
                    for row in rows]


def describe_base(inputs: CardInputs) -> str:
    model = inputs.section("model")
    if model.get("random_init"):
        return f"none: `{model.get('name', 'the model')}` is randomly initialised (model.random_init), for tests"
    base, local = base_checkpoint(inputs), inputs.adapter.get("base_model") or model.get("name_or_path")
    copy = f" (loaded from the local folder `{local}`)" if local and str(local) != str(base) else ""
    return f"`{base}`{copy}"


def describe_adapter(inputs: CardInputs) -> str:
    method = adapter_method(inputs)
    if method == "full":
        return "full fine-tuning (every weight trained; no adapter)"
    settings = ", ".join(f"{key}={value}" for key, value in adapter_settings(inputs).items())
    quantized = inputs.adapter.get("quantization")
    merged = f"; trained on a {quantized} base and merged into the dequantised weights" if quantized else \
        "; merged into the base weights at export"
    return f"{method} ({settings}){merged}" if settings else f"{method}{merged}"


def describe_parameters(params: Mapping) -> str | None:
    counts = numbers(params)
    if "trainable" not in counts or not counts.get("total"):
        return None
    share = 100 * counts["trainable"] / counts["total"]
    size = f"; adapter file {counts['adapter_bytes'] / 1e6:.2f} MB" if counts.get("adapter_bytes") else ""
    return f"{int(counts['trainable']):,} trainable of {int(counts['total']):,} ({share:.2f}%){size}"


def describe_lengths(inputs: CardInputs) -> str | None:
    model = inputs.section("model")
    queries, documents = model.get("query_max_length"), model.get("doc_max_length")
    if not (queries or documents):
        return None
    # sentence-transformers keeps one maximum length per LM: with one LM, queries are cut where documents are.
    shared = " (one LM: the exported model cuts queries at the documents' length)" if inputs.encoder == "splade" else ""
    return f"queries {queries}, documents {documents} tokens{shared}"


def model_section(inputs: CardInputs) -> list[str]:
    checkpoint = inputs.checkpoint
    family = " / ".join(filter(None, [checkpoint.model_type, checkpoint.architecture])) or "not recorded"
    pooling = inputs.section("encoder").get("pooling", "max")
    lines = [
        "## Model", "",
        f"- Base checkpoint: {describe_base(inputs)}",
        f"- Encoder family: {family}",
        f"- Encoder: `{inputs.encoder}`, " + ENCODERS.get(inputs.encoder, inputs.encoder).format(pooling=pooling),
        f"- Adapter: {describe_adapter(inputs)}",
    ]
    if parameters := describe_parameters(mapping(inputs.result.params)):
        lines.append(f"- Parameters: {parameters}")
    if lengths := describe_lengths(inputs):
        lines.append(f"- Maximum lengths: {lengths}")
    lines.append(f"- License: {inputs.checkpoint.license or 'unknown (the base checkpoint declares none)'}")
    return lines + [""]


def recipe_lines(inputs: CardInputs) -> list[str]:
    loss, optim, trainer = inputs.section("loss"), inputs.section("optim"), inputs.section("trainer")
    training, data = mapping(inputs.result.training), inputs.section("data")
    weights = ", ".join(f"{name} {value}" for name, value in numbers(loss.get("weights")).items() if value)
    lines = []
    if loss:
        lines.append(f"- Loss: `{loss.get('name')}` ({weights or 'no weights recorded'}), temperature "
                     f"{loss.get('temperature')}, in-batch negatives {loss.get('in_batch')}; FLOPS on documents "
                     f"λ_d={loss.get('lambda_d')}, L1 on queries λ_q={loss.get('lambda_q')}")
    if optim:
        lines.append(f"- Optimiser: lr {optim.get('lr')}, weight decay {optim.get('weight_decay')}, "
                     f"{optim.get('warmup_steps')} warm-up steps")
    if trainer or training:
        kept = mapping(training.get("kept")).get("step")
        lines.append(f"- Steps: {training.get('steps', 'not recorded')} of trainer.max_steps={trainer.get('max_steps')}"
                     f" (batch {data.get('batch_size')}, precision {trainer.get('precision')})"
                     + (f"; the checkpoint kept is step {kept}" if kept is not None else ""))
    return lines


def training_section(inputs: CardInputs) -> list[str]:
    data, result = inputs.section("data"), inputs.result
    lines = ["## Training", ""]
    if not result.config:
        return lines + ["No results.json was found beside the adapter: the training recipe is not recorded.", ""]
    train = mapping(mapping(result.data).get("train"))
    if train:
        names = ", ".join(f"`{name}`" for name in training_datasets(inputs))
        lines.append(f"- Data: {names} (source {data.get('source')}, split {train.get('split')}: {train.get('queries')} "
                     f"queries, {train.get('documents')} documents; {mapping(result.training).get('training_pairs', '?')} "
                     f"training pairs; negatives per query: {data.get('negatives')}, from {data.get('negatives_source')})")
    else:
        lines.append("- Data: none -- an evaluation-only job (nothing trained)")
    lines += recipe_lines(inputs)
    if result.overrides is not None:
        lines += ["", "The job's command line:", "", "```bash",
                  " ".join(["python -m splade_peft", *result.overrides]), "```"]
    return lines + [""]


def metric_row(label: str, system: str, split: str, metrics: Mapping, sparsity: Mapping) -> list:
    return [label, split, system, *(metrics.get(key) for key in METRICS),
            sparsity.get("doc_nnz_mean"), sparsity.get("query_nnz_mean")]


def metric_rows(inputs: CardInputs) -> list[list]:
    result, references, rows = inputs.result, inputs.result.reference_rows, []
    for name in result.datasets:
        split = str(eval_split(inputs, name) or "")
        for system, evaluation in references.items():
            if name in evaluation.metrics:
                rows.append(metric_row(name, REFERENCE_LABELS.get(system, system), split, *evaluation.on(name)))
        if name in result.trained.metrics:
            rows.append(metric_row(name, "**this model**", split, *result.trained.on(name)))
    for suite_name, suite in inputs.suites.items():
        for system, evaluation in references.items():
            if reference := result.suite_average(evaluation, suite_name):
                rows.append(metric_row(f"{suite_name} (suite)", REFERENCE_LABELS.get(system, system), "", reference, {}))
        rows.append(metric_row(f"{suite_name} (suite)", "**this model**", "", suite.metrics, {}))
    if len(result.datasets) > 1 and (average := numbers(mapping(result.metrics).get(AVERAGE))):
        rows.append(metric_row("average", "**this model**", "", average, {}))
    return rows


def sparsity_lines(result: JobResult) -> list[str]:
    per_dataset = mapping(result.sparsity)
    rows = [[name, *(numbers(per_dataset[name]).get(key) for key in SPARSITY)]
            for name in result.datasets if mapping(per_dataset.get(name))]
    return ["### Sparsity", "", *table(["dataset", *SPARSITY.values()], rows), ""] if rows else []


def evaluation_section(inputs: CardInputs) -> list[str]:
    result = inputs.result
    lines = ["## Evaluation", ""]
    if result.status != COMPLETED:
        lines += [f"The job's results.json has status `{result.status}`: the figures below are what it recorded.", ""]
    rows = metric_rows(inputs)
    if not rows:
        return lines + ["No evaluation was recorded.", ""]
    lines += table(["dataset", "split", "system", *METRICS.values(), "doc nnz", "query nnz"], rows)
    suites = " Suite rows are macro averages over the suite's datasets." if inputs.suites else ""
    lines += ["", f"nnz: mean non-zero terms per vector.{suites}", ""]
    if dev := ordered(mapping(result.dev)):
        figures = ", ".join(f"{METRICS.get(key, key)} {format_cell(value)}" for key, value in dev.items())
        lines += [f"Chosen on the dev split: {figures}", ""]
    lines += sparsity_lines(result)
    lines += [f"warning: {line}" for line in result.warnings or ()]
    return lines + ([""] if result.warnings else [])


def reproducibility_section(inputs: CardInputs) -> list[str]:
    result = inputs.result
    lines = ["## Reproducibility", "",
             f"- Config fingerprint: `{result.config_fingerprint or 'not recorded'}` (a rerun with the same resolved "
             "config in the same folder has the same one)",
             f"- Seed: {result.seed}"]
    versions = mapping(result.versions)
    if versions:
        lines.append("- Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    return lines + [""]


def usage_section(inputs: CardInputs) -> list[str]:
    if not inputs.sentence_transformers:
        return ["## Usage", "", "```python", "import torch",
                "from transformers import AutoModelForMaskedLM, AutoTokenizer", "",
                f'tokenizer = AutoTokenizer.from_pretrained("{inputs.model_name}")',
                f'model = AutoModelForMaskedLM.from_pretrained("{inputs.model_name}")',
                'batch = tokenizer(["what is splade?"], return_tensors="pt")',
                "logits = model(**batch).logits",
                'weights = torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)',
                "vector = weights.max(dim=1).values  # one weight per vocabulary term", "```", ""]
    return ["## Usage", "", "```python", "from sentence_transformers import SparseEncoder", "",
            f'model = SparseEncoder("{inputs.model_name}")  # this folder, or its hub id once uploaded',
            'queries = model.encode_query(["what is splade?"])',
            'documents = model.encode_document(["SPLADE is a learned sparse retrieval model."])',
            "scores = model.similarity(queries, documents)  # dot product", "```", ""]


def model_card(inputs: CardInputs) -> str:
    meta = yaml.safe_dump(front_matter(inputs), sort_keys=False, allow_unicode=True)
    base = base_checkpoint(inputs) or "a randomly initialised model"
    intro = (f"A learned-sparse retrieval encoder ({inputs.encoder}) fine-tuned from {base} with "
             f"{adapter_method(inputs)} by splade_peft, exported for sentence-transformers' `SparseEncoder`.")
    body = [f"# {inputs.model_name}", "", intro, "", *model_section(inputs), *training_section(inputs),
            *evaluation_section(inputs), *reproducibility_section(inputs), *usage_section(inputs)]
    return f"---\n{meta}---\n\n" + "\n".join(body)


# --- gathering the inputs: the files beside the adapter, the base checkpoint's own ------------------------------

def front_matter_of(readme: Path) -> dict:
    text = readme.read_text(errors="replace") if readme.is_file() else ""
    if not text.startswith("---"):
        return {}
    try:
        return mapping(yaml.safe_load(text.split("---", 2)[1]))
    except yaml.YAMLError:
        return {}


def checkpoint_file(name_or_path: str, filename: str) -> Path | None:
    """A file of a local checkpoint folder, or of a hub checkpoint already in the local cache (never downloaded)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path) / filename
    if HUB_ID.fullmatch(name_or_path):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, filename)
        return Path(cached) if isinstance(cached, str) else None
    return None


def checkpoint_facts(name_or_path: str | None) -> CheckpointFacts:
    if not name_or_path:
        return CheckpointFacts()
    config_path, readme = (checkpoint_file(str(name_or_path), name) for name in ("config.json", CARD_FILE))
    try:
        config = mapping(json.loads(config_path.read_text())) if config_path and config_path.is_file() else {}
    except ValueError:
        config = {}
    origin = str(config.get("_name_or_path") or "")
    card = front_matter_of(readme) if readme else {}
    architectures = config.get("architectures") if isinstance(config.get("architectures"), list) else []
    return CheckpointFacts(
        origin=origin if HUB_ID.fullmatch(origin) and not Path(origin).exists() else None,
        license=str(card.get("license") or config.get("license") or "") or None,
        model_type=config.get("model_type"), architecture=str(architectures[0]) if architectures else None,
    )


def job_record(run_dir: Path) -> JobResult:
    """results.json; the saved Hydra config, redacted, stands in for the config when results.json is missing
    or lacks it."""
    try:
        payload = mapping(json.loads((run_dir / RESULTS_FILE).read_text()))
    except (OSError, ValueError):
        payload = {}
    result = JobResult.from_payload(payload)
    saved = run_dir / ".hydra" / "config.yaml"
    if not result.config and saved.exists():
        from omegaconf import OmegaConf

        try:
            config = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
        except Exception:  # noqa: BLE001 -- e.g. a ${hydra:...} interpolation outside a Hydra run: keep it as written
            config = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
        payload = {**payload, "config": redact(config)}
        result = JobResult.from_payload(payload)
    return result


def write_model_card(adapter_folder: Path, out_dir: Path, encoder: str, sentence_transformers: bool = True) -> Path:
    """README.md in `out_dir` (replacing sentence-transformers' blank template), from the run folder the adapter
    is in; an adapter moved out of its run folder gets a card of what its own files say."""
    metadata_path = adapter_folder / METADATA_FILE
    adapter = mapping(json.loads(metadata_path.read_text())) if metadata_path.exists() else {}
    result = job_record(adapter_folder.parent)
    # The path the adapter was trained on is the one the export loaded: read the checkpoint's facts there.
    base = adapter.get("base_model") or mapping(mapping(result.config).get("model")).get("name_or_path")
    inputs = CardInputs(result, Path(out_dir).name, encoder, adapter, checkpoint_facts(base),
                        suites_of(result), sentence_transformers)
    target = Path(out_dir) / CARD_FILE
    target.write_text(model_card(inputs))
    return target
