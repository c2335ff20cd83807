"""The `eval=` group's keys (conf/eval/*.yaml)."""

from dataclasses import dataclass
from typing import Any, Optional

from splade_peft.data.config import DatasetSpec
from splade_peft.settings import Section, entries, setting


@dataclass
class EvalConfig(Section):
    datasets: dict[str, Any] = entries(DatasetSpec)
    k: int = setting(at_least=1)
    search_threads: int = setting(at_least=1)
    bm25: bool = setting()
    zero_shot: bool = setting()
    validate_every_n_steps: int = setting(at_least=0, note="0: off")
    validation_split: str = setting()
    validation_max_queries: Optional[int] = setting(at_least=1)
    validation_max_documents: Optional[int] = setting(at_least=1)
