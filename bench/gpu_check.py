"""`python -m bench.gpu_check` (`make gpu-check`): what one GPU does with this project, in one prepared run of at
most 8 minutes, written to bench/gpu.json.

Sections, each recorded with its figures or its error (one failing section does not lose the others):
  projection  MaskedMaxProjection forward + backward against autograd's (batch, length, vocab) version, fp32 and bf16
  lora_step   bench/gpu_plan.md's training step: random-init BERT-base SPLADE, LoRA r32, bf16 (time, TFLOP/s, memory)
  encoding    documents/s through the corpus-encoding path on the GPU, on the CPU, and the GPU forward alone
  sharded     two shards encoded in this process and in spawned processes: identical vectors
  job         a bf16 SPLADE job of 300 steps with validation and keep_best, through `python -m splade_peft`
  qlora       a QLoRA job on the SmolLM2 decoder (4-bit NF4) with the backbone sanity check
  ddp         a one-process DDP job (NCCL)

Without CUDA it stops in one line. `--allow-cpu --tiny` runs every section at tiny sizes on the CPU (gloo for
NCCL), so that a test proves the script runs end to end before GPU time is spent on it.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from bench.config import project_config
from splade_peft.errors import describe_failure

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


@dataclass(frozen=True)
class Sizes:
    """How big each section's work is: the GPU's, or --tiny's (seconds on one CPU thread)."""

    projection: tuple[int, int, int, int]  # texts, tokens, hidden, vocabulary
    bert: dict  # BertConfig keys of the training step's backbone
    queries: int
    documents_per_query: int
    query_length: int
    document_length: int
    timed_steps: int
    encoded: int  # documents encoded on the accelerator (the CPU encodes a tenth)
    encoding_overrides: tuple[str, ...]  # the model whose encoding is timed
    job_steps: int
    job_overrides: tuple[str, ...]
    qlora_overrides: tuple[str, ...]
    job_timeout_s: int


