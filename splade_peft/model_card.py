"""The README.md an exported encoder ships with: a Hugging Face model card made with huggingface_hub's card
classes. ModelCardData holds the front matter the hub reads (base model, library, tags, license, datasets, and
a model-index of EvalResults: one entry per evaluation dataset and per suite); model_card.md, a Jinja template
beside this module, holds the prose and tables (recipe, figures beside BM25 and zero-shot, sparsity,
reproducibility, usage).

Everything comes from what the job recorded: results.json as a JobResult (its config already redacted), the
adapter's splade_peft.json, and what the base checkpoint says about itself (config.json, its card's metadata).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData, metadata_load

from splade_peft.labels import REFERENCE_LABELS
from splade_peft.model.adapters import METADATA_FILE
from splade_peft.model.config import ADAPTER_METHODS, TARGETING
from splade_peft.records import redact
from splade_peft.results import AVERAGE, JobResult, numbers
from splade_peft.summary import format_cell

CARD_FILE = "README.md"
TEMPLATE = Path(__file__).with_name("model_card.md")
METRICS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@100": "R@100", "recall@1000": "R@1000"}
SPARSITY = {"doc_nnz_mean": "doc nnz (mean)", "doc_nnz_median": "doc nnz (median)",
            "query_nnz_mean": "query nnz (mean)", "query_nnz_median": "query nnz (median)", "flops": "FLOPS"}
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
class CardInputs:
    result: JobResult  # an empty record (status unknown) when the export found no results.json
    model_name: str  # the exported folder's name: the model-index entry and the usage snippet name it
    encoder: str = "splade"
    adapter: dict = field(default_factory=dict)  # splade_peft.json: method, base_model, quantization, train_head
    checkpoint: CheckpointFacts = CheckpointFacts()
    sentence_transformers: bool = True  # False: the export wrote only the merged masked LM

    def section(self, name: str) -> dict:
        value = (self.result.config or {}).get(name)
        return value if isinstance(value, dict) else {}

    @property
    def base(self) -> str | None:
        """The hub id the base came from where known, else the path the job named; None for a random init."""
        if self.section("model").get("random_init"):
            return None
        return self.checkpoint.origin or self.section("model").get("name_or_path") or self.adapter.get("base_model")

    @property
    def method(self) -> str:
        return str(self.section("lora").get("method") or self.adapter.get("method") or "lora")

    @property
    def training_datasets(self) -> list[str]:
        data = self.section("data")
        if not (self.result.data or {}).get("train"):
            return []  # an evaluation-only job trained on nothing
        entries = list(((data.get("mixture") or {}).get("datasets") or {}).values()) or [data]
        return [str(entry.get("hub_id") or entry["name"]) for entry in entries if entry.get("hub_id") or entry.get("name")]


def ordered(metrics: dict) -> dict[str, float]:
    """The numeric metrics, nDCG@10 first (the figure a reader looks for), then the others as recorded."""
    values = numbers(metrics)
    return {key: values[key] for key in sorted(values, key=lambda key: list(METRICS).index(key) if key in METRICS else len(METRICS))}


def suite_figures(result: JobResult, suite: str) -> dict[str, float]:
    """The trained model's macro average over a suite's datasets, as the job recorded it."""
    return numbers(result.suites[suite].get("metrics"))


def eval_results(inputs: CardInputs) -> list[EvalResult]:
    """The trained model's figures: per evaluation dataset (named by its hub id where it has one), then per suite."""
    result, described = inputs.result, (inputs.result.data or {}).get("eval") or {}
    specs = {entry.get("name", key): entry for key, entry in (inputs.section("eval").get("datasets") or {}).items()}
    entries = [(name, specs.get(name, {}).get("hub_id") or name,
                (described.get(name) or {}).get("split") or specs.get(name, {}).get("split"), result.trained.on(name)[0])
               for name in result.datasets]
    entries += [(f"{suite} (average over {len(members)} datasets)", suite, None, suite_figures(result, suite))
                for suite, members in result.suite_members.items()]
    return [EvalResult(task_type="retrieval", task_name="Retrieval", dataset_name=name, dataset_type=str(kind),
                       dataset_split=str(split) if split else None, metric_type=key.replace("@", "_at_"),
                       metric_value=value, metric_name=METRICS.get(key, key))
            for name, kind, split, metrics in entries for key, value in ordered(metrics).items()]


