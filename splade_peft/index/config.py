"""The `index=` group's keys (conf/index/*.yaml)."""

from dataclasses import dataclass
from typing import Any

from splade_peft.errors import ConfigError
from splade_peft.settings import Number, Section, free_mapping, setting

INDEX_BACKENDS = ("lucene", "faiss")
SHARD_LAUNCHERS = ("local", "submitit")


@dataclass
class IndexConfig(Section):
    name: str = setting(one_of=INDEX_BACKENDS)
    quantization: Number = setting(above=0)
    shards: int = setting(at_least=1)
    threads: int = setting(at_least=1)
    tokens_per_batch: int = setting(at_least=1)
    max_batch_size: int = setting(at_least=1)
    encode_shards: int = setting(at_least=1)
    encode_processes: int = setting(at_least=1)
    shard_launcher: str = setting(one_of=SHARD_LAUNCHERS)
    submitit: dict[str, Any] = free_mapping()

    def check(self, path: str, root) -> None:
        # A dense encoder needs the Faiss index, every sparse one (CSR included) the Lucene impact index.
        dense = root.encoder.name == "dense"
        if dense != (self.name == "faiss"):
            wanted = "faiss" if dense else "lucene"
            raise ConfigError("index.name", f"encoder={root.encoder.name} cannot use index={self.name}",
                              f"use index={wanted} with encoder={root.encoder.name} (faiss: dense, lucene: sparse)")
