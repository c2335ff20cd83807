"""Peak resident memory of a block of code, sampled from /proc (CPU tensors are invisible to tracemalloc)."""

import resource
import threading
import time
from contextlib import contextmanager

import torch

_PAGE_BYTES = resource.getpagesize()


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

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield measured
    finally:
        stop.set()
        sampler.join()
        measured.peak_mb = max(measured.peak_mb, current_rss_mb())
        if torch.cuda.is_available():
            measured.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20
