"""Approximate impact search with Seismic (PyPI `pyseismic-lsr`, the `seismic` extra): the `index=seismic`
engine's index, built in memory from the same quantised `{term: int}` vectors the Lucene index holds.

Seismic prunes each posting list to its largest impacts, cuts it into blocks with a summary vector each,
and at search time skips the blocks whose summary cannot beat the current k-th score (`heap_factor`) and
reads only the query's `query_cut` largest terms: fast, and approximate. What 0.5.4 stores and accepts:

- term ids: our own integers (the first document to use a term numbers it), handed over through the
  CSR path `add_documents_by_id`. Its string path stores tokens as fixed-width numpy strings (100
  characters), where two long terms can collide, and it is the slower path; a query then names term i as
  the string "i". Its components are 16-bit: at most 65,535 distinct document terms (BERT's 30,522 fit).
- impacts: stored as float16, so integer impacts above 2,048 are rounded (quantisation 100: weights above
  20.48); SPLADE's log-saturated weights stay far below, so scores are the exact integer dot products.
- ids: query ids go over as numpy strings of the same fixed width, so we send positions and map back.

Ties are put in Lucene's order (score descending, then document id), so that where Seismic finds the
exact top k, the run equals `impact_search`'s and `ExactImpactSearcher`'s.
"""

from array import array
from collections.abc import Iterable, Mapping

import numpy as np

from splade_peft.errors import IndexingError
from splade_peft.index.config import BUILD_PARAMETERS, SEARCH_PARAMETERS, check_parameters
from splade_peft.index.impact import positive_impacts
from splade_peft.search.runs import Run

MAX_TERMS = 65_535  # Seismic 0.5.4's components are u16


class SeismicImpactSearcher:
    """A Seismic index over `docs`; `search` returns a run in the layout of `impact_search`'s."""

    def __init__(self, docs: Iterable[tuple[str, Mapping[str, int]]], parameters: Mapping, threads: int = 1):
        # Imported here: only an index=seismic job needs the optional extra, and registering the engine or
        # checking a config must work without it.
        import seismic

        check_parameters(parameters)
        self._seismic = seismic
        self._string = seismic.get_seismic_string()
        self._search_parameters = {name: parameters[name] for name in SEARCH_PARAMETERS if name in parameters}
        self._vocabulary: dict[str, int] = {}
        doc_ids, components, values, offsets = self._rows(docs)
        if not doc_ids:
            raise IndexingError("Seismic: no document has a positive impact -- nothing to index")
        dataset = seismic.SeismicDataset(dim=len(self._vocabulary))
        dataset.add_documents_by_id(doc_ids, components, values, offsets)
        build = {name: parameters[name] for name in BUILD_PARAMETERS if name in parameters}
        self._index = seismic.SeismicIndex.build_from_dataset(dataset, **build, num_threads=threads)

    def search(self, queries: Mapping[str, Mapping[str, int]], k: int, threads: int = 1) -> Run:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        encoded = {qid: self._query(query) for qid, query in queries.items()}
        sent = [qid for qid, (terms, _) in encoded.items() if len(terms)]  # an empty query matches nothing
        results = self._index.batch_search(
            np.array([str(position) for position in range(len(sent))], dtype=self._string),
            [encoded[qid][0] for qid in sent], [encoded[qid][1] for qid in sent],
            k=k, num_threads=threads, **self._search_parameters) if sent else []
        # Each hit names its query (by the position sent); the result lists are not all in the order sent.
        hits: dict[str, list] = {}
        for result in results:
            for position, score, docid in result:
                hits.setdefault(sent[int(position)], []).append((docid, float(score)))
        return {qid: lucene_order(hits.get(qid, [])) for qid in queries}

    def _rows(self, docs) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """CSR arrays of the non-empty documents; Seismic wants each row's components increasing."""
        # Typed arrays, not lists: 8 + 4 bytes an entry instead of a Python int object each (1M documents of
        # 150 terms: about 2 GB instead of 10).
        doc_ids, components, values, offsets = [], array("q"), array("f"), array("q", [0])
        for doc_id, vector in docs:
            impacts = positive_impacts(vector)
            if not impacts:
                continue
            row = sorted((self._term(term), weight) for term, weight in impacts.items())
            doc_ids.append(doc_id)
            components.extend(column for column, _ in row)
            values.extend(weight for _, weight in row)
            offsets.append(len(components))
        return (doc_ids, np.frombuffer(components, dtype=np.int64), np.frombuffer(values, dtype=np.float32),
                np.frombuffer(offsets, dtype=np.int64))

    def _term(self, term: str) -> int:
        column = self._vocabulary.setdefault(term, len(self._vocabulary))
        if column >= MAX_TERMS:
            raise IndexingError(f"Seismic 0.5.4 takes at most {MAX_TERMS} distinct terms; the corpus has more "
                                "-- use index=lucene or index=exact")
        return column

    def _query(self, query: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """(component names, weights): the query's terms that some document has; the others cannot match."""
        known = [(self._vocabulary[term], weight) for term, weight in positive_impacts(query).items()
                 if term in self._vocabulary]
        return (np.array([str(column) for column, _ in known], dtype=self._string),
                np.array([weight for _, weight in known], dtype=np.float32))


def lucene_order(hits: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """(document, score) by score descending, then id ascending."""
    return sorted(hits, key=lambda hit: (-hit[1], hit[0]))
