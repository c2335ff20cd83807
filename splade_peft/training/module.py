"""The LightningModule: one training step of a SPLADE encoder (+ adapter), a ranking loss plus sparsity
regularisers at the weights the RegularizerWarmup callback sets, and retrieval validation when there is a
validation split."""

import logging

import lightning as L
import torch
from transformers import get_linear_schedule_with_warmup

from splade_peft.errors import TrainingDivergedError
from splade_peft.model.variants import SparseEncoder, as_sparse_encoder
from splade_peft.training.distributed import all_processes_agree, gather_documents
from splade_peft.training.losses import mean_margins, ranking_loss
from splade_peft.training.regularizers import flops, gradient_share, l1, nonzeros_per_vector
from splade_peft.training.validation import RetrievalValidation

log = logging.getLogger(__name__)
GLOBAL_NEGATIVES = "global"


class SpladeModule(L.LightningModule):
    def __init__(self, encoder: SparseEncoder, loss_cfg, optim_cfg, max_nonfinite_batches: int = 0):
        super().__init__()
        self.encoder = as_sparse_encoder(encoder)
        self.loss_cfg, self.optim_cfg = loss_cfg, optim_cfg
        self.max_nonfinite_batches, self.nonfinite_batches = max_nonfinite_batches, 0
        self.loss_is_finite = torch.tensor(True)
        # The regularisers' weights at this step, set by the RegularizerWarmup callback (0: none without it).
        self.lambda_d, self.lambda_q = 0.0, 0.0
        self.vector_width = 0  # the vectors' dimensions (the vocabulary's, for SPLADE): the collapse stop's scale

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

    def uses_grad_scaler(self) -> bool:
        return getattr(self.trainer.precision_plugin, "scaler", None) is not None

    def on_before_optimizer_step(self, optimizer) -> None:
        # fp16's GradScaler already skips the steps whose gradients overflowed (and lowers its scale):
        # those are not divergence.
        if self.uses_grad_scaler():
            return
        gradients = [p.grad for p in self.encoder.parameters() if p.grad is not None]
        gradient_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gradients))) if gradients else torch.zeros(())
        finite = self.loss_is_finite.to(gradient_norm.device) & torch.isfinite(gradient_norm)
        # One host sync per step (whether AdamW steps is decided on the host); under DDP the gradients are
        # already averaged, and the loss flags are and-ed, so every process skips the same steps.
        if not all_processes_agree(finite):
            self.skip_nonfinite("gradient" if all_processes_agree(self.loss_is_finite) else "loss")
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
        self.vector_width = documents.shape[-1]
        pool = gather_documents(documents) if self.loss_cfg.in_batch == GLOBAL_NEGATIVES else None
        ranking_terms = ranking_loss(
            self.loss_cfg, queries, documents, batch["docs_per_query"], batch.get("teacher_scores"), pool,
            false_negatives=batch.get("false_negatives"),
        )
        ranking = ranking_terms.pop("total")
        lambda_d, lambda_q = self.lambda_d, self.lambda_q
        doc_flops, query_l1 = flops(documents, self.loss_cfg.flops_normalization), l1(queries)
        auxiliary = self.encoder.auxiliary_losses()  # CSR's reconstruction
        loss = ranking + lambda_d * doc_flops + lambda_q * query_l1 + sum(auxiliary.values())
        # A non-finite loss still goes through backward (DDP needs every process to), which makes the
        # gradients non-finite; on_before_optimizer_step then skips the step, on every process alike.
        self.loss_is_finite = torch.isfinite(loss.detach())
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
                # the sparsity knob's share of the push on the document vectors (0 while lambda_d is)
                "train/flops_grad_share": gradient_share(ranking, lambda_d * doc_flops, documents)
                if lambda_d and documents.requires_grad else 0.0,
                **{f"train/{name}": value for name, value in mean_margins(
                    queries, documents, batch["docs_per_query"], batch.get("teacher_scores")).items()},
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
        schedule = get_linear_schedule_with_warmup(
            optimizer, self.optim_cfg.warmup_steps, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "name": "train/lr"}}


class ValidatedSpladeModule(SpladeModule):
    """SpladeModule with retrieval validation; a separate class because Lightning warns on every job whose
    module defines validation_step without a validation loader."""

    def __init__(self, encoder: SparseEncoder, loss_cfg, optim_cfg, max_nonfinite_batches: int,
                 validation: RetrievalValidation):
        super().__init__(encoder, loss_cfg, optim_cfg, max_nonfinite_batches)
        self.validation = validation

    def on_validation_epoch_start(self) -> None:
        self.validation.start()

    def validation_step(self, batch: dict, batch_index: int) -> None:
        side = batch["side"]
        encoder = self.encoder.side(side)
        weights = encoder(batch["input_ids"], batch["attention_mask"])
        self.validation.add(side, batch["ids"], weights, getattr(encoder, "term_names", None))

    def on_validation_epoch_end(self) -> None:
        # Every process searched the whole validation split: the values agree, and checkpoint selection
        # and early stopping decide alike everywhere.
        self.log_dict({f"val/{name}": value for name, value in self.validation.metrics().items()})
