"""The LightningModule: SPLADE encoder (+ adapter) trained with a ranking loss and sparsity regularisers."""

import logging

import lightning as L
import torch
from torch.optim.lr_scheduler import LambdaLR

from splade_peft.errors import TrainingDivergedError
from splade_peft.model.variants import SparseEncoder, as_sparse_encoder
from splade_peft.training.losses import ranking_loss
from splade_peft.training.regularizers import flops, l1, nonzeros_per_vector, quadratic_warmup

log = logging.getLogger(__name__)


def linear_warmup_then_decay(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


class SpladeModule(L.LightningModule):
    def __init__(self, encoder: SparseEncoder, loss_cfg, optim_cfg, max_nonfinite_batches: int = 0):
        super().__init__()
        self.encoder = as_sparse_encoder(encoder)
        self.loss_cfg, self.optim_cfg = loss_cfg, optim_cfg
        self.max_nonfinite_batches, self.nonfinite_batches = max_nonfinite_batches, 0

    def skip_nonfinite(self, what: str) -> None:
        """Count a batch whose loss or gradient is NaN/inf; stop the job once more than allowed were skipped."""
        self.nonfinite_batches += 1
        message = f"non-finite {what} at step {self.global_step}"
        if self.nonfinite_batches > self.max_nonfinite_batches:
            raise TrainingDivergedError(
                f"{message} ({self.nonfinite_batches} such batches, training.max_nonfinite_batches="
                f"{self.max_nonfinite_batches}) -- lower optim.lr or check the data"
            )
        log.warning("%s: batch skipped (%d of at most %d)", message, self.nonfinite_batches, self.max_nonfinite_batches)

    def on_before_optimizer_step(self, optimizer) -> None:
        gradients = [p.grad for p in self.encoder.parameters() if p.grad is not None]
        if gradients and not torch.isfinite(torch.stack([g.norm() for g in gradients]).sum()):
            self.skip_nonfinite("gradient")
            # AdamW leaves parameters without a gradient untouched: the step becomes a no-op.
            optimizer.zero_grad(set_to_none=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["nonfinite_batches"] = self.nonfinite_batches

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.nonfinite_batches = checkpoint.get("nonfinite_batches", 0)

    def on_train_epoch_start(self) -> None:
        # Datasets that re-draw their negatives every epoch (like DistributedSampler's set_epoch).
        dataset = self.trainer.train_dataloader.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        queries = self.encoder.encode_queries(**batch["queries"])
        documents = self.encoder.encode_documents(**batch["documents"])
        ranking_terms = ranking_loss(
            self.loss_cfg, queries, documents, batch["docs_per_query"], batch.get("teacher_scores")
        )
        ranking = ranking_terms.pop("total")
        lambda_d = quadratic_warmup(self.global_step, self.loss_cfg.lambda_d, self.loss_cfg.warmup_steps)
        lambda_q = quadratic_warmup(self.global_step, self.loss_cfg.lambda_q, self.loss_cfg.warmup_steps)
        if not self.encoder.regularise_queries:
            lambda_q = 0.0
        if not self.encoder.is_sparse:  # FLOPS and L1 make vectors sparse: meaningless on dense embeddings
            lambda_d = lambda_q = 0.0
        doc_flops, query_l1 = flops(documents), l1(queries)
        auxiliary = self.encoder.auxiliary_losses()  # CSR's reconstruction
        loss = ranking + lambda_d * doc_flops + lambda_q * query_l1 + sum(auxiliary.values())
        if not torch.isfinite(loss):
            self.skip_nonfinite("loss")
            return None  # Lightning skips the backward pass and the optimizer step for this batch
        self.log_dict(
            {
                "train/loss": loss,
                "train/ranking_loss": ranking,
                **{f"train/{name}_loss": value for name, value in {**ranking_terms, **auxiliary}.items()},
                "train/flops": doc_flops,
                "train/query_l1": query_l1,
                "train/doc_nnz": nonzeros_per_vector(documents).mean(),
                "train/query_nnz": nonzeros_per_vector(queries).mean(),
                "train/lambda_d": lambda_d,
                "train/lambda_q": lambda_q,
                "train/lr": self.lr_schedulers().get_last_lr()[0],
            },
            prog_bar=False,
            batch_size=queries.shape[0],
        )
        self.log("train/loss_step", loss, prog_bar=True, batch_size=queries.shape[0], logger=False)
        return loss

    def configure_optimizers(self):
        groups = self.encoder.parameter_groups(self.optim_cfg)
        optimizer = torch.optim.AdamW(groups, lr=self.optim_cfg.lr, weight_decay=self.optim_cfg.weight_decay)
        # One factor for every group: the query table keeps its ratio to the encoder's rate throughout.
        schedule = LambdaLR(optimizer, linear_warmup_then_decay(self.optim_cfg.warmup_steps, int(self.trainer.estimated_stepping_batches)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
