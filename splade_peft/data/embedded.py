"""The project's own offline collection: known-item pairs mined from the Python standard library's docstrings.

Every public module, class, function and method with a docstring is a definition. A definition whose
docstring has a short summary paragraph and a longer body is a known item: its query is the summary, its
document is the qualified signature (title) and the rest of the docstring (text), so the query is not copied
into its document. The other definitions are distractor documents (signature and whole docstring), unless
their summary is one of the queries. Sources are parsed with `ast`, never imported (no side effects), so the
build is deterministic for a given Python version.
"""

import ast
import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from splade_peft.records import staged

COLLECTION_NAME = "stdlib-docstrings"
SPLITS = ("train", "dev", "test")
EXCLUDED_DIRS = frozenset({"test", "tests", "idlelib", "lib2to3", "turtledemo"})
QUERY_WORDS = (4, 30)
MIN_BODY_WORDS = 10
MAX_DOCUMENT_WORDS = 150
SPLIT_BUCKETS = 100
# Per cent of top-level modules (by hash) in test and dev. One top-level module can hold a hundred items
# (asyncio, tkinter, turtle), so the query shares differ from these; tuned on Python 3.11 to give test and dev
# at least 300 and 200 queries.
TEST_BUCKETS = range(0, 11)
DEV_BUCKETS = range(11, 25)

Definition = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class DocumentedDefinition:
    qualified_name: str
    signature: str
    summary: str
    body: str

    @property
    def top_module(self) -> str:
        return self.qualified_name.split(".", 1)[0]

    @property
    def is_known_item(self) -> bool:
        low, high = QUERY_WORDS
        # A summary restating the call ("name(a, b) -> c") is a signature, not what a user would type.
        restates_call = self.summary.startswith(self.qualified_name.rsplit(".", 1)[-1] + "(")
        # Some docstrings repeat their summary further down; such a document would contain its query verbatim.
        copied = self.summary in self.signature or self.summary in self.body
        words_ok = low <= len(self.summary.split()) <= high and len(self.body.split()) >= MIN_BODY_WORDS
        return words_ok and not restates_call and not copied


@dataclass(frozen=True)
class Selection:
    """Known items and distractors: disjoint, together the corpus."""

    known_items: list[DocumentedDefinition]
    distractors: list[DocumentedDefinition]


def embedded_folder(cache_dir: str | Path) -> Path:
    """Where the collection for the running Python version lives under a cache folder."""
    version = f"py{sys.version_info.major}{sys.version_info.minor}"
    return Path(cache_dir) / "embedded" / f"{COLLECTION_NAME}-{version}"


def build_embedded_collection(folder: Path) -> Path:
    """Mine the stdlib and write the collection in BEIR layout to `folder` atomically; return `folder`."""
    # Another process may publish the same deterministic build first: then theirs is kept.
    with staged(Path(folder), folder=True, keep_existing=True) as staging:
        write_beir_folder(staging, select(mine_definitions(stdlib_root())))
    return Path(folder)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_module_files(root: Path) -> list[tuple[str, Path]]:
    """(module name, file) for every public stdlib source file, sorted by module name."""
    modules = []
    for folder, subfolders, filenames in os.walk(root):
        # Pruning here keeps the walk out of test/ and site-packages, which hold most of the files.
        subfolders[:] = [name for name in subfolders if is_public_package(name)]
        for filename in filenames:
            if is_public_module_file(filename):
                file = Path(folder, filename)
                modules.append((module_name(file.relative_to(root)), file))
    return sorted(modules)


def is_public_package(folder_name: str) -> bool:
    return folder_name.isidentifier() and not folder_name.startswith("_") and folder_name not in EXCLUDED_DIRS


def is_public_module_file(filename: str) -> bool:
    stem, suffix = os.path.splitext(filename)
    public = stem == "__init__" or not stem.startswith("_")
    return suffix == ".py" and stem.isidentifier() and public


def module_name(relative: Path) -> str:
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def mine_definitions(root: Path) -> list[DocumentedDefinition]:
    """Documented public definitions of every public module, in module order; first of a repeated name kept."""
    definitions, seen_names = [], set()
    for module, file in stdlib_module_files(root):
        for definition in module_definitions(module, file):
            if definition.qualified_name not in seen_names:
                seen_names.add(definition.qualified_name)
                definitions.append(definition)
    return definitions


def module_definitions(module: str, file: Path) -> Iterator[DocumentedDefinition]:
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except (SyntaxError, ValueError):
        # A few stdlib files are templates or target another Python version; they hold no API to mine.
        return
    for qualified_name, node in public_definitions(module, tree):
        documented = documented_definition(qualified_name, node)
        if documented is not None:
            yield documented


def public_definitions(qualified_name: str, node: Definition) -> Iterator[tuple[str, Definition]]:
    """The node itself, then its public classes and functions; recurses into classes, not into functions."""
    yield qualified_name, node
    if isinstance(node, (ast.Module, ast.ClassDef)):
        for child in node.body:
            if is_public_definition(child):
                yield from public_definitions(f"{qualified_name}.{child.name}", child)


def is_public_definition(node: ast.AST) -> bool:
    definition = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return isinstance(node, definition) and not node.name.startswith("_")


def documented_definition(qualified_name: str, node: Definition) -> DocumentedDefinition | None:
    docstring = ast.get_docstring(node, clean=True)
    if not docstring:
        return None
    summary, body = split_docstring(docstring)
    return DocumentedDefinition(qualified_name, signature(qualified_name, node), summary, body)


