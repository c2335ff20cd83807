"""Named variants of one concept (adapter method, loss, sparsifier, encoder family, data source, teacher,
search engine), each registered next to its implementation:

    @ADAPTER_METHODS.register("vera", reads=("r", "dropout", "bias"))
    def vera(model, lora_cfg, targets, total_steps): ...

The config names a variant by its registered name (`lora.method=vera`); an unknown name is a ConfigError
that lists the registered ones. A registry knows the module that holds its built-in variants and imports it
on first lookup, so that the config layer can check names without importing torch at composition time.
A variant of the user's own registers the same way in their module, listed in the root key `plugins`.
"""

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from splade_peft.errors import ConfigError


@dataclass(frozen=True)
class Variant:
    """One registered implementation and what the config layer must know about it without calling it."""

    name: str
    implementation: Any
    traits: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, trait: str) -> Any:
        try:
            return self.__dict__["traits"][trait]
        except KeyError:
            raise AttributeError(f"{self.name!r} registers no trait {trait!r}") from None


class Registry:
    """Name -> Variant for one concept, named in errors by the config key that chooses among them."""

    def __init__(self, concept: str, key: str, builtins: str | tuple[str, ...], **default_traits):
        self.concept, self.key = concept, key
        self.builtins = (builtins,) if isinstance(builtins, str) else builtins
        self.default_traits = default_traits
        self.variants: dict[str, Variant] = {}

    def register(self, name: str, **traits) -> Callable:
        """Decorator: register the function or class under `name` with its traits (e.g. `reads=(...)`)."""
        def add(implementation):
            self.variants[name] = Variant(name, implementation, {**self.default_traits, **traits})
            return implementation
        return add

    def loaded(self) -> dict[str, Variant]:
        for module in self.builtins:
            importlib.import_module(module)  # registers the built-in variants (a no-op once imported)
        return self.variants

    def names(self) -> list[str]:
        return sorted(self.loaded())

    def __contains__(self, name: str) -> bool:
        return name in self.loaded()

    def __iter__(self) -> Iterator[Variant]:
        return iter(self.loaded().values())

    def get(self, name: str, key: str | None = None) -> Variant:
        """The variant registered as `name`; ConfigError naming `key` (default: the registry's) otherwise."""
        variants = self.loaded()
        if name not in variants:
            raise ConfigError(key or self.key, f"{name!r} is not a registered {self.concept}",
                              f"use one of {', '.join(sorted(variants))}, or register one (splade_peft/registry.py)")
        return variants[name]

    def __getitem__(self, name: str) -> Any:
        return self.get(name).implementation


def import_plugins(modules: list[str]) -> None:
    """The root key `plugins`: modules of the user's own whose import registers variants."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError("plugins", f"cannot import {module!r} ({error})",
                              "name an importable module (on PYTHONPATH, or installed)") from None
