"""The `data=` group's keys (conf/data/*.yaml), and the dataset entries of eval.datasets and data.mixture.datasets."""

from dataclasses import dataclass
from typing import Any, Optional, Union

from splade_peft.errors import ConfigError
from splade_peft.registry import Registry
from splade_peft.settings import Number, Section, entries, section, setting

# `data.source` (and each dataset entry's `source`): loaders registered in splade_peft/data/sources.py.
DATA_SOURCES = Registry("data source", "data.source", builtins="splade_peft.data.sources")
# `data.negatives_source`: where a training query's negative candidates come from (training/dataset.py);
# `from_file`: read from data.negatives_file, else drawn from the top data.negatives_depth of a ranking.
NEGATIVE_SOURCES = Registry("negatives source", "data.negatives_source", builtins="splade_peft.training.dataset",
                            from_file=False)
# `data.teacher.scorers`: scorers of the training pairs (training/teacher_scoring.py), ensembled in the order
# they are registered; `own_scale`: it scores on the student's scale, which the ensemble then takes.
TEACHER_SCORERS = Registry("teacher scorer", "data.teacher.scorers", builtins="splade_peft.training.teacher_scoring",
                           own_scale=False)

UNKNOWN_ID_POLICIES = ("error", "drop")
SAMPLINGS = ("uniform", "teacher_rank")
TRAINING_LAYOUTS = ("flagembedding", "triples")
ENSEMBLE_RULES = ("aligned", "zscore_mean", "mean")
MISSING_POLICIES = ("error", "skip")
MIXTURE_SAMPLINGS = ("round_robin", "proportional")
DEV_SPLIT = "dev"  # eval.validation_split naming the split carved from the training queries (data.dev)


@dataclass
class CollectionSpec(Section):
    """Which collection (data.* itself, or an entry of eval.datasets / data.mixture.datasets), as
    splade_peft.data.sources.load_data reads it. An entry may leave out the keys that have a default here."""

    name: Optional[str] = None
    source: str = setting()
    path: Optional[str] = None
    hub_id: Optional[str] = None
    unknown_ids: str = setting("error", one_of=UNKNOWN_ID_POLICIES)
    max_queries: Optional[int] = None
    max_documents: Optional[int] = None

    def check(self, path: str, root) -> None:
        DATA_SOURCES.get(self.source, key=f"{path}.source")


@dataclass
class DatasetSpec(CollectionSpec):
    """eval.datasets.<name> and data.mixture.datasets.<name>: a collection and the split to read; for an
    evaluation entry, the suite it is averaged in (eval=beir13 ...), its own text lengths where the dataset's
    texts need them (null: model.query_max_length / doc_max_length) and BEIR's self-retrieval rule."""

    split: str = setting()
    suite: Optional[str] = None
    query_max_length: Optional[int] = setting(None, at_least=1)
    doc_max_length: Optional[int] = setting(None, at_least=1)
    ignore_identical_ids: bool = False


@dataclass
class TeacherConfig(Section):
    scorers: list[str] = setting()
    checkpoint: Optional[str] = setting()
    files: list[str] = setting()
    ensemble: str = setting(one_of=ENSEMBLE_RULES)
    weights: list[Number] = setting(allows=lambda v: all(w >= 0 for w in v) and (not v or sum(v) > 0),
                                   says="one number >= 0 per teacher, not all 0 ([]: equal)")
    missing: str = setting(one_of=MISSING_POLICIES)
    allow_pickle: bool = setting()
    from_training_file: bool = setting()

    def check(self, path: str, root) -> None:
        for scorer in self.scorers:
            TEACHER_SCORERS.get(scorer, key=f"{path}.scorers")


@dataclass
class MixtureConfig(Section):
    sampling: str = setting(one_of=MIXTURE_SAMPLINGS)
    datasets: dict[str, Any] = entries(DatasetSpec)


@dataclass
class DevConfig(Section):
    """data.dev: the dev split carved from the training queries (splade_peft/data/dev_split.py)."""

    queries: int = setting(at_least=0, note="0: no dev split")
    seed: int = setting()
    clean_pools: bool = setting()


@dataclass
class DataConfig(CollectionSpec):
    train_split: str = setting()
    eval_split: str = setting()
    negatives: int = setting(at_least=1, at_most=64)
    negatives_source: str = setting()
    negatives_depth: int = setting(at_least=1)
    negatives_file: Optional[str] = setting()
    hard_negative_systems: Optional[list[str]] = setting()
    sampling: str = setting(one_of=SAMPLINGS)
    training_file: Optional[str] = setting()
    training_layout: str = setting(one_of=TRAINING_LAYOUTS)
    teacher: TeacherConfig = section(TeacherConfig)
    dev: DevConfig = section(DevConfig)
    batch_size: int = setting(at_least=1)
    mixture: MixtureConfig = section(MixtureConfig)
    num_workers: int = setting(at_least=0)
    pin_memory: Union[bool, str] = setting(one_of=("auto", True, False), says="auto, true or false")
    prefetch_factor: int = setting(at_least=1)
    persistent_workers: bool = setting()

    @property
    def has_teacher(self) -> bool:
        """Teacher scores reach training: from the training file, or from scorers / score files."""
        if self.training_file:
            return self.teacher.from_training_file
        return bool(self.teacher.scorers or self.teacher.files)

    def check(self, path: str, root) -> None:
        super().check(path, root)
        if self.source == "beir" and not self.path:
            raise ConfigError("data.path", "data.source=beir needs a folder", "set data.path=<BEIR folder>")
        from_file = NEGATIVE_SOURCES.get(self.negatives_source).from_file
        if not self.training_file:
            if not from_file and self.negatives > self.negatives_depth:
                raise ConfigError("data.negatives", f"{self.negatives} is more than the candidate pool "
                                  f"(data.negatives_depth={self.negatives_depth})",
                                  "lower data.negatives or raise data.negatives_depth")
            if from_file and not self.negatives_file:
                raise ConfigError("data.negatives_file", f"data.negatives_source={self.negatives_source} needs a file",
                                  "set data.negatives_file=<mined FlagEmbedding JSONL or msmarco-hard-negatives file>")
        if self.sampling == "teacher_rank" and not self.has_teacher:
            raise ConfigError("data.sampling", "teacher_rank needs teacher scores",
                              "set data.teacher.scorers or data.teacher.files, or data.sampling=uniform")
