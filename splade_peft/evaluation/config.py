"""The `eval=` group's keys (conf/eval/*.yaml)."""

from dataclasses import dataclass
from typing import Any, Optional

from splade_peft.data.config import DEV_SPLIT, DatasetSpec
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
    validation_split: str = setting(note="dev: the split carved from training (data.dev), else a split by name")
    validation_max_queries: Optional[int] = setting(at_least=1)
    validation_max_documents: Optional[int] = setting(at_least=1)
    allow_test_selection: bool = setting()
    selection_only: bool = setting()
    local_copies: Optional[str] = setting(note="null: hub entries are read from the hub")

    def check_selection_only(self, root) -> None:
        if root.lora.method == "frozen":
            raise ConfigError("eval.selection_only", "a selection job trains and reports its dev figure, and "
                              "lora=frozen trains nothing", "set eval.selection_only=false to evaluate a frozen model")
        if self.validation_split != DEV_SPLIT:
            raise ConfigError("eval.selection_only", f"a selection job is scored on dev only, and "
                              f"eval.validation_split={self.validation_split}", "set eval.validation_split=dev")
        check_dev_split(root)

    def check(self, path: str, root) -> None:
        if self.selection_only:
            self.check_selection_only(root)
        self.check_selection(root)
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

    def check_selection(self, root) -> None:
        """A training job's validation split is what it chooses on (the kept checkpoint, early stopping, its
        dev figure: the objective of hparams_search and of the sweep report's best row)."""
        if root.lora.method == "frozen":
            return
        if self.validation_split == DEV_SPLIT and (selectors(root) or self.validate_every_n_steps):
            check_dev_split(root)
        if not self.allow_test_selection:
            for key, problem, fix in self.test_selection(root):
                raise ConfigError(key, problem, fix)

    def test_selection(self, root) -> list[tuple[str, str, str]]:
        """(key, problem, fix) for each way a training job reads a split it evaluates: choosing on it, or
        training on it. Refused unless eval.allow_test_selection=true, which results.json records as warnings."""
        if root.lora.method == "frozen":
            return []
        evaluated, data, found = evaluated_splits(root), root.data, []
        if self.validation_split != DEV_SPLIT and self.validation_split in evaluated:
            found.append(("eval.validation_split", f"{self.validation_split} is a split this job evaluates, and the "
                          "validation split is what keep_best, early stopping, hparams_search and the sweep report "
                          "choose on", "use eval.validation_split=dev (carved from training), or set "
                          "eval.allow_test_selection=true to choose on a test split"))
        if not data.training_file and data.train_split in evaluated:
            found.append(("data.train_split", f"{data.train_split} is a split this job also evaluates",
                          "train on another split (e.g. data.train_split=train), or set "
                          "eval.allow_test_selection=true to evaluate on the training split"))
        return found


def allowed_test_selection_warnings(root) -> list[str]:
    """The lines results.json and the job's table show for what eval.allow_test_selection=true allowed."""
    return [f"{key}: {problem} (allowed by eval.allow_test_selection=true)"
            for key, problem, _ in root.eval.test_selection(root)]


def selectors(root) -> list[str]:
    """The keys by which a job chooses on its validation split during or after training: the kept checkpoint,
    early stopping, and a hyperparameter search (hparams_search=optuna sets sweep.selects)."""
    training = root.training
    chosen = {"training.keep_best": training.keep_best, "training.early_stopping_patience": training.early_stopping_patience,
              "sweep.selects": root.sweep.selects}
    return [key for key, on in chosen.items() if on]


def evaluated_splits(root) -> set[str]:
    """data.eval_split and the splits of the training collection that eval.datasets evaluates."""
    data = root.data
    splits = {data.eval_split}
    for entry in root.eval.datasets.values():
        same = (entry.get("source"), entry.get("path"), entry.get("hub_id")) == (data.source, data.path, data.hub_id)
        if same and entry.get("name") in (None, data.name):
            splits.add(entry.get("split"))
    return splits


def check_dev_split(root) -> None:
    data = root.data
    if data.training_file:
        raise ConfigError("eval.validation_split", "dev is carved from the collection's training queries, and "
                          "data.training_file trains on its own", "set eval.validation_split=<a held-out split>")
    if not data.dev.queries:
        raise ConfigError("eval.validation_split", "dev is the split carved from training, and data.dev.queries=0 "
                          "carves none", "set data.dev.queries=<n> (e.g. 50), or eval.validation_split=<a held-out split>")
