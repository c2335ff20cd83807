"""The building blocks of the config dataclasses (the rule for adding a key is in splade_peft/config.py).

A config group is a `Section` dataclass; each key is one field whose annotation is its type and whose
`setting(...)` states its range. OmegaConf checks the types while Hydra composes (an unknown key or a
wrong type stops composition naming the key); `check_section` checks the ranges and then each section's
`check()` (rules between keys) when `splade_peft.config.validate` runs. Nothing here imports torch.
"""

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

from omegaconf import MISSING, AnyNode, DictConfig, OmegaConf, ValueNode
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from splade_peft.errors import ConfigError

# An integer or a float, each kept as it is: `lora.alpha: 32` stays 32 (a float field would make it 32.0 and
# change every saved config and fingerprint). OmegaConf checks a Union strictly: true is not a number.
Number = Union[int, float]
RULE = "splade_peft_rule"  # dataclasses.field metadata: the key's Rule


@dataclass(frozen=True)
class Rule:
    """The values a key allows beyond its type, and how an error message states them."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    one_of: tuple | None = None
    allows: Callable[[Any], bool] | None = None
    says: str | None = None                # the allowed values in words, where the bounds cannot say it
    note: str | None = None                # appended in brackets, e.g. "0: off"

    def admits(self, value) -> bool:
        if value is None:  # only reached where the type allows null
            return True
        if self.one_of is not None:
            return any(value == v and type(value) is type(v) for v in self.one_of)
        for number in value if isinstance(value, list) else [value]:
            if isinstance(number, (int, float)) and not isinstance(number, bool) and not self.within(number):
                return False
        return self.allows is None or self.allows(value)

    def within(self, number) -> bool:
        return ((self.at_least is None or number >= self.at_least) and (self.above is None or number > self.above)
                and (self.at_most is None or number <= self.at_most) and (self.below is None or number < self.below))

    def describe(self, annotation) -> str:
        if self.says:
            return self.says
        if self.one_of is not None:
            text = "one of " + ", ".join(map(words, self.one_of))
        else:
            kind, high = describe_type(non_null(annotation)), self.at_most if self.at_most is not None else self.below
            if self.at_least is not None and high is not None:
                text = f"{kind} from {self.at_least} to {high}" if self.at_most is not None else f"{kind} in [{self.at_least}, {high})"
            elif self.at_least is not None:
                text = f"{kind} >= {self.at_least}"
            elif self.above is not None:
                text = f"{kind} > {self.above}"
            else:
                text = kind
        text += f" ({self.note})" if self.note else ""
        return f"null or {text}" if type(None) in typing.get_args(annotation) else text


def setting(default=MISSING, *, at_least=None, above=None, at_most=None, below=None, one_of=None,
            allows=None, says=None, note=None):
    """A config key with its range: `setting(at_least=1)`, `setting(one_of=POOLINGS)`, `setting(at_least=0,
    below=1)` for [0, 1). The default value lives in the group's YAML file, so `default` stays MISSING (`???`)
    except in dataset entries, whose optional keys may be left out."""
    rule = Rule(at_least, above, at_most, below, None if one_of is None else tuple(one_of), allows, says, note)
    return field(default=default, metadata={RULE: rule})


def section(cls):
    """A nested section (e.g. data.teacher); its keys' values are in the YAML file too."""
    return field(default_factory=cls)


def entries(spec):
    """A mapping name -> `spec` (eval.datasets, data.mixture.datasets). Entries are added on the command line
    (`+eval.datasets.dl19='{...}'`), which OmegaConf 2.3 cannot do into a mapping typed Dict[str, spec]; each
    entry is typed as `spec` when the config is validated instead."""
    return field(default_factory=dict, metadata={"entries": spec})


def free_mapping():
    """A mapping of any keys, passed on as it is (index.submitit: submitit's parameters)."""
    return field(default_factory=dict)


class Section:
    """Base of the config dataclasses."""

    # True: keys beyond the fields are a library's arguments (trainer: lightning.Trainer, logger: W&B),
    # checked by check_extra against that library.
    open: ClassVar[bool] = False

    def check(self, path: str, root) -> None:
        """Rules between keys (this section's, or with other sections through `root`, the whole typed config);
        raise ConfigError naming the key. `path` is where the section sits, e.g. "encoder.sparsifiers.queries"."""

    def check_extra(self, path: str, extra: dict) -> None:
        """Keys beyond the fields (only open sections accept any; `+key=...` forces one into any section)."""
        if extra:
            name = next(iter(extra))
            raise unknown_key(f"{path}.{name}" if path else name, type(self))


