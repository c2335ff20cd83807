"""A job preempted or timed out on a cluster keeps the steps it trained: it checkpoints, then submitit requeues it.

submitit (the Hydra submitit launcher, hydra/launcher=slurm) owns requeueing. On its signal (SIGUSR2, or
$SUBMITIT_PREEMPT_SIGNAL; SLURM sends it hydra.launcher.signal_delay_s before the time limit) its handler
resubmits the job and exits at once, which would lose every step since the last periodic checkpoint. While
training runs, CheckpointOnPreemption takes that signal first: it notes it, saves last.ckpt at the end of the
batch in flight, and only then hands the signal on to submitit's handler. The requeued job runs the same
command in the same folder and resumes from that checkpoint (training/resume.py).

Lightning's own SLURM requeueing is turned off under submitit, so that one owner requeues. Lightning still
stops training on SIGTERM (a scancel, or a preemption that SLURM signals that way); the checkpoint is saved
then too, before it stops.
"""

import logging
import os
import signal
import threading
from pathlib import Path

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)


def requeue_signal() -> signal.Signals:
    """The signal submitit requeues a job on."""
    from submitit import JobEnvironment

    return signal.Signals[f"SIG{JobEnvironment.USR_SIG}"]


def cluster_plugins() -> list:
    """Lightning's SLURM environment without its auto-requeue, for a job submitit runs on SLURM: submitit's
    requeue (hydra.launcher.max_num_timeout) is the one that resubmits it."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


class CheckpointOnPreemption(L.Callback):
    """While training, the requeue signal saves `checkpoint` at the next batch end, then reaches the handler
    that was there before (submitit's: it requeues the job and exits). Nothing changes where no handler
    awaits the signal (a job not started by submitit)."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = Path(checkpoint)
        self.signum = requeue_signal()
        self.owner = None  # the handler the signal goes on to once the checkpoint is saved
        self.received: tuple | None = None  # (signum, frame) of the signal, once it came

    def on_train_start(self, trainer, pl_module) -> None:
        # Here, not earlier: Lightning installs its own handlers just before training starts.
        handler = signal.getsignal(self.signum)
        if callable(handler) and threading.current_thread() is threading.main_thread():
            self.owner = handler
            signal.signal(self.signum, self.note)

    def note(self, signum, frame) -> None:
        self.received = (signum, frame)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.checkpoint_if_asked(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.checkpoint_if_asked(trainer)  # the signal came during the last batch: its steps are kept as well
        self.restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.restore()

    def checkpoint_if_asked(self, trainer) -> None:
        asked = self.received is not None or trainer.received_sigterm
        # Every process saves (the checkpoint gathers each one's RNG state) once any of them was signalled.
        if not trainer.strategy.reduce_boolean_decision(asked, all=False):
            return
        trainer.save_checkpoint(self.checkpoint)
        log.warning("signalled to stop at step %d: the job resumes from %s when it runs again", trainer.global_step,
                    self.checkpoint)
        if self.received is not None:
            owner, (signum, frame) = self.owner, self.received
            self.restore()
            owner(signum, frame)

    def restore(self) -> None:
        if self.owner is not None:
            signal.signal(self.signum, self.owner)
        self.owner, self.received = None, None