def card_data(inputs: CardInputs) -> ModelCardData:
    method = inputs.method
    is_peft = method not in ADAPTER_METHODS or ADAPTER_METHODS.get(method).peft  # a plugin not imported: an adapter
    tags = ["sentence-transformers", "sparse-encoder", "splade", *(["peft"] if is_peft else []), method,
            inputs.encoder.replace("_", "-")]
    results = eval_results(inputs)
    return ModelCardData(base_model=inputs.base and str(inputs.base), datasets=inputs.training_datasets or None,
                         library_name="sentence-transformers" if inputs.sentence_transformers else "transformers",
                         license=inputs.checkpoint.license, pipeline_tag="feature-extraction", tags=tags,
                         model_name=inputs.model_name, eval_results=results or None)


# --- the lines of prose that need more than a template expression ---------------------------------------------

def describe_base(inputs: CardInputs) -> str:
    model = inputs.section("model")
    if model.get("random_init"):
        return f"none: `{model.get('name', 'the model')}` is randomly initialised (model.random_init), for tests"
    local = inputs.adapter.get("base_model") or model.get("name_or_path")
    return f"`{inputs.base}`" + (f" (loaded from the local folder `{local}`)" if local and str(local) != str(inputs.base) else "")


def describe_adapter(inputs: CardInputs) -> str:
    method, lora = inputs.method, inputs.section("lora")
    if method == "full":
        return "full fine-tuning (every weight trained; no adapter)"
    reads = ADAPTER_METHODS.get(method).reads if method in ADAPTER_METHODS else ("r", "alpha")
    settings = ", ".join(f"{key}={lora[key]}" for key in (*reads, *TARGETING) if lora.get(key) is not None)
    quantized = inputs.adapter.get("quantization")
    merged = f"; trained on a {quantized} base and merged into the dequantised weights" if quantized else \
        "; merged into the base weights at export"
    return f"{method} ({settings}){merged}" if settings else f"{method}{merged}"


def describe_parameters(result: JobResult) -> str | None:
    counts = numbers(result.params)
    if "trainable" not in counts or not counts.get("total"):
        return None
    size = f"; adapter file {counts['adapter_bytes'] / 1e6:.2f} MB" if counts.get("adapter_bytes") else ""
    return (f"{int(counts['trainable']):,} trainable of {int(counts['total']):,} "
            f"({100 * counts['trainable'] / counts['total']:.2f}%){size}")


def metric_rows(result: JobResult, splits: dict[str, str]) -> list[list[str]]:
    """Per dataset the reference systems, then this model; per suite the same, macro-averaged; then the average."""
    references = {REFERENCE_LABELS.get(system, system): row for system, row in result.reference_rows.items()}

    def row(label: str, system: str, split: str, metrics: dict, sparsity: dict) -> list[str]:
        cells = [*(metrics.get(key) for key in METRICS), sparsity.get("doc_nnz_mean"), sparsity.get("query_nnz_mean")]
        return [label, split, system, *map(format_cell, cells)]

    rows = []
    for name in result.datasets:
        systems = {**{label: ref for label, ref in references.items() if name in ref.metrics}, "**this model**": result.trained}
        rows += [row(name, label, splits.get(name, ""), *evaluation.on(name)) for label, evaluation in systems.items()
                 if name in evaluation.metrics]
    for suite in result.suite_members:
        averages = {label: result.suite_average(ref, suite) for label, ref in references.items()}
        averages["**this model**"] = suite_figures(result, suite)
        rows += [row(f"{suite} (suite)", label, "", averaged, {}) for label, averaged in averages.items() if averaged]
    if len(result.datasets) > 1 and (average := result.trained.on(AVERAGE)[0]):
        rows.append(row("average", "**this model**", "", average, {}))
    return rows


