"""The job's device: where the encoder trains, and where every other stage that runs it (zero-shot
row, SPLADE teacher scoring, evaluation after training) puts it too, with the trainer's precision."""

import contextlib
import logging

import torch
from omegaconf import OmegaConf

log = logging.getLogger(__name__)
CUDA_ACCELERATORS = ("gpu", "cuda", "auto")


def job_device(trainer_cfg) -> torch.device:
    """CUDA (the first of trainer.devices) when trainer.accelerator asks for a GPU and one is there; else CPU."""
    accelerator = str(trainer_cfg.get("accelerator", "cpu"))
    if accelerator not in CUDA_ACCELERATORS:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if accelerator != "auto":
            log.warning("trainer.accelerator=%s but no CUDA device is visible: encoding on the CPU", accelerator)
        return torch.device("cpu")
    devices = trainer_cfg.get("devices", 1)
    # A list names the GPU indices to use; a count or "auto" starts at the first.
    first = list(devices)[0] if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)) else 0
    return torch.device("cuda", int(first))


def inference_precision(trainer_cfg, device: torch.device):
    """The trainer's precision for encoding outside Lightning: bf16 autocast and TF32 matmuls on CUDA when
    trainer.precision is bf16-mixed. Callers convert the encoder's output to fp32 before quantising."""
    if device.type != "cuda" or not str(trainer_cfg.get("precision", "32-true")).startswith("bf16"):
        return contextlib.nullcontext()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return torch.autocast("cuda", dtype=torch.bfloat16)


@contextlib.contextmanager
def on_job_device(module: torch.nn.Module, trainer_cfg):
    """`module` on the job's device with the trainer's precision for the block (Lightning's teardown leaves
    a trained module on the CPU; from_pretrained loads there)."""
    device = job_device(trainer_cfg)
    module.to(device)
    with inference_precision(trainer_cfg, device):
        yield device
