"""The collapse stop: a sparse encoder whose vectors collapse -- every dimension active, or none at all -- learns
nothing more worth having, yet would train on for hours. At each logging step this callback reads the sparsity
figures the training module logs (train/doc_nnz, train/query_nnz: mean non-zeros per vector) and fails the job
in one line naming the figure, its value, the step and the regulariser weight to change (training.collapse_stop)."""

from lightning.pytorch.callbacks import Callback

from splade_peft.errors import VectorsCollapsedError
from splade_peft.training.regularizers import RegularizerWarmup

# figure -> (what it counts, the regulariser weight that pushes it)
SPARSITY_FIGURES = {"train/doc_nnz": ("document", "loss.lambda_d"), "train/query_nnz": ("query", "loss.lambda_q")}


def collapse(figures: dict[str, float], width: int, min_nonzeros: float, max_fill: float,
             full_counts: bool) -> str | None:
    """What collapsed, in words, or None. `figures`: mean non-zeros per vector by logged name; `width`: the
    vectors' dimensions. Full vectors count only once `full_counts` (after the regularisers' warm-up: an
    untrained head starts dense, and the warm-up is what makes it sparse); empty ones always do."""
    for name, nonzeros in figures.items():
        side, weight = SPARSITY_FIGURES[name]
        if nonzeros < min_nonzeros:
            # An empty vector scores 0 against everything and passes no gradient back through the ReLU.
            return (f"{name} is {nonzeros:g}, fewer than training.collapse_stop.min_nonzeros={min_nonzeros:g}: "
                    f"the {side} vectors are (nearly) empty -- lower {weight}")
        if full_counts and nonzeros > max_fill * width:
            return (f"{name} is {nonzeros:.1f} of {width} dimensions, more than training.collapse_stop.max_fill="
                    f"{max_fill:g}: the {side} vectors are no longer sparse -- raise {weight}")
    return None


class CollapseStop(Callback):
    """Stops a sparse encoder's fit at the first logging step (every trainer.log_every_n_steps optimizer steps)
    where its document or query vectors collapsed, raising VectorsCollapsedError (the job ends as failed, its
    results.json error that line). Under DDP the figures are averaged over processes first, so every process
    stops at the same step."""

    def __init__(self, min_nonzeros: float, max_fill: float, warmup: RegularizerWarmup):
        self.min_nonzeros, self.max_fill, self.warmup = min_nonzeros, max_fill, warmup
        self.checked_step = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        # Batches accumulated into one step end with the same global_step: that step is checked once.
        if step == self.checked_step or step % trainer.log_every_n_steps:
            return
        self.checked_step = step
        logged = trainer.callback_metrics
        figures = {name: mean_over_processes(trainer, logged[name], pl_module.device)
                   for name in SPARSITY_FIGURES if name in logged}
        problem = collapse(figures, pl_module.vector_width, self.min_nonzeros, self.max_fill,
                           full_counts=step >= self.warmup.warmup)
        if problem:
            raise VectorsCollapsedError(f"{problem} (at step {step}; training.collapse_stop.enabled=false turns "
                                        "this stop off)")


def mean_over_processes(trainer, value, device) -> float:
    """`value` averaged over the DDP processes (itself without DDP), reduced on `device`: NCCL reduces CUDA
    tensors only."""
    return float(trainer.strategy.reduce(value.detach().float().to(device), reduce_op="mean"))
