"""Memory measurement for jobs and benchmarks: the process's resident peak (Linux VmHWM, resettable), and the
peak of one block of code sampled from /proc (CPU tensors are invisible to tracemalloc). CUDA peaks are those of
the process's current GPU (device.set_up_job_device makes it the rank's), and only once the process has used
CUDA: asking earlier would open a context on GPU 0 from every process, CPU jobs and other ranks included."""

import resource
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

_PAGE_BYTES = resource.getpagesize()


def uses_cuda() -> bool:
    return torch.cuda.is_initialized()


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_BYTES / 2**20


def process_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """`peak_growth_mb`: the highest RSS seen while the block ran, minus the RSS when it started."""

    def __init__(self):
        self.start_mb = self.peak_mb = current_rss_mb()
        self.peak_cuda_mb = None

    @property
    def peak_growth_mb(self) -> float:
        return self.peak_mb - self.start_mb


@contextmanager
def peak_memory(interval_s: float = 0.005):
    measured = PeakMemory()
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            measured.peak_mb = max(measured.peak_mb, current_rss_mb())
            time.sleep(interval_s)

    if uses_cuda():
        torch.cuda.reset_peak_memory_stats()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield measured
    finally:
        stop.set()
        sampler.join()
        measured.peak_mb = max(measured.peak_mb, current_rss_mb())
        if uses_cuda():
            measured.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20


def resident_peak_mb() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return process_peak_rss_mb()


def reset_peak_memory() -> float:
    """Start the peak-memory marks afresh, so that the training peak is not the loading or zero-shot peak;
    return the resident peak so far, which the reset forgets."""
    peak_before = resident_peak_mb()
    if uses_cuda():
        torch.cuda.reset_peak_memory_stats()
    try:
        # Linux: writing 5 resets the process's resident-set high-water mark (VmHWM), see proc(5).
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return peak_before


def peak_memory_mb(prefix: str = "") -> dict:
    peak = {f"{prefix}peak_rss_mb": resident_peak_mb()}
    if uses_cuda():
        peak[f"{prefix}peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak
