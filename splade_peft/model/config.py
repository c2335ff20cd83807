"""The `model=`, `encoder=` and `lora=` groups' keys (conf/model, conf/encoder, conf/lora), and the values the
model package accepts (its modules import them from here)."""

from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar, Optional

from omegaconf import OmegaConf

from splade_peft.errors import ConfigError
from splade_peft.settings import RULE, Number, Section, section, setting

RANDOM_ARCHITECTURES = ("bert", "llama")
POOLINGS = ("max", "sum")
DENSE_POOLINGS = ("eos", "mean", "last")
SPARSIFIER_METHODS = ("none", "top_k", "threshold", "soft_threshold", "mean_threshold")
SPARSE_VARIANTS = ("splade", "splade_separate", "inference_free")
# Families on the LM's hidden states rather than its vocabulary (model/dense.py, model/csr.py).
EMBEDDING_FAMILIES = ("dense", "csr")
ENCODER_VARIANTS = SPARSE_VARIANTS + EMBEDDING_FAMILIES
PEFT_METHODS = ("lora", "adalora", "ia3", "vera", "loha", "lokr")
ADAPTER_METHODS = PEFT_METHODS + ("full", "frozen")
LORA_INITS = ("gaussian", "pissa", "olora")
QUANTIZATIONS = ("4bit", "8bit")
HEAD_TRAINING = ("frozen", "transform", "full")
LORA_DEFAULTS = Path(__file__).resolve().parents[2] / "conf" / "lora" / "lora.yaml"


# --- model= -------------------------------------------------------------------------------------------------------

@dataclass
class RandomInitConfig(Section):
    """model.random_init: a tiny random backbone built from these (model=tiny, tiny_llama)."""

    architecture: str = setting(one_of=RANDOM_ARCHITECTURES)
    vocab_size: int = setting(at_least=1)
    hidden_size: int = setting(at_least=1)
    num_hidden_layers: int = setting(at_least=1)
    num_attention_heads: int = setting(at_least=1)
    intermediate_size: int = setting(at_least=1)
    # float, not Number: a Union inside an optional section breaks Hydra's merge (OmegaConf 2.3.1)
    output_bias: float = setting()
    seed: int = setting()


@dataclass
class ModelConfig(Section):
    adapter: Optional[str] = setting()  # set in conf/config.yaml: a saved adapter or exported folder to evaluate
    name: str = setting()
    name_or_path: Optional[str] = setting()
    trust_remote_code: bool = setting()
    random_init: Optional[RandomInitConfig] = setting()
    num_layers: Optional[int] = setting(at_least=1, note="null: all")
    query_max_length: int = setting(at_least=2)
    doc_max_length: int = setting(at_least=2)


# --- encoder= -----------------------------------------------------------------------------------------------------

@dataclass
class SparsifierConfig(Section):
    """encoder.sparsifiers.documents / .queries."""

    method: str = setting(one_of=SPARSIFIER_METHODS)
    k: int = setting(at_least=1)
    threshold: Number = setting(at_least=0)
    scale: Number = setting(at_least=0)
    learned: bool = setting()


@dataclass
class SparsifiersConfig(Section):
    documents: SparsifierConfig = section(SparsifierConfig)
    queries: SparsifierConfig = section(SparsifierConfig)


@dataclass
class EncoderConfig(Section):
    """The sparse encoders (encoder=splade, splade_separate, inference_free). The options of other families add
    keys in a subclass below, which their YAML file names in its defaults list (`- /schema/encoder/dense`)."""

    names: ClassVar[tuple[str, ...]] = SPARSE_VARIANTS
    poolings: ClassVar[tuple[str, ...]] = POOLINGS

    name: str = setting()
    pooling: str = setting()
    bidirectional: bool = setting()
    sparsifiers: SparsifiersConfig = section(SparsifiersConfig)

    def check(self, path: str, root) -> None:
        if self.name not in type(self).names:
            fix = f"use one of {', '.join(type(self).names)}"
            if self.name in ENCODER_VARIANTS:
                fix += f", or the option encoder={self.name} (its keys differ)"
            raise ConfigError("encoder.name", f"{self.name!r} is not allowed", fix)
        if self.pooling not in type(self).poolings:
            raise ConfigError("encoder.pooling", f"{self.pooling!r} with encoder={self.name}",
                              f"use one of {', '.join(type(self).poolings)}")
        random_init = root.model.random_init
        if self.bidirectional and random_init and random_init.architecture != "llama":
            raise ConfigError("encoder.bidirectional", f"a random {random_init.architecture} masked LM attends both ways already",
                              "use encoder.bidirectional=true only with a decoder backbone (e.g. model=tiny_llama), else false")