# bench/gpu_plan.md's recipe: BERT-base, 32 queries x (1 positive + 16 negatives), lengths 32 and 256.
GPU = Sizes(
    projection=(64, 256, 768, 30522),
    bert=dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    queries=32, documents_per_query=17, query_length=32, document_length=256, timed_steps=5,
    encoded=20000, encoding_overrides=("model=splade_2l",),
    job_steps=300, job_overrides=("trainer=gpu", "model=splade_2l", "data.batch_size=32", "data.negatives=4"),
    qlora_overrides=("trainer=gpu", "model=smollm2", "trainer.max_steps=20"),
    job_timeout_s=240,
)
TINY = Sizes(
    projection=(2, 8, 16, 64),
    bert=dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    queries=2, documents_per_query=3, query_length=8, document_length=16, timed_steps=2,
    encoded=60, encoding_overrides=(),
    job_steps=4, job_overrides=("trainer.precision=bf16-mixed", "data.max_queries=12", "data.max_documents=60"),
    # The whole decoder (the sanity check refuses a truncated one: it could not answer), on very little text.
    qlora_overrides=("model=smollm2", "trainer.max_steps=1", "eval.zero_shot=false", "data.max_queries=8",
                     "data.max_documents=24", "model.query_max_length=12", "model.doc_max_length=24"),
    job_timeout_s=300,
)
# Every job: the smoke preset's embedded collection (no data to fetch), no BM25 run, no W&B, and exact search
# (Anserini's indexing and search are CPU work, which `make bench` measures; here they would only cost minutes).
JOB_BASE = ("experiment=smoke", "eval.bm25=false", "logger=none", "data.negatives_source=random", "index=exact")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "gpu.json")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA (with --tiny: a test of the script)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: every section in seconds on a CPU")
    parser.add_argument("--only", nargs="*", default=None, help="run only these sections")
    parser.add_argument("--budget-s", type=float, default=480, help="the whole run's time; a section that finds "
                        "none left is skipped, and a job gets at most what is left")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print(f"gpu-check: no CUDA device visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}) -- "
              "run it on a GPU node; --allow-cpu --tiny only tests the script", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = TINY if args.tiny else GPU
    results = {"command": "python -m bench.gpu_check " + " ".join(argv), "tiny": args.tiny, **environment(device)}
    chosen = [name for name in SECTIONS if args.only is None or name in args.only]
    started, budget = time.perf_counter(), Budget(args.budget_s)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        for name in chosen:
            results[name] = run_section(SECTIONS[name], sizes, device, Path(scratch) / name, budget)
            results["seconds"] = round(time.perf_counter() - started, 1)
            write(results, args.out)  # after every section: a run cut short keeps what it measured
            print(f"[gpu-check] {name}: {summary_line(results[name])}", flush=True)
    print(f"[gpu-check] {len(chosen)} sections in {results['seconds']} s -> {args.out}")
    return 0


class Budget:
    """The run's time (8 minutes on a GPU): what is left of it bounds each job, and a section that finds none
    left is skipped."""

    def __init__(self, seconds: float):
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        return self.ends - time.monotonic()

    def timeout(self, most_s: float) -> float:
        return max(min(most_s, self.left()), 1)


def run_section(section, sizes: Sizes, device: torch.device, scratch: Path, budget: Budget) -> dict:
    if budget.left() <= 0:
        return {"error": "skipped: the run's time (--budget-s) was spent"}
    scratch.mkdir(parents=True)
    started = time.perf_counter()
    try:
        figures = section(sizes, device, scratch, budget)
    except Exception as error:  # noqa: BLE001 -- a section's failure is its result; the next section still runs
        figures = {"error": describe_failure(error), "traceback": traceback.format_exc(limit=-4).splitlines()[-8:]}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {**figures, "seconds": round(time.perf_counter() - started, 2)}


def summary_line(figures: dict) -> str:
    if "error" in figures:
        return "ERROR " + figures["error"]
    flat = {f"{outer}.{key}": value for outer, inner in figures.items() if isinstance(inner, dict)
            for key, value in inner.items()}
    shown = {key: value for key, value in {**figures, **flat}.items()
             if isinstance(value, (int, float, str)) and key != "seconds"}
    return ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in list(shown.items())[:6]) + f" ({figures['seconds']} s)"


def write(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def environment(device: torch.device) -> dict:
    import bitsandbytes
    import lightning
    import peft
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(), "transformers": transformers.__version__,
                "peft": peft.__version__, "lightning": lightning.__version__, "bitsandbytes": bitsandbytes.__version__}
    if device.type != "cuda":
        return {"gpu": None, "device": "cpu", "versions": versions}
    properties = torch.cuda.get_device_properties(device)
    return {"gpu": torch.cuda.get_device_name(device), "device": "cuda",
            "gpu_memory_gb": round(properties.total_memory / 2**30, 1),
            "compute_capability": f"{properties.major}.{properties.minor}", "versions": versions}


# --- timing -----------------------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(work, device: torch.device, repeats: int = 3):
    """(fastest of `repeats` runs of `work()` after one warm-up, in seconds; its last result)."""
    result = work()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        result = work()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return min(times), result


@contextlib.contextmanager
def peak_cuda_mb(device: torch.device, into: dict, key: str):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        into[key] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


# --- 1. the vocabulary projection -------------------------------------------------------------------------------

