"""Every config the project ships matches the config dataclasses; bad keys, types and ranges fail naming the key:
unknown keys and wrong types while Hydra composes, ranges and rules between keys in `validate`."""

import dataclasses
import subprocess
import sys
import typing

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from splade_peft.config import LOGGER_SCHEMAS, RootConfig, composition_error, validate
from splade_peft.data.config import CollectionSpec, DatasetSpec
from splade_peft.errors import ConfigError
from splade_peft.model.config import ADAPTER_METHODS, ENCODER_SCHEMAS, keys_read_by
from splade_peft.settings import Section
from tests.helpers import CONF, REPO, composed

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "paths", "sweep"))
# Options that cannot stand alone: they need a value the user supplies, or another group's option.
NEEDS = {("data", "beir"): ["data.path=/some/beir/folder"], ("data", "hub"): ["data.hub_id=BeIR/scifact"],
         ("encoder", "dense"): ["index=faiss"], ("index", "faiss"): ["encoder=dense"],
         ("sweep", "interpolation"): ["model.adapter=/a/lora/job"]}


def every_shipped_config() -> list[list[str]]:
    configs = [[]]
    for group in GROUPS:
        for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
            configs.append([f"{group}={option}", *NEEDS.get((group, option), [])])
    configs += [[f"+sweep={p.stem}", *NEEDS.get(("sweep", p.stem), [])] for p in sorted((REPO / "sweeps").glob("*.yaml"))]
    configs += [[f"+sweep={p.stem}", "experiment=smoke", *NEEDS.get(("sweep", p.stem), [])]
                for p in sorted((REPO / "sweeps").glob("*.yaml"))]
    return configs


@pytest.mark.parametrize("overrides", every_shipped_config(), ids=lambda o: " ".join(o) or "defaults")
def test_every_shipped_config_matches_the_schema(overrides):
    validate(composed(*overrides))


def composition_failure(*overrides: str) -> str:
    """The one line `python -m splade_peft <overrides>` prints for a config that does not compose."""
    with pytest.raises(ConfigCompositionException) as raised:
        composed(*overrides)
    problem = composition_error(raised.value)
    assert problem is not None, raised.value
    return str(problem)


@pytest.mark.parametrize(
    "override,key,says",
    [
        ("data.negativs=2", "data.negativs", "not a key this project reads"),
        ("lora.rank=4", "lora.rank", "not a key this project reads"),
        ("data.batch_size=eight", "data.batch_size", "use an integer"),
        ("trainer.max_steps=abc", "trainer.max_steps", "use an integer"),
        ("lora.use_rslora=3", "lora.use_rslora", "use true/false"),
        ("lora.alpha=true", "lora.alpha", "use a number"),
        ("lora.r=four", "lora.r", "use an integer"),
        ("model.name=5", "model.name", "use a string"),
        ("data.teacher.scorers=bm25", "data.teacher.scorers", "use a list"),
        ("lora.layers=[a]", "lora.layers", "use a list of integers or null"),
        ("encoder.normalize=true", "encoder.normalize", "it belongs to encoder=dense"),
        ("eval.datasets.cran={name:cran,source:beir,path:/x,split:test}", "eval.datasets.cran",
         "add it with a leading +: +eval.datasets.cran="),
    ],
)
def test_unknown_keys_and_wrong_types_fail_at_composition_naming_the_key(override, key, says):
    message = composition_failure(override)
    assert message.startswith(f"config key '{key}'") and says in message and "\n" not in message, message


@pytest.mark.parametrize(
    "override,key,says",
    [
        ("+data.negativs=2", "data.negativs", "not a key this project reads"),  # `+` forces a key into the config
        ("+lora.rank=null", "lora.rank", "not a key this project reads"),
        ("+trainer.max_step=5", "trainer.max_step", "not an argument of lightning.Trainer"),
        ("+trainer.max_epochs=abc", "trainer.max_epochs", "use an integer or null"),
        ("+logger.projekt=x", "logger.projekt", "not an argument of WandbLogger or wandb.init"),
        ("lora.r=0", "lora.r", "an integer >= 1"),
        ("lora.dropout=1.0", "lora.dropout", "[0, 1)"),
        ("index.quantization=0", "index.quantization", "a number > 0"),
        ("data.negatives=60", "data.negatives", "more than the candidate pool"),
        ("training.checkpoint_every_n_steps=0", "training.checkpoint_every_n_steps", "an integer >= 1"),
        ("data.teacher.scorers=[cross_encoder]", "data.teacher.scorers", "use one of bm25, splade"),
        ("trainer.max_steps=0", "trainer.max_steps", "an integer >= 1"),
        ("+eval.datasets.dl19={source:msmarco,path:/x}", "eval.datasets.dl19.split", "is required"),
        ("+data.mixture.datasets.cran={source:beir,path:/x,split:test,splt:1}", "data.mixture.datasets.cran.splt",
         "not a key this project reads"),
        ("+eval.datasets.cran={source:beir,path:/x,split:test,max_queries:many}", "eval.datasets.cran.max_queries",
         "use an integer or null"),
    ],
)
def test_bad_keys_and_ranges_fail_in_validate_naming_the_key(override, key, says):
    with pytest.raises(ConfigError, match=f"config key '{key}'") as raised:
        validate(composed(override))
    assert says in str(raised.value)


