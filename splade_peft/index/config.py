"""The `index=` group's keys (conf/index/*.yaml)."""

from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from splade_peft.errors import ConfigError
from splade_peft.model.config import ENCODERS
from splade_peft.registry import Registry
from splade_peft.settings import Number, Section, free_mapping, setting

# `index.name`: how an encoder's vectors are indexed and searched, each registered next to its implementation
# (evaluation/retrieval.py, evaluation/dense_retrieval.py); `sparse`: it takes vocabulary (impact) vectors;
# `reads`: the index keys of its own (index.seismic); `fingerprinted`: its name and `reads` are part of what an
# evaluation stage's result depends on (evaluation_inputs), so a cached run of another engine is not reused.
SEARCH_ENGINES = Registry("search engine", "index.name",
                          builtins=("splade_peft.evaluation.retrieval", "splade_peft.evaluation.dense_retrieval"),
                          sparse=True, sharded_encoding=False, reads=(), fingerprinted=True)
SHARD_LAUNCHERS = ("local", "submitit")
# index=seismic: the keyword arguments of SeismicIndex.build_from_dataset and SeismicIndex.batch_search (0.5.4) that
# `index.seismic` may set; thread counts come from index.threads and eval.search_threads instead.
BUILD_PARAMETERS = ("n_postings", "centroid_fraction", "min_cluster_size", "summary_energy", "max_fraction",
                    "doc_cut", "nknn", "batched_indexing")
SEARCH_PARAMETERS = ("query_cut", "heap_factor", "n_knn", "sorted")
REQUIRED_SEARCH_PARAMETERS = ("query_cut", "heap_factor")  # batch_search has no default for them


def check_parameters(parameters: Mapping, key: str = "index.seismic") -> None:
    """A ConfigError naming the key for a parameter Seismic does not take, or a missing search parameter."""
    for name in parameters:
        if name not in BUILD_PARAMETERS + SEARCH_PARAMETERS:
            raise ConfigError(f"{key}.{name}", "is not a Seismic build or search parameter",
                              f"use one of {', '.join(BUILD_PARAMETERS + SEARCH_PARAMETERS)}")
    for name in REQUIRED_SEARCH_PARAMETERS:
        if name not in parameters:
            raise ConfigError(f"{key}.{name}", "is missing", "set it (conf/index/seismic.yaml has the defaults)")


@dataclass
class IndexConfig(Section):
    name: str = setting()
    quantization: Number = setting(above=0)
    shards: int = setting(at_least=1)
    threads: int = setting(at_least=1)
    tokens_per_batch: int = setting(at_least=1)
    max_batch_size: int = setting(at_least=1)
    encode_shards: int = setting(at_least=1)
    encode_processes: int = setting(at_least=1)
    shard_launcher: str = setting(one_of=SHARD_LAUNCHERS)
    submitit: dict[str, Any] = free_mapping()
    # index=seismic: SeismicIndex build and search parameters (conf/index/seismic.yaml), passed on as they are.
    seismic: dict[str, Any] = free_mapping()

    def check(self, path: str, root) -> None:
        sparse = ENCODERS.get(root.encoder.name).sparse
        if SEARCH_ENGINES.get(self.name).sparse != sparse:
            fitting = [engine.name for engine in SEARCH_ENGINES if engine.sparse == sparse]
            raise ConfigError("index.name", f"encoder={root.encoder.name} cannot use index={self.name}",
                              f"use index={' or index='.join(fitting)} with encoder={root.encoder.name} "
                              f"({'sparse' if sparse else 'dense'} vectors)")
        if self.name == "seismic":
            check_parameters(self.seismic)