def projection_section(sizes: Sizes, device: torch.device, scratch: Path, budget: Budget) -> dict:
    """MaskedMaxProjection against autograd's max over the full (texts, tokens, vocabulary) logits, on
    log1p(relu(.)) of the maxima (SPLADE's sparse gradient), in fp32 and under bf16 autocast."""
    from splade_peft.model.projection import MaskedMaxProjection

    texts, tokens, hidden_size, vocab = sizes.projection
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(texts, tokens, hidden_size, generator=generator).to(device)
    weight = (torch.randn(vocab, hidden_size, generator=generator) / hidden_size**0.5).to(device)
    bias = torch.full((vocab,), -2.0).to(device)  # most terms inactive, as in a trained SPLADE head
    mask = torch.ones(texts, tokens, dtype=torch.long)
    mask[texts // 2:, tokens // 2:] = 0  # half the texts padded to half length
    mask = mask.to(device)

    def autograd_version(h, w, b):
        logits = (h @ w.T).masked_fill(~mask.bool().unsqueeze(-1), float("-inf"))
        return logits.amax(dim=1).float() + b

    def run(function, bf16: bool):
        inputs = [t.detach().clone().requires_grad_() for t in (hidden, weight, bias)]
        with autocast(device, bf16):
            values = function(*inputs)
        torch.log1p(torch.relu(values)).sum().backward()
        return values.detach(), [t.grad for t in inputs]

    figures = {"shape": {"texts": texts, "tokens": tokens, "hidden": hidden_size, "vocabulary": vocab}}
    for precision, bf16 in (("fp32", False), ("bf16", True)):
        row = {}
        with peak_cuda_mb(device, row, "masked_max_peak_mb"):
            row["masked_max_s"], (values, grads) = best_time(
                lambda: run(lambda h, w, b: MaskedMaxProjection.apply(h, w, b, mask), bf16), device)
        with peak_cuda_mb(device, row, "autograd_peak_mb"):
            row["autograd_s"], (reference, reference_grads) = best_time(lambda: run(autograd_version, bf16), device)
        row["speedup"] = row["autograd_s"] / row["masked_max_s"]
        row["max_abs_diff_values"] = (values - reference).abs().max().item()
        for name, grad, expected in zip(("hidden", "weight", "bias"), grads, reference_grads):
            row[f"max_abs_diff_grad_{name}"] = (grad.float() - expected.float()).abs().max().item()
            row[f"max_abs_grad_{name}"] = expected.float().abs().max().item()
        row["active_terms_per_text"] = (values > 0).sum(dim=1).float().mean().item()
        figures[precision] = row
    return figures


# --- 2. the plan's training step --------------------------------------------------------------------------------

def lora_step_section(sizes: Sizes, device: torch.device, scratch: Path, budget: Budget) -> dict:
    """bench/gpu_plan.md's step on a random-init BERT-base (nothing from the hub): LoRA r32 on every linear layer
    of the blocks, contrastive loss with FLOPS and L1, AdamW, bf16 autocast and TF32. Out of memory at the plan's
    32 queries, it halves the batch and says so. TFLOP/s count FLOPs as the plan does (plan_step_flops)."""
    queries = sizes.queries
    while True:
        try:
            return {"queries_per_step": queries, **training_step_figures(sizes, queries, device)}
        except torch.OutOfMemoryError:
            if queries == 1:
                raise
            queries //= 2
            torch.cuda.empty_cache()


def training_step_figures(sizes: Sizes, queries: int, device: torch.device) -> dict:
    from transformers import BertConfig, BertForMaskedLM

    from splade_peft.device import use_tf32
    from splade_peft.model.adapters import wrap_with_adapter
    from splade_peft.model.encoder import SpladeEncoder
    from splade_peft.training.losses import contrastive_loss
    from splade_peft.training.regularizers import flops, l1

    if device.type == "cuda":
        use_tf32()
    torch.manual_seed(0)
    config = BertConfig(**sizes.bert)
    lora = OmegaConf.merge(OmegaConf.load(CONF / "lora" / "lora.yaml"), {"r": 32, "alpha": 32})
    encoder = SpladeEncoder(wrap_with_adapter(BertForMaskedLM(config), lora)).to(device).train()
    loss_cfg = OmegaConf.load(CONF / "loss" / "contrastive.yaml")
    documents = queries * sizes.documents_per_query
    batch = {side: {"input_ids": torch.randint(config.vocab_size // 30, config.vocab_size, (count, length), device=device),
                    "attention_mask": torch.ones(count, length, dtype=torch.long, device=device)}
             for side, count, length in (("queries", queries, sizes.query_length),
                                         ("documents", documents, sizes.document_length))}
    parameters = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)

    def step():
        with autocast(device, bf16=True):
            query_vectors, document_vectors = encoder(**batch["queries"]), encoder(**batch["documents"])
            loss = (contrastive_loss(query_vectors, document_vectors, sizes.documents_per_query, loss_cfg.in_batch,
                                     loss_cfg.temperature)
                    + loss_cfg.lambda_d * flops(document_vectors) + loss_cfg.lambda_q * l1(query_vectors))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()

    figures = {}
    step()  # warm-up: allocator, kernels' autotuning, AdamW's state
    with peak_cuda_mb(device, figures, "peak_cuda_mb"):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(sizes.timed_steps):
            step()
        synchronize(device)
    step_s = (time.perf_counter() - started) / sizes.timed_steps
    step_flops = plan_step_flops(config, 32, queries, sizes.query_length, documents, sizes.document_length)
    return {**figures, "documents_per_step": documents, "timed_steps": sizes.timed_steps, "step_s": step_s,
            "step_tflop": step_flops / 1e12, "tflop_per_s": step_flops / step_s / 1e12,
            "trained_parameters": sum(p.numel() for p in parameters),
            "parameters": sum(p.numel() for p in encoder.parameters())}


def plan_step_flops(config, rank: int, queries: int, query_length: int, documents: int, document_length: int) -> float:
    """bench/gpu_plan.md's count: 2 x forward (activation gradients only: the base is frozen) + 3 x LoRA's."""
    layers, hidden, ffn = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    vocab = config.vocab_size

    def forward_per_token(length: int) -> float:
        return (2 * layers * (4 * hidden**2 + 2 * hidden * ffn) + 4 * layers * length * hidden
                + 2 * hidden**2 + 2 * hidden * vocab)

    lora_per_token = 2 * layers * rank * (4 * 2 * hidden + 2 * (hidden + ffn))
    tokens = {query_length: queries * query_length, document_length: documents * document_length}
    forward = sum(count * forward_per_token(length) for length, count in tokens.items())
    return 2 * forward + 3 * lora_per_token * sum(tokens.values())


# --- 3. and 4. corpus encoding ----------------------------------------------------------------------------------

def encoding_setup(sizes: Sizes, count: int):
    """(encoder, tokenizer, `count` documents, the config): the smoke preset's collection repeated to `count`."""
    from splade_peft.data.sources import load_data
    from splade_peft.model.backbones import load_backbone
    from splade_peft.model.encoder import SpladeEncoder

    cfg = project_config(["data=embedded", "experiment=smoke", *sizes.encoding_overrides])
    corpus = load_data(cfg.data, cfg.data.eval_split, cfg.paths.cache).corpus
    masked_lm, tokenizer = load_backbone(cfg.model, cfg.paths.cache)
    ids = sorted(corpus)
    texts = {f"{index}": corpus[ids[index % len(ids)]] for index in range(count)}
    return SpladeEncoder(masked_lm, cfg.encoder.pooling), tokenizer, texts, cfg


def index_settings(cfg, device: torch.device, **changes):
    """The index section a job on `device` encodes with: the GPU presets' batches on CUDA (msmarco_lora_baseline)."""
    gpu = {"tokens_per_batch": 65536, "max_batch_size": 512} if device.type == "cuda" else {}
    return OmegaConf.merge(cfg.index, gpu, changes)


def encoding_section(sizes: Sizes, device: torch.device, scratch: Path, budget: Budget) -> dict:
    """Documents/s through the job's encoding path (encode_corpus_sharded: batches, non-zeros, impacts, files) on
    `device` and on the CPU, and of the encoder's forward alone on the same padded batches already on `device`:
    the gap between the first and the last is what the host costs."""
    from splade_peft.index.sharded import encode_corpus_sharded

    encoder, tokenizer, texts, cfg = encoding_setup(sizes, sizes.encoded)
    precision = "bf16-mixed" if device.type == "cuda" else "32-true"
    lengths = [len(ids) for ids in tokenizer(list(texts.values()), truncation=True,
                                              max_length=cfg.model.doc_max_length)["input_ids"]]
    figures = {"documents": len(texts), "mean_tokens": sum(lengths) / len(lengths), "precision": precision,
               "torch_threads": torch.get_num_threads()}

    def encode(on: torch.device, corpus: dict, folder: Path) -> float:
        encoder.to(on)
        index_cfg = index_settings(cfg, on)
        started = time.perf_counter()
        written, _ = encode_corpus_sharded(encoder, tokenizer, corpus, index_cfg, cfg.model.doc_max_length, folder,
                                           precision if on.type == "cuda" else "32-true")
        assert written == len(corpus), f"{written} of {len(corpus)} documents written"
        return len(corpus) / (time.perf_counter() - started)

    encode(device, dict(list(texts.items())[:32]), scratch / "warm-up")
    figures["pipeline_docs_per_s"] = encode(device, texts, scratch / "device")
    figures["forward_only_docs_per_s"] = forward_only(encoder, tokenizer, texts, index_settings(cfg, device),
                                                      cfg.model.doc_max_length, device, precision)
    figures["host_share"] = 1 - figures["pipeline_docs_per_s"] / figures["forward_only_docs_per_s"]
    # On the CPU too (a tenth of the documents): what the accelerator is worth (1 when it is the CPU: --tiny).
    cpu_texts = dict(list(texts.items())[:max(len(texts) // 10, 1)])
    figures["cpu_documents"] = len(cpu_texts)
    figures["cpu_pipeline_docs_per_s"] = encode(torch.device("cpu"), cpu_texts, scratch / "cpu")
    figures["device_over_cpu"] = figures["pipeline_docs_per_s"] / figures["cpu_pipeline_docs_per_s"]
    return figures


@torch.inference_mode()
def forward_only(encoder, tokenizer, texts: dict, index_cfg, max_length: int, device: torch.device,
                 precision: str) -> float:
    from splade_peft.device import inference_precision
    from splade_peft.index.encode import length_sorted_batches

    encoder.to(device).eval()
    token_ids = tokenizer(list(texts.values()), truncation=True, max_length=max_length)["input_ids"]
    batches = [{key: value.to(device) for key, value in
                tokenizer.pad({"input_ids": [token_ids[i] for i in batch]}, return_tensors="pt").items()}
               for batch in length_sorted_batches([len(t) for t in token_ids], index_cfg.tokens_per_batch,
                                                  index_cfg.max_batch_size)]
    with inference_precision({"precision": precision}, device):
        encoder(batches[0]["input_ids"], batches[0]["attention_mask"])
        synchronize(device)
        started = time.perf_counter()
        for batch in batches:
            encoder(batch["input_ids"], batch["attention_mask"])
        synchronize(device)
    return len(texts) / (time.perf_counter() - started)


def sharded_section(sizes: Sizes, device: torch.device, scratch: Path, budget: Budget) -> dict:
    """The same two shards encoded in this process (index.encode_processes=1) and by two spawned processes: every
    vector file must be byte for byte the same (the bf16 autocast and TF32 of the job's precision in both)."""
    from splade_peft.index.sharded import encode_corpus_sharded

    encoder, tokenizer, texts, cfg = encoding_setup(sizes, max(sizes.encoded // 10, 8))
    encoder.to(device)
    precision = "bf16-mixed"
    figures = {"documents": len(texts), "precision": precision}
    for launch, processes in (("in_process", 1), ("spawned", 2)):
        index_cfg = index_settings(cfg, device, encode_shards=2, encode_processes=processes, shard_launcher="local")
        started = time.perf_counter()
        encode_corpus_sharded(encoder, tokenizer, texts, index_cfg, cfg.model.doc_max_length, scratch / launch,
                              precision)
        figures[f"{launch}_s"] = time.perf_counter() - started
    files = {launch: sorted((scratch / launch / "vectors").glob("*.jsonl")) for launch in ("in_process", "spawned")}
    different = [path.name for path, other in zip(files["in_process"], files["spawned"])
                 if path.read_bytes() != other.read_bytes()]
    figures["shards"] = len(files["in_process"])
    figures["identical"] = not different and len(files["in_process"]) == len(files["spawned"]) == 2
    if not figures["identical"]:
        raise AssertionError(f"in-process and spawned shards differ: {different or files}")
    return figures


# --- 5. to 7. jobs through the real entry point -----------------------------------------------------------------

def job_section(sizes: Sizes, device: torch.device, scratch: Path, budget: Budget) -> dict:
    """A bf16 SPLADE job: trainer.max_steps steps, validation every third of them, keep_best."""
    every = max(sizes.job_steps // 3, 1)
    figures, _ = run_job(scratch, budget.timeout(sizes.job_timeout_s), *sizes.job_overrides,
                         f"trainer.max_steps={sizes.job_steps}", f"eval.validate_every_n_steps={every}",
                         "training.keep_best=true")
    if not figures.get("kept"):
        raise AssertionError("training.keep_best=true kept no validated checkpoint")
    return figures


def qlora_section(sizes: Sizes, device: torch.device, scratch: Path, budget: Budget) -> dict:
    """QLoRA (4-bit NF4) on the SmolLM2 decoder, with the backbone sanity check before training."""
    figures, _ = run_job(scratch, budget.timeout(sizes.job_timeout_s), *sizes.qlora_overrides, "lora=qlora",
                         "model.sanity_check=true")
    if not figures.get("backbone_check"):
        raise AssertionError("the job recorded no backbone sanity check")
    return figures


def ddp_section(sizes: Sizes, device: torch.device, scratch: Path, budget: Budget) -> dict:
    """A DDP job of one process: NCCL on a GPU (gloo on the CPU); the process group it started says which."""
    overrides = ("trainer=gpu",) if device.type == "cuda" else ()
    figures, log = run_job(scratch, budget.timeout(sizes.job_timeout_s), *overrides, "trainer.devices=1",
                           "+trainer.strategy=ddp", f"trainer.max_steps={min(sizes.job_steps, 20)}")
    backends = re.findall(r"distributed_backend=(\w+)", log)
    if not backends:
        raise AssertionError("the job started no process group (no 'distributed_backend=' in its log)")
    return {**figures, "backend": backends[0]}


def run_job(run_dir: Path, timeout_s: int, *overrides: str) -> tuple[dict, str]:
    """`python -m splade_peft` on the smoke preset's collection with `overrides` in `run_dir`: (its results.json's
    figures, its console output); its error line raised when it failed."""
    command = [sys.executable, "-m", "splade_peft", f"hydra.run.dir={run_dir}", *JOB_BASE, *overrides]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                   "WANDB_MODE": "disabled"}
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, env=environment)
    wall_s = time.perf_counter() - started
    log = finished.stdout + finished.stderr
    results_file = run_dir / "results.json"
    if not results_file.exists():
        raise RuntimeError(f"exit status {finished.returncode}, no results.json: {log.strip().splitlines()[-1:]}")
    results = json.loads(results_file.read_text())
    if results.get("status") != "completed":
        raise RuntimeError(f"job {results.get('status')}: {results.get('error')}")
    training = results.get("training", {})
    figures = {"overrides": list(overrides), "wall_s": wall_s, "steps": training.get("steps"),
               "train_s": training.get("train_s"), "kept": training.get("kept"),
               "processes": training.get("processes"), "memory": results.get("memory"),
               "metrics": results.get("metrics", {}).get("average")}
    if training.get("steps"):
        figures["steps_per_s"] = training["steps"] / training["train_s"]
    if results.get("backbone_check"):
        figures["backbone_check"] = results["backbone_check"]
    return figures, log


SECTIONS = {"projection": projection_section, "lora_step": lora_step_section, "encoding": encoding_section,
            "sharded": sharded_section, "job": job_section, "qlora": qlora_section, "ddp": ddp_section}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
