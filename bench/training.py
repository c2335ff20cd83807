"""Training step time: the Lightning module (with PEFT and logging) vs a plain PyTorch loop, same batches.

Both start from the same weights and adapter, run the same loss, regularisers, AdamW and schedule on
the same pre-collated batches; the median time between consecutive steps is compared (the first
`warmup` steps are dropped: allocator and thread-pool warm-up).
"""

import copy
import statistics
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from transformers import get_linear_schedule_with_warmup

from splade_peft.memory import peak_memory
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.encoder import SpladeEncoder
from splade_peft.training.losses import contrastive_loss
from splade_peft.training.module import SpladeModule
from splade_peft.training.regularizers import RegularizerWarmup, flops, l1, quadratic_warmup, warmup_steps


class StepClock(Callback):
    def __init__(self):
        self.stamps: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.stamps.append(time.perf_counter())


def lightning_step_times(encoder: SpladeEncoder, batches: list[dict], loss_cfg, optim_cfg, precision: str) -> list[float]:
    clock = StepClock()
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(
            accelerator="auto", devices=1, precision=precision, max_steps=len(batches), gradient_clip_val=1.0,
            log_every_n_steps=1, logger=CSVLogger(logs), callbacks=[clock, RegularizerWarmup(loss_cfg)], enable_checkpointing=False,
            enable_model_summary=False, enable_progress_bar=False,
        )
        encoder.train()
        # batch_size=None: the DataLoader hands over the pre-collated batches as they are.
        trainer.fit(SpladeModule(encoder, loss_cfg, optim_cfg), torch.utils.data.DataLoader(batches, batch_size=None))
    return [later - earlier for earlier, later in zip(clock.stamps, clock.stamps[1:])]


def plain_step_times(encoder: SpladeEncoder, batches: list[dict], loss_cfg, optim_cfg, precision: str) -> list[float]:
    """What SpladeModule.training_step + Lightning's optimisation loop do, with nothing around them."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    encoder.to(device).train()
    parameters = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, optim_cfg.warmup_steps, len(batches))
    warmup = warmup_steps(loss_cfg, len(batches))
    stamps = []
    for step, batch in enumerate(batches):
        with autocast:
            queries = encoder(**{k: v.to(device) for k, v in batch["queries"].items()})
            documents = encoder(**{k: v.to(device) for k, v in batch["documents"].items()})
            loss = (contrastive_loss(queries, documents, batch["docs_per_query"], loss_cfg.in_batch, loss_cfg.temperature)
                    + quadratic_warmup(step, loss_cfg.lambda_d, warmup) * flops(documents, loss_cfg.flops_normalization)
                    + quadratic_warmup(step, loss_cfg.lambda_q, warmup) * l1(queries))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    return [later - earlier for earlier, later in zip(stamps, stamps[1:])]


def bench_training(masked_lm, batches: list[dict], adapters: dict, loss_cfg, optim_cfg, warmup: int,
                   rounds: int = 2) -> dict:
    """Per adapter type: median step time of both loops, Lightning's overhead, peak memory of the Lightning run.

    The two loops take turns for `rounds` rounds and each keeps its fastest round, so a load change on a
    shared machine during one of them does not pass for overhead.
    """
    precision = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    samples = batches[0]["queries"]["input_ids"].shape[0]
    results = {}
    for name, adapter_cfg in adapters.items():
        row = {"precision": precision}
        lightning_medians, plain_medians = [], []
        for _ in range(rounds):
            torch.manual_seed(0)
            with peak_memory() as memory:
                steps = lightning_step_times(_fresh_encoder(masked_lm, adapter_cfg), batches, loss_cfg, optim_cfg,
                                             precision)
            lightning_medians.append(statistics.median(steps[warmup:]))
            row["peak_rss_growth_mb"] = max(row.get("peak_rss_growth_mb", 0), memory.peak_growth_mb)
            row["peak_cuda_mb"] = memory.peak_cuda_mb
            torch.manual_seed(0)
            steps = plain_step_times(_fresh_encoder(masked_lm, adapter_cfg), batches, loss_cfg, optim_cfg, precision)
            plain_medians.append(statistics.median(steps[warmup:]))
        row["lightning_step_s"], row["plain_step_s"] = min(lightning_medians), min(plain_medians)
        row["lightning_overhead"] = row["lightning_step_s"] / row["plain_step_s"] - 1
        row["lightning_steps_per_s"] = 1 / row["lightning_step_s"]
        row["lightning_samples_per_s"] = samples / row["lightning_step_s"]
        row["plain_samples_per_s"] = samples / row["plain_step_s"]
        results[name] = row
    return {"steps": len(batches), "warmup_steps_dropped": warmup, "rounds": rounds, "queries_per_batch": samples,
            "documents_per_batch": batches[0]["documents"]["input_ids"].shape[0], "adapters": results}


def _fresh_encoder(masked_lm, adapter_cfg) -> SpladeEncoder:
    return SpladeEncoder(wrap_with_adapter(copy.deepcopy(masked_lm), OmegaConf.create(adapter_cfg)))