def split_docstring(docstring: str) -> tuple[str, str]:
    """(summary, body): the first paragraph and the rest of the docstring, each on one line."""
    paragraphs = docstring.strip().split("\n\n", 1)
    rest = paragraphs[1] if len(paragraphs) > 1 else ""
    return " ".join(paragraphs[0].split()), " ".join(rest.split())


def signature(qualified_name: str, node: Definition) -> str:
    if isinstance(node, ast.Module):
        return f"module {qualified_name}"
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(base) for base in node.bases)
        return f"class {qualified_name}({bases})" if bases else f"class {qualified_name}"
    return f"{qualified_name}({ast.unparse(node.args)})"


def select(definitions: list[DocumentedDefinition]) -> Selection:
    """Known items with distinct queries (first kept); distractors whose summary is no query."""
    known_items, queries = [], set()
    for definition in definitions:
        query = comparable(definition.summary)
        if definition.is_known_item and query not in queries:
            known_items.append(definition)
            queries.add(query)
    distractors = [d for d in definitions if comparable(d.summary) not in queries]
    return Selection(known_items, distractors)


def comparable(text: str) -> str:
    return " ".join(text.casefold().rstrip(".").split())


def split_of(top_module: str) -> str:
    """Train/dev/test by a stable hash of the top-level module, so no module is in two splits."""
    bucket = int(hashlib.sha1(top_module.encode()).hexdigest(), 16) % SPLIT_BUCKETS
    if bucket in TEST_BUCKETS:
        return "test"
    if bucket in DEV_BUCKETS:
        return "dev"
    return "train"


def doc_id(definition: DocumentedDefinition) -> str:
    return f"d:{definition.qualified_name}"


def query_id(definition: DocumentedDefinition) -> str:
    return f"q:{definition.qualified_name}"


def document_record(definition: DocumentedDefinition, has_query: bool) -> dict[str, str]:
    # A known item's summary is its query, so its document keeps only the rest of the docstring.
    text = definition.body if has_query else f"{definition.summary} {definition.body}"
    words = text.split()[:MAX_DOCUMENT_WORDS]
    return {"_id": doc_id(definition), "title": definition.signature, "text": " ".join(words)}


def write_beir_folder(folder: Path, selection: Selection) -> None:
    known = set(selection.known_items)
    documents = sorted(selection.known_items + selection.distractors, key=lambda d: d.qualified_name)
    write_jsonl(folder / "corpus.jsonl", (document_record(d, d in known) for d in documents))
    write_jsonl(folder / "queries.jsonl", ({"_id": query_id(d), "text": d.summary} for d in selection.known_items))
    (folder / "qrels").mkdir()
    for split in SPLITS:
        write_qrels(folder / "qrels" / f"{split}.tsv", items_in_split(selection.known_items, split))
    (folder / "README.md").write_text(provenance(selection), encoding="utf-8")


def items_in_split(known_items: list[DocumentedDefinition], split: str) -> list[DocumentedDefinition]:
    return [item for item in known_items if split_of(item.top_module) == split]


def write_jsonl(file: Path, records: Iterable[dict[str, str]]) -> None:
    with file.open("w", encoding="utf-8", newline="\n") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_qrels(file: Path, known_items: list[DocumentedDefinition]) -> None:
    with file.open("w", encoding="utf-8", newline="\n") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for item in known_items:
            out.write(f"{query_id(item)}\t{doc_id(item)}\t1\n")


def provenance(selection: Selection) -> str:
    version = ".".join(str(part) for part in sys.version_info[:3])
    documents = len(selection.known_items) + len(selection.distractors)
    test, dev = f"{TEST_BUCKETS.start}-{TEST_BUCKETS.stop - 1}", f"{DEV_BUCKETS.start}-{DEV_BUCKETS.stop - 1}"
    rows = "".join(f"| {s} | {len(items_in_split(selection.known_items, s))} |\n" for s in SPLITS)
    return f"""# {COLLECTION_NAME}

Known-item retrieval pairs mined from the docstrings of the Python {version} standard library by
`splade_peft.data.embedded`. Sources are parsed with `ast`, never imported.

- Sources: every `.py` file under the stdlib folder whose path is an importable module name, sorted by that
  name, except folders `test`, `tests`, `idlelib`, `lib2to3`, `turtledemo` and `site-packages`, folders
  starting with `_`, and private modules (file names starting with `_`; `__init__.py` kept).
- Definitions: public modules, public classes and functions at module level, and public classes and methods
  inside those classes (recursively), each with a docstring. Ids are `d:`/`q:` + the qualified name.
- Known item: a docstring whose summary (first paragraph) has {QUERY_WORDS[0]}-{QUERY_WORDS[1]} words, does not
  restate the call and is not repeated in the signature or the rest, which has at least {MIN_BODY_WORDS} words.
  Query = the summary (identical queries: first kept). Document: title = qualified signature, text = the
  rest of the docstring.
- Distractor: any other definition whose summary is not a query; title = signature, text = whole docstring.
- Document texts are cut to their first {MAX_DOCUMENT_WORDS} words.
- Splits by top-level module: sha1 of its name modulo {SPLIT_BUCKETS}, test {test}, dev {dev}, train the rest;
  no module is in two splits. The corpus holds every split's documents; each query has one relevant
  document, grade 1.

Documents: {documents} ({len(selection.known_items)} known items, the rest distractors).

| split | queries |
|---|---|
{rows}"""