@dataclass
class DenseEncoderConfig(EncoderConfig):
    """encoder=dense: one embedding per text from the LM's hidden states."""

    names: ClassVar[tuple[str, ...]] = ("dense",)
    poolings: ClassVar[tuple[str, ...]] = DENSE_POOLINGS

    normalize: bool = setting()
    temperature: Number = setting(above=0)
    query_prefix: Optional[str] = setting()
    document_prefix: Optional[str] = setting()

    def check(self, path: str, root) -> None:
        super().check(path, root)
        if self.sparsifiers.documents.method != "none" or self.sparsifiers.queries.method != "none":
            raise ConfigError("encoder.sparsifiers", f"encoder={self.name} does not use sparsifiers",
                              "leave encoder.sparsifiers.*.method=none (csr's sparsity is encoder.csr.k)")


@dataclass
class CsrConfig(Section):
    """encoder.csr: the top-k sparse autoencoder over the dense embeddings."""

    latent_dim: int = setting(at_least=1)
    k: int = setting(at_least=1)
    reconstruction_weight: Number = setting(at_least=0)


@dataclass
class CsrEncoderConfig(DenseEncoderConfig):
    """encoder=csr: the dense encoder's embeddings through a sparse autoencoder."""

    names: ClassVar[tuple[str, ...]] = ("csr",)

    csr: CsrConfig = section(CsrConfig)


# The encoder options that add keys, by the name their YAML file gives (`- /schema/encoder/<name>`).
ENCODER_SCHEMAS = {"dense": DenseEncoderConfig, "csr": CsrEncoderConfig}


# --- lora= ----------------------------------------------------------------------------------------------------------

RANKED = ("lora", "adalora", "vera", "loha", "lokr")  # the methods with a rank
SCALED = ("lora", "adalora", "loha", "lokr")           # ... and an alpha


@dataclass
class LoraConfig(Section):
    """The adapter (conf/lora/*.yaml; every file starts from lora.yaml). `read_by` names the lora.method values
    that read a key; a key the chosen method does not read must keep its lora.yaml value."""

    method: str = setting(one_of=ADAPTER_METHODS)
    r: int = setting(at_least=1, read_by=RANKED)
    alpha: Number = setting(above=0, read_by=SCALED)
    dropout: Number = setting(at_least=0, below=1, read_by=RANKED)
    use_rslora: bool = setting(read_by=("lora",))
    use_dora: bool = setting(read_by=("lora",))
    bias: str = setting(one_of=("none", "all", "lora_only"), read_by=("lora", "adalora", "vera"))
    init: str = setting(one_of=LORA_INITS, read_by=("lora",))
    quantization: Optional[str] = setting(one_of=QUANTIZATIONS, read_by=("lora",))
    target_r: Optional[int] = setting(at_least=1, read_by=("adalora",))
    target_modules: Optional[list[str]] = setting(read_by=PEFT_METHODS)
    layers: Optional[list[int]] = setting(
        at_least=0, allows=lambda v: len(v) > 0, read_by=PEFT_METHODS,
        says="null or a non-empty list of block indices >= 0, e.g. lora.layers=[0,1]")
    train_head: str = setting(one_of=HEAD_TRAINING, read_by=PEFT_METHODS)

    @classmethod
    def keys_read_by(cls, method: str) -> list[str]:
        return sorted(f.name for f in fields(cls) if method in (f.metadata[RULE].read_by or ()))

    def check(self, path: str, root) -> None:
        defaults = OmegaConf.load(LORA_DEFAULTS)
        used = self.keys_read_by(self.method)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata[RULE].read_by is not None and f.name not in used and value != defaults[f.name]:
                raise ConfigError(f"lora.{f.name}", f"lora.method={self.method} does not use it (set to {value!r})",
                                  f"leave it at {defaults[f.name]!r}; {self.method} reads "
                                  f"{', '.join(used) or 'no lora.* option'}")
        if self.init != "gaussian" and self.train_head != "frozen":
            # PEFT (0.21) turns a PiSSA/OLoRA adapter into a plain LoRA at save time and drops the trained head copies.
            raise ConfigError("lora.train_head", f"{self.train_head!r} with lora.init={self.init}: the trained head "
                              "would not be saved", "use lora.train_head=frozen with lora.init=pissa|olora")
        if self.method == "adalora" and (self.target_r is None or self.target_r > self.r):
            raise ConfigError("lora.target_r", f"{self.target_r!r} with lora.r={self.r}", "use an integer in 1..lora.r")