# --- types in words ---------------------------------------------------------------------------------------------

KIND = {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null",
        list: "a list", dict: "a mapping", Path: "a path", Any: "any value"}
PLURAL = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def words(value) -> str:
    return {True: "true", False: "false", None: "null"}[value] if value is None or isinstance(value, bool) else str(value)


def is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def non_null(annotation):
    """Optional[X] -> X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if is_union(annotation) and len(args) == 1 else annotation


def describe_type(annotation) -> str:
    """`int` -> "an integer", `Optional[List[str]]` -> "a list of strings or null"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation == Number:
        return "a number"
    if is_union(annotation):
        named = [a for a in args if a is not type(None) and not (a is int and float in args)]  # int or float: a number
        kinds = [describe_type(a) for a in named] + (["null"] if type(None) in args else [])
        return " or ".join(dict.fromkeys(k for k in kinds if k))
    if origin is Literal:
        return "one of " + ", ".join(map(words, args))
    if origin in (list, tuple, Sequence) or annotation in (list, tuple):
        plural = "numbers" if args and args[0] == Number else PLURAL.get(args[0]) if args else None
        return f"a list of {plural}" if plural else "a list"
    if origin in (dict, Mapping) or annotation is dict or dataclasses.is_dataclass(annotation):
        return "a mapping"
    return KIND.get(annotation, "")