def model_card(inputs: CardInputs) -> ModelCard:
    result, checkpoint = inputs.result, inputs.checkpoint
    splits = {entry.dataset_name: entry.dataset_split or "" for entry in eval_results(inputs)}
    data = result.data or {}
    fingerprints = [("train", data.get("train")), *(data.get("eval") or {}).items()]
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True).from_string(
        TEMPLATE.read_text())
    text = template.render(
        card_data=card_data(inputs).to_yaml(), name=inputs.model_name, encoder=inputs.encoder, base=inputs.base,
        method=inputs.method, base_line=describe_base(inputs), adapter_line=describe_adapter(inputs),
        family=" / ".join(filter(None, [checkpoint.model_type, checkpoint.architecture])), license=checkpoint.license,
        encoder_line=ENCODERS.get(inputs.encoder, inputs.encoder).format(pooling=inputs.section("encoder").get("pooling", "max")),
        parameters=describe_parameters(result), config=result.config, train=data.get("train"), training=result.training or {},
        training_names=", ".join(f"`{name}`" for name in inputs.training_datasets), overrides=result.overrides,
        loss_weights=", ".join(f"{name} {value}" for name, value in numbers(inputs.section("loss").get("weights")).items() if value),
        **{name: inputs.section(name) for name in ("model", "data", "loss", "optim", "trainer")},
        status=result.status, rows=metric_rows(result, splits), metric_labels=METRICS.values(), suites=result.suite_members,
        dev=", ".join(f"{METRICS.get(key, key)} {format_cell(value)}" for key, value in ordered(result.dev).items()),
        sparsity_labels=SPARSITY.values(), warnings=result.warnings or (),
        sparsity_rows=[[name, *(format_cell(sparsity.get(key)) for key in SPARSITY)] for name in result.datasets
                       if (sparsity := result.trained.on(name)[1])],
        fingerprint=result.config_fingerprint, seed=result.seed,
        versions=", ".join(f"{name} {version}" for name, version in (result.versions or {}).items()),
        data_fingerprints=", ".join(f"{name} `{entry['fingerprint']}`" for name, entry in fingerprints
                                    if isinstance(entry, dict) and entry.get("fingerprint")),
        sentence_transformers=inputs.sentence_transformers,
    )
    return ModelCard(text)


# --- gathering the inputs: the files beside the adapter, the base checkpoint's own ------------------------------

def checkpoint_file(name_or_path: str, filename: str) -> Path | None:
    """A file of a local checkpoint folder, or of a hub checkpoint already in the local cache (never downloaded)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path) / filename
    if HUB_ID.fullmatch(name_or_path):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, filename)
        return Path(cached) if isinstance(cached, str) else None
    return None


def read_json_object(path: Path | None) -> dict:
    try:
        value = json.loads(path.read_text()) if path and path.is_file() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def checkpoint_facts(name_or_path: str | None) -> CheckpointFacts:
    if not name_or_path:
        return CheckpointFacts()
    config = read_json_object(checkpoint_file(str(name_or_path), "config.json"))
    readme = checkpoint_file(str(name_or_path), CARD_FILE)
    try:
        card = (metadata_load(readme) if readme and readme.is_file() else None) or {}
    except (ValueError, yaml.YAMLError):  # a card whose front matter is not a YAML mapping says nothing usable
        card = {}
    origin = str(config.get("_name_or_path") or "")
    architectures = config.get("architectures") if isinstance(config.get("architectures"), list) else []
    return CheckpointFacts(
        origin=origin if HUB_ID.fullmatch(origin) and not Path(origin).exists() else None,
        license=str(card.get("license") or config.get("license") or "") or None,
        model_type=config.get("model_type"), architecture=str(architectures[0]) if architectures else None,
    )


def recorded_result(run_dir: Path) -> JobResult:
    """results.json; the saved Hydra config, redacted, stands in for the config when results.json is missing
    or lacks it."""
    try:
        result = JobResult.read(run_dir)
    except (OSError, ValueError):
        result = JobResult.from_payload({})
    saved = run_dir / ".hydra" / "config.yaml"
    if result.config or not saved.exists():
        return result
    from omegaconf import OmegaConf

    try:
        config = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
    except Exception:  # noqa: BLE001 -- e.g. a ${hydra:...} interpolation outside a Hydra run: keep it as written
        config = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
    return JobResult.from_payload({**result.to_payload(), "config": redact(config)})


def write_model_card(adapter_folder: Path, out_dir: Path, encoder: str, sentence_transformers: bool = True) -> Path:
    """README.md in `out_dir`, from the run folder the adapter is in; an adapter moved out of its run folder gets
    a card of what its own files say."""
    adapter = read_json_object(adapter_folder / METADATA_FILE)
    result = recorded_result(adapter_folder.parent)
    # The path the adapter was trained on is the one the export loaded: read the checkpoint's facts there.
    base = adapter.get("base_model") or ((result.config or {}).get("model") or {}).get("name_or_path")
    inputs = CardInputs(result, Path(out_dir).name, encoder, adapter, checkpoint_facts(base), sentence_transformers)
    target = Path(out_dir) / CARD_FILE
    model_card(inputs).save(target)
    return target