def test_pass_through_arguments_and_dataset_entries_are_accepted():
    cfg = composed("+trainer.max_epochs=3", "+trainer.deterministic=warn", "+logger.entity=team", "+logger.log_model=true",
                   "+eval.datasets.cran={source:beir,path:/x,split:test}", "+data.mixture.datasets.cran={source:beir,path:/x,split:test}")
    validate(cfg)
    assert cfg.trainer.max_epochs == 3 and cfg.eval.datasets.cran.split == "test"


def test_numbers_keep_their_type_and_values_their_spelling():
    """A typed config changes no value: an integer given for a number stays an integer (32, not 32.0)."""
    cfg = composed("lora.r=8", "loss.lambda_d=1e-3", "+sweep=rank")
    assert type(cfg.lora.alpha) is int and cfg.lora.alpha == 8  # the study sets alpha: ${lora.r}
    assert type(cfg.index.quantization) is int and type(cfg.loss.lambda_d) is float
    assert OmegaConf.to_container(composed("lora.alpha=16"), resolve=True)["lora"]["alpha"] == 16


def every_section(cls=RootConfig, seen=None) -> set:
    seen = set() if seen is None else seen
    for f in dataclasses.fields(cls):
        for candidate in (f.type, *typing.get_args(f.type), f.metadata.get("entries")):
            if isinstance(candidate, type) and issubclass(candidate, Section) and candidate not in seen:
                seen.add(candidate)
                every_section(candidate, seen)
    return seen | set(ENCODER_SCHEMAS.values()) | set(LOGGER_SCHEMAS.values())


@pytest.mark.parametrize("overrides", [[], ["encoder=csr"], ["encoder=dense", "index=faiss"], ["model=tiny"]])
def test_every_key_is_one_dataclass_field_whose_value_is_in_yaml(overrides):
    """The rule for adding a key (splade_peft/config.py): a field, and its value in the group's YAML file."""
    assert not OmegaConf.missing_keys(composed(*overrides))
    optional_in_entries = {(CollectionSpec, name) for name in ("name", "path", "hub_id", "unknown_ids", "max_queries", "max_documents")}
    optional_in_entries |= {(DatasetSpec, name) for name in ("suite", "query_max_length", "doc_max_length", "ignore_identical_ids")}
    for section in every_section():
        for f in dataclasses.fields(section):
            owner = next(c for c in section.__mro__ if f.name in getattr(c, "__annotations__", {}))
            assert f.default in (dataclasses.MISSING, "???") or (owner, f.name) in optional_in_entries, (section, f.name)


def test_each_adapter_method_registers_the_lora_keys_it_reads():
    builtins = {"lora", "adalora", "ia3", "vera", "loha", "lokr", "full", "frozen"}  # tests may register more
    assert builtins <= set(ADAPTER_METHODS.names())
    assert {m for m in builtins if "r" in keys_read_by(m)} == {"lora", "adalora", "vera", "loha", "lokr"}
    assert keys_read_by("ia3") == ["layers", "target_modules", "train_head"]
    assert keys_read_by("full") == []


def test_an_unregistered_adapter_method_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="config key 'lora.method': 'fancy' is not a registered adapter method") as raised:
        validate(composed("lora.method=fancy"))
    assert "adalora, frozen, full, ia3" in str(raised.value)


def test_composing_imports_no_deep_learning_library():
    code = ("import sys; from hydra import compose, initialize_config_dir; import splade_peft.config\n"
            f"with initialize_config_dir(config_dir='{CONF}', version_base='1.3'): compose('config', ['lora=dora'])\n"
            "print(sorted(m for m in ('torch', 'lightning', 'transformers', 'peft') if m in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.stdout.strip().splitlines()[-1] == "[]", completed.stderr[-2000:]


@pytest.mark.parametrize("override,line", [
    ("trainer.max_steps=abc", "splade_peft: config key 'trainer.max_steps': 'abc' has the wrong type -- use an integer"),
    ("lora.rank=4", "splade_peft: config key 'lora.rank': is not a key this project reads (a typo?)"),
])
def test_the_entry_point_reports_a_config_that_does_not_compose_in_one_line(tmp_path, override, line):
    completed = subprocess.run([sys.executable, "-m", "splade_peft", f"hydra.run.dir={tmp_path}", override],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1 and completed.stderr.startswith(line), completed.stderr[-2000:]
    assert len(completed.stderr.strip().splitlines()) == 1 and not (tmp_path / "results.json").exists()


def test_the_entry_point_rejects_a_bad_config_before_loading_any_model(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "splade_peft", f"hydra.run.dir={tmp_path}", "+lora.rank=4", "model=hub"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 1
    assert "config key 'lora.rank': is not a key this project reads" in completed.stderr
    assert not (tmp_path / "adapter").exists()
