"""The job's device: where the encoder trains, and where every other stage that runs it (zero-shot
row, SPLADE teacher scoring, the backbone check, evaluation after training, mining) puts it too, with the
trainer's precision. Under DDP each process works on its own GPU, the one Lightning gives its rank."""

import contextlib
from typing import NamedTuple

import torch
from omegaconf import OmegaConf

from splade_peft.errors import ConfigError

CUDA_ACCELERATORS = ("gpu", "cuda", "auto")  # gpu and cuda: a GPU or a ConfigError; auto: else the CPU


class DeviceKeys(NamedTuple):
    """How the user sets the accelerator and the devices, for the one line that refuses them."""

    accelerator: str = "trainer.accelerator"
    devices: str = "trainer.devices"
    on_cpu: str = "trainer=cpu"


TRAINER_KEYS = DeviceKeys()


def job_device(trainer_cfg, keys: DeviceKeys = TRAINER_KEYS) -> torch.device:
    """This process's device: CUDA when trainer.accelerator asks for it (gpu, cuda; auto when a GPU is visible),
    the GPU Lightning gives this process's rank among trainer.devices; else the CPU. A GPU asked for and not
    there is a ConfigError: found at fit, it would come after hours of CPU encoding."""
    accelerator = str(trainer_cfg.get("accelerator", "cpu"))
    if accelerator not in CUDA_ACCELERATORS:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if accelerator == "auto":
            return torch.device("cpu")
        raise ConfigError(keys.accelerator, f"is {accelerator} and no CUDA device is visible here",
                          f"use {keys.on_cpu} (or {keys.accelerator}=auto to fall back to the CPU), or run where "
                          "CUDA is visible")
    return torch.device("cuda", gpu_indices(trainer_cfg.get("devices", 1), keys)[local_rank()])


def gpu_indices(devices, keys: DeviceKeys = TRAINER_KEYS) -> list[int]:
    """The GPU indices trainer.devices names, read as Lightning's Trainer reads them: a count n is 0..n-1, a list
    (or "1,3") names indices, -1 and auto are every visible GPU."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.accelerators import CUDAAccelerator

    requested = OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else devices
    if requested == "auto":
        requested = CUDAAccelerator.auto_device_count()
    visible = list(range(torch.cuda.device_count()))
    try:
        indices = CUDAAccelerator.parse_devices(requested)
    except (MisconfigurationException, TypeError, ValueError):
        indices = None
    if not indices:
        raise ConfigError(keys.devices, f"{devices!r} is not a count or a list of the GPUs visible here {visible}",
                          "give a count, or indices of visible GPUs (CUDA_VISIBLE_DEVICES numbers them from 0)")
    return indices


def local_rank() -> int:
    """This process's rank among the job's processes on its machine, from where Lightning's Trainer reads it:
    torchrun's or SLURM's variables when they launched it, else LOCAL_RANK (set by Lightning's DDP launcher on
    the processes it starts; 0 in the first)."""
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment, TorchElasticEnvironment

    for environment in (TorchElasticEnvironment, SLURMEnvironment):
        if environment.detect():
            return environment().local_rank()
    return LightningEnvironment().local_rank()


def set_up_job_device(trainer_cfg) -> torch.device:
    """At a job's start, before any stage: refuse a GPU that is not there; on CUDA make this process's GPU the
    current one (so that nothing, memory statistics included, opens a context on GPU 0 from another rank) and
    run float32 matmuls in TF32, for training and inference alike."""
    device = job_device(trainer_cfg)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        use_tf32()
    return device


def use_tf32() -> None:
    """float32 matmuls and convolutions on tensor cores (TF32: fp32 range, 10-bit mantissa), as Lightning advises
    on Ampere and later. The legacy switches: mixing them with torch's fp32_precision API makes
    torch.get_float32_matmul_precision, which Lightning calls, raise."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def inference_precision(trainer_cfg, device: torch.device):
    """The trainer's precision for encoding outside Lightning: TF32 matmuls on CUDA, and bf16 autocast there when
    trainer.precision is bf16. Callers convert the encoder's output to fp32 before quantising."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    use_tf32()
    if not str(trainer_cfg.get("precision", "32-true")).startswith("bf16"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def place(module: torch.nn.Module, device: torch.device) -> torch.device:
    """Put `module` on `device` and return where it now runs. A k-bit language model inside it stays where
    bitsandbytes placed it when it was loaded (device_map), and the rest (query table, CSR, latent attention,
    sparsifiers) joins it there."""
    quantised = [m for m in module.modules() if getattr(m, "is_quantized", False)]
    if not quantised:
        module.to(device)
        return device
    device = next(quantised[0].parameters()).device
    move_around(module, {id(m) for m in quantised}, device)
    return device


def move_around(module: torch.nn.Module, kept: set[int], device: torch.device) -> None:
    """`module` on `device`, except the modules whose ids are in `kept` (and what they hold)."""
    if id(module) in kept:
        return
    if not any(id(inner) in kept for inner in module.modules()):
        module.to(device)
        return
    for parameter in module.parameters(recurse=False):
        parameter.data = parameter.data.to(device)
    for name, buffer in module.named_buffers(recurse=False):
        setattr(module, name, buffer.to(device))
    for child in module.children():
        move_around(child, kept, device)


@contextlib.contextmanager
def on_job_device(module: torch.nn.Module, trainer_cfg, keys: DeviceKeys = TRAINER_KEYS):
    """`module` on the job's device with the trainer's precision for the block (Lightning's teardown leaves
    a trained module on the CPU; from_pretrained loads there)."""
    device = place(module, job_device(trainer_cfg, keys))
    with inference_precision(trainer_cfg, device):
        yield device
