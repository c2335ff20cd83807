"""Corpus encoding cut into shards that are encoded in parallel -- by local processes (one per CPU core
group or GPU) or by one submitit job each (a SLURM array) -- and indexed together by one Anserini run.

Each shard is a stage of a StageStore: its vector file is published before its marker, and the marker
names the shard's inputs (encoder weights, texts, encoding settings), so an interrupted encoding redoes
only the shards without a matching marker.

Layout of the encoding folder:
    vectors/shard-00003.jsonl          what Anserini indexes (one file per shard: one per indexing thread)
    stages/shard-00003/_complete.json  the shard's marker; its summary holds the sparsity counts
"""

import hashlib
import multiprocessing
import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from splade_peft.device import inference_precision
from splade_peft.index.encode import dimension_names, encoded_batches
from splade_peft.index.impact import write_impact_batches
from splade_peft.index.sparsity import SparsityCounter
from splade_peft.records import StageStore, mapping_fingerprint, remove


@dataclass(frozen=True)
class EncodeSettings:
    """What a shard's vectors depend on besides the encoder and the texts; every launcher's shard applies all
    of it itself (a spawned process or a SLURM job inherits no autocast), and all of it is fingerprinted."""

    max_length: int
    tokens_per_batch: int
    max_batch_size: int
    quantization: float
    precision: str  # trainer.precision: bf16-mixed encodes under bf16 autocast with TF32 matmuls on CUDA


@dataclass(frozen=True)
class ShardJob:
    """One shard's work, picklable: for a spawned process or a submitit job."""

    encoder: nn.Module
    tokenizer: object
    texts: dict[str, str]
    settings: EncodeSettings
    folder: Path  # the encoding folder
    name: str
    inputs: dict
    device: str


def encode_corpus_sharded(encoder: nn.Module, tokenizer, corpus: Mapping[str, str], index_cfg, max_length: int,
                          folder: Path, precision: str) -> tuple[int, SparsityCounter]:
    """Encode `corpus` with `encoder` (a module taking input_ids, attention_mask) at `precision` (the trainer's)
    into index.encode_shards vector shards under `folder`/vectors, reusing complete ones; (documents written,
    their sparsity counts)."""
    folder = Path(folder)
    settings = EncodeSettings(max_length, index_cfg.tokens_per_batch, index_cfg.max_batch_size, index_cfg.quantization,
                              precision)
    jobs = shard_jobs(encoder, tokenizer, corpus, settings, folder, index_cfg.encode_shards)
    remove_other_shards(folder, {job.name for job in jobs})
    store = StageStore(folder / "stages")
    pending = [job for job in jobs if store.completed(job.name, job.inputs) is None]
    if pending:
        launch(pending, index_cfg, folder)
    summaries = [store.completed(job.name, job.inputs) for job in jobs]
    counter = SparsityCounter()
    for summary in summaries:
        counter.term_frequency.update(summary["term_frequency"])
        counter.lengths.extend(summary["lengths"])
    return sum(summary["documents"] for summary in summaries), counter


def shard_jobs(encoder: nn.Module, tokenizer, corpus: Mapping[str, str], settings: EncodeSettings, folder: Path,
               shards: int) -> list[ShardJob]:
    """Every `shards`-th text from the i-th on in shard i: lengths (and so encoding times) stay balanced."""
    ids = list(corpus)
    weights = weights_fingerprint(encoder)
    device = str(next(encoder.parameters()).device)
    jobs = []
    for index in range(shards):
        texts = {doc_id: corpus[doc_id] for doc_id in ids[index::shards]}
        inputs = {"encoder": weights, "texts": mapping_fingerprint(texts), "settings": settings.__dict__,
                  "shard": [index, shards]}
        jobs.append(ShardJob(encoder, tokenizer, texts, settings, folder, f"shard-{index:05d}", inputs, device))
    return jobs


def weights_fingerprint(encoder: nn.Module) -> str:
    """Hash of the module's class, parameter names and values: what a shard's vectors depend on."""
    digest = hashlib.sha256(type(encoder).__qualname__.encode())
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def spread_over_gpus(jobs: list[ShardJob]) -> list[ShardJob]:
    """On CUDA, the devices of this machine in turn: shard i on device i mod the device count."""
    if not jobs[0].device.startswith("cuda"):
        return jobs
    return [replace(job, device=f"cuda:{index % torch.cuda.device_count()}") for index, job in enumerate(jobs)]


def remove_other_shards(folder: Path, names: set[str]) -> None:
    """Vector folders of an earlier, differently cut encoding would be indexed too: remove them."""
    for stale in (p for p in (folder / "vectors").glob("*") if p.stem not in names):
        remove(stale)


def launch(jobs: list[ShardJob], index_cfg: DictConfig, folder: Path) -> None:
    if index_cfg.shard_launcher == "submitit":
        launch_submitit(jobs, index_cfg, folder)
    elif index_cfg.encode_processes == 1:
        for job in jobs:
            encode_shard(job)
    else:
        launch_processes(jobs, index_cfg.encode_processes)


def launch_processes(jobs: list[ShardJob], processes: int) -> None:
    """Spawned processes (fork would copy a CUDA context and the tokenizer's threads), one torch thread each
    so that N processes share N cores instead of fighting over them."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(processes, len(jobs)), mp_context=context,
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        list(pool.map(encode_shard, spread_over_gpus(jobs)))  # list(): re-raises a shard's exception here


def launch_submitit(jobs: list[ShardJob], index_cfg: DictConfig, folder: Path) -> None:
    """One submitit job per pending shard. submitit pickles each job with its encoder: a copy per pending
    shard on the shared disk, traded for never unpickling a file outside submitit's own job folders."""
    import submitit

    parameters = {key: value for key, value in OmegaConf.to_container(index_cfg.submitit).items() if value is not None}
    executor = submitit.AutoExecutor(folder=folder / "submitit", cluster=parameters.pop("cluster", None))
    executor.update_parameters(**parameters)
    # A job runs on a machine of its own: its device is that machine's first GPU, or its CPU.
    device = "cuda" if jobs[0].device.startswith("cuda") else "cpu"
    moved = [replace(job, device=device) for job in jobs]
    # Submitted from inside a SLURM job (a sweep's), the array would inherit that job's SLURM_* variables.
    with submitit.helpers.clean_env():
        submitted = executor.map_array(encode_shard, moved)
    for job in submitted:
        job.result()  # waits; raises the job's exception with its log


def encode_shard(job: ShardJob) -> dict:
    """Encode one shard into vectors/<name>.jsonl (as a stage: nothing half-written is ever trusted); its summary."""
    encoder = job.encoder.to(job.device)
    counter = SparsityCounter()
    settings = job.settings

    def produce(staging: Path) -> dict:
        batches = encoded_batches(encoder, job.tokenizer, job.texts, settings.max_length, settings.tokens_per_batch,
                                  settings.max_batch_size, settings.quantization)
        with inference_precision({"precision": settings.precision}, torch.device(job.device)):
            documents = write_impact_batches(batches, dimension_names(encoder, job.tokenizer), staging / "vectors",
                                             1, counter)
        # One rename, before the marker: a reader (or a concurrent writer of the same shard) never sees half a file.
        (job.folder / "vectors").mkdir(parents=True, exist_ok=True)
        os.replace(staging / "vectors" / "part-00000.jsonl", job.folder / "vectors" / f"{job.name}.jsonl")
        (staging / "vectors").rmdir()
        return {"documents": documents, "lengths": counter.lengths, "term_frequency": dict(counter.term_frequency)}

    return StageStore(job.folder / "stages").run(job.name, job.inputs, produce)[1]