def matches(value, annotation) -> bool:
    """Whether a config value fits a library's annotation (of a lightning.Trainer or W&B argument). What cannot
    be checked (the library's own classes, forward references) matches."""
    if annotation in (Any, inspect.Parameter.empty) or isinstance(annotation, (str, typing.ForwardRef)):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if is_union(annotation):
        return any(matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if annotation in (bool, type(None), str, Path):
        return isinstance(value, {bool: bool, type(None): type(None)}.get(annotation, str))
    if annotation in (int, float):
        return isinstance(value, int if annotation is int else (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple, Sequence) or annotation in (list, tuple):
        return isinstance(value, list) and (not args or all(matches(item, args[0]) for item in value))
    if origin in (dict, Mapping) or annotation is dict:
        return isinstance(value, dict)
    return True


def library_argument(owner: str, key: str, value, annotations: Mapping[str, Any]) -> None:
    """An extra key of an open section must be an argument of the library it goes to, of a type it takes."""
    name = key.rsplit(".", 1)[-1]
    if name not in annotations:
        raise ConfigError(key, f"is not an argument of {owner}", f"check its spelling in the {owner} documentation")
    if not matches(value, annotations[name]):
        raise ConfigError(key, f"{shown(key, value)} has the wrong type",
                          f"use {describe_type(annotations[name]) or annotations[name]} ({owner}'s annotation)")


# --- the schema as OmegaConf nodes ------------------------------------------------------------------------------

def schema_node(cls) -> DictConfig:
    """`cls` as the OmegaConf node that composition merges every YAML file and override into."""
    node = OmegaConf.structured(cls)
    mark(node, cls)
    return node


def mark(node: DictConfig, cls) -> None:
    """Open sections take any other key (`+trainer.max_epochs=3`). Every typed key is strict (OmegaConf's
    "convert" flag off, as it is for a Union): 3 is not true and 5 not "5", where OmegaConf would convert them.
    The flag is set on the keys, not their sections: a section's flag would reach the nodes OmegaConf makes
    while resolving `${...}`, whose type is Any, which strict mode refuses on Python 3.11 (OmegaConf 2.3)."""
    if cls.open:
        OmegaConf.set_struct(node, False)
    for f in dataclasses.fields(cls):
        child = node._get_node(f.name)
        if isinstance(child, DictConfig) and dataclasses.is_dataclass(non_null(f.type)) \
                and not child._is_none() and not child._is_missing():
            mark(child, non_null(f.type))
        elif isinstance(child, ValueNode) and not isinstance(child, AnyNode):
            child._set_flag("convert", False)


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


# --- checking a typed config -------------------------------------------------------------------------------------

def check_section(section_: Section, path: str, root) -> None:
    """Each key's range, nested sections, then the section's own rules; ConfigError naming the first bad key."""
    declared = fields_of(type(section_))
    for name, f in declared.items():
        key = f"{path}.{name}" if path else name
        value = getattr(section_, name)
        rule = f.metadata.get(RULE)
        if rule is not None and not rule.admits(value):
            raise ConfigError(key, f"{shown(key, value)} is not allowed", f"use {rule.describe(f.type)}")
        if isinstance(value, Section):
            check_section(value, key, root)
        for entry_name, entry in value.items() if "entries" in f.metadata else ():
            check_section(typed_entry(f.metadata["entries"], entry, f"{key}.{entry_name}"), f"{key}.{entry_name}", root)
    section_.check_extra(path, {k: v for k, v in vars(section_).items() if k not in declared})
    section_.check(path, root)


def typed_entry(spec, entry, key: str):
    """A mapping entry (e.g. eval.datasets.<name>) as an instance of `spec`, or ConfigError naming its key."""
    if not isinstance(entry, Mapping):
        raise ConfigError(key, f"{shown(key, entry)} has the wrong type", f"use a mapping of {', '.join(fields_of(spec))}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema_node(spec), entry))
    except OmegaConfBaseException as error:
        raise config_error(error, spec, prefix=key) from None


def shown(key: str, value) -> str:
    """A value in an error message; a credential's (by its key's name) is not repeated."""
    from splade_peft.records import REDACTED, is_secret_name

    return REDACTED if value and is_secret_name(key.rsplit(".", 1)[-1]) else repr(value)


# --- OmegaConf's errors as one ConfigError ----------------------------------------------------------------------

VALUE = re.compile(r"[Vv]alue '(.*?)'(?= of type| is not| for field)", re.DOTALL)


def config_error(error: OmegaConfBaseException, root_cls, prefix: str = "", value=None, key: str | None = None,
                 variants: Mapping | None = None) -> ConfigError:
    """The one-line ConfigError for an OmegaConf error raised while composing or typing a config under
    `root_cls`: the key, and what it should be. `value`, `key`: the value as given and its key, when the caller
    knows them better than OmegaConf; `variants`: group -> {option: dataclass} for groups whose options add
    keys (encoder=dense)."""
    relative = key if key is not None else re.sub(r"\[[^]]*\]", "", str(error.full_key or error.key or ""))
    key = ".".join(k for k in (prefix, relative) if k)
    if isinstance(error, MissingMandatoryValue):
        return ConfigError(key, "is required and has no value", f"set it, e.g. {key}=...")
    parent_path = relative.rsplit(".", 1)[0] if "." in relative else ""
    owner = error.object_type if dataclasses.is_dataclass(error.object_type) else section_class(root_cls, parent_path)
    declared = fields_of(owner).get(relative.rsplit(".", 1)[-1]) if relative else None
    if declared is None or isinstance(error, (ConfigKeyError, ConfigAttributeError)):
        group, _, name = relative.partition(".")
        holders = [option for option, cls in (variants or {}).get(group, {}).items() if name.split(".")[0] in fields_of(cls)]
        if holders and name.split(".")[0] not in fields_of(owner):
            return ConfigError(key, f"is not a key of this {group} option",
                               f"it belongs to {' and '.join(f'{group}={h}' for h in holders)}")
        if owner is None and holds_entries(root_cls, parent_path):
            return ConfigError(key, "is a new entry, and Hydra adds a key only when asked",
                               f"add it with a leading +: +{key}={{name:...,source:...,path:...,split:...}}")
        return unknown_key(key, owner)
    if value is None:
        found = VALUE.search(str(error.msg))
        value = found.group(1) if found else None
    problem = "the value" if value is None else shown(key, value)
    return ConfigError(key, f"{problem} has the wrong type", f"use {describe_type(declared.type)}")


def unknown_key(key: str, owner) -> ConfigError:
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    known = [f"{parent}.{name}" if parent else name for name in fields_of(owner)]
    return ConfigError(key, "is not a key this project reads (a typo?)",
                       f"remove it or use one of: {', '.join(known)}" if known else "remove it")


def holds_entries(root_cls, path: str) -> bool:
    """Whether the section at `path` is a mapping of named entries (eval.datasets, data.mixture.datasets)."""
    parent, _, name = path.rpartition(".")
    owner = section_class(root_cls, parent) if parent else root_cls
    declared = fields_of(owner).get(name) if owner else None
    return declared is not None and "entries" in declared.metadata


def section_class(root_cls, path: str):
    """The dataclass of the section at `path` ("" is the root), or None (a free mapping, a list, no such key)."""
    cls, names = root_cls, [n for n in path.split(".") if n]
    while names:
        f = fields_of(cls).get(names.pop(0))
        if f is None:
            return None
        if "entries" in f.metadata:
            if not names:
                return None  # the mapping itself
            names.pop(0)  # the entry's name
            cls = f.metadata["entries"]
        else:
            cls = non_null(f.type)
    return cls if dataclasses.is_dataclass(cls) else None
