"""The `eval=` group's keys (conf/eval/*.yaml)."""

from dataclasses import dataclass
from typing import Any, Optional

from splade_peft.data.config import DatasetSpec
from splade_peft.errors import ConfigError
from splade_peft.settings import Number, Section, entries, setting


@dataclass
class EvalConfig(Section):
    datasets: dict[str, Any] = entries(DatasetSpec)
    k: int = setting(at_least=1)
    search_threads: int = setting(at_least=1)
    bm25: bool = setting()
    zero_shot: bool = setting()
    fusion: Optional[Number] = setting(at_least=0, at_most=1, note="null: no fused row")
    adapter_scale: Number = setting(at_least=0, note="1: the trained adapter as it is")
    validate_every_n_steps: int = setting(at_least=0, note="0: off")
    validation_split: str = setting()
    validation_max_queries: Optional[int] = setting(at_least=1)
    validation_max_documents: Optional[int] = setting(at_least=1)

    def check(self, path: str, root) -> None:
        if self.fusion is not None and not (self.bm25 and self.zero_shot):
            raise ConfigError("eval.fusion", "fuses the BM25 and zero-shot rows, and one of them is off",
                              "set eval.bm25=true eval.zero_shot=true, or eval.fusion=null")
        if self.adapter_scale == 1:
            return
        lora = root.lora
        evaluates_saved = lora.method == "frozen" and root.model.adapter
        if not (evaluates_saved or (lora.method == "lora" and not lora.use_dora)):
            # DoRA's trained magnitudes are not part of the scaled update: scale 0 would not be the checkpoint.
            raise ConfigError("eval.adapter_scale", f"{self.adapter_scale} scales a LoRA update, and lora.method="
                              f"{lora.method}{' with DoRA' if lora.use_dora else ''} has none to scale",
                              "use lora=lora (no DoRA), or model.adapter=<a LoRA job> lora=frozen, or eval.adapter_scale=1")
