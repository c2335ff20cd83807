"""What a job is doing while it works: one log line per stage with its duration, and progress bars that
show only in an interactive terminal (a sweep's log files get the stage lines, not bar redraws)."""

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

log = logging.getLogger("splade_peft.progress")


def interactive() -> bool:
    return sys.stderr.isatty()


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Log `stage <name>: started`, then `finished in N s` (or `failed after N s`)."""
    log.info("stage %s: started", name)
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        log.info("stage %s: failed after %.1f s", name, time.perf_counter() - started)
        raise
    log.info("stage %s: finished in %.1f s", name, time.perf_counter() - started)


def bar(iterable: Iterable, total: int | None = None, desc: str | None = None) -> Iterable:
    """`iterable` with a tqdm bar on an interactive stderr; `iterable` itself otherwise."""
    if not interactive():
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
