"""The `model=`, `encoder=` and `lora=` groups' keys (conf/model, conf/encoder, conf/lora), and the values the
model package accepts (its modules import them from here)."""

from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar, Optional

from omegaconf import OmegaConf

from splade_peft.errors import ConfigError
from splade_peft.registry import Registry
from splade_peft.settings import Number, Section, section, setting

RANDOM_ARCHITECTURES = ("bert", "llama")
POOLINGS = ("max", "sum")
DENSE_POOLINGS = ("eos", "mean", "last", "latent_attention")
LORA_INITS = ("gaussian", "pissa", "olora")
QUANTIZATIONS = ("4bit", "8bit")
# trainer.precision values under which Lightning casts every floating-point weight: with a quantised backbone the
# adapter would train in that dtype, and the MLM head bitsandbytes leaves unquantised would lose its precision.
WEIGHT_CASTING_PRECISIONS = ("16-true", "bf16-true", "64-true", "64")
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
    sanity_check: bool = setting()
    chat_template: Optional[str] = setting()

    def check(self, path: str, root) -> None:
        if self.adapter and root.lora.method != "frozen":
            raise ConfigError("model.adapter", f"evaluates the saved {self.adapter} as it is, but lora.method="
                              f"{root.lora.method} would train a new adapter on top", "add lora=frozen")


# --- encoder= -----------------------------------------------------------------------------------------------------

# `encoder.sparsifiers.<side>.method`: registered in splade_peft/model/sparsifiers.py, each built from its section.
SPARSIFIERS = Registry("sparsifier", "encoder.sparsifiers.method", builtins="splade_peft.model.sparsifiers")


@dataclass
class SparsifierConfig(Section):
    """encoder.sparsifiers.documents / .queries."""

    method: str = setting()
    k: int = setting(at_least=1)
    threshold: Number = setting(at_least=0)
    scale: Number = setting(at_least=0)
    learned: bool = setting()

    def check(self, path: str, root) -> None:
        SPARSIFIERS.get(self.method, key=f"{path}.method")


@dataclass
class SparsifiersConfig(Section):
    documents: SparsifierConfig = section(SparsifierConfig)
    queries: SparsifierConfig = section(SparsifierConfig)


@dataclass
class EncoderConfig(Section):
    """The sparse encoders (encoder=splade, splade_separate, inference_free). The options of other families add
    keys in a subclass below, which their YAML file names in its defaults list (`- /schema/encoder/dense`)
    and their registration names (`schema=`)."""

    poolings: ClassVar[tuple[str, ...]] = POOLINGS

    name: str = setting()
    pooling: str = setting()
    bidirectional: bool = setting()
    sparsifiers: SparsifiersConfig = section(SparsifiersConfig)

    def check(self, path: str, root) -> None:
        schema = ENCODERS.get(self.name).schema
        if schema is not type(self):
            own = [variant.name for variant in ENCODERS if variant.schema is type(self)]
            raise ConfigError("encoder.name", f"{self.name!r} is not allowed",
                              f"use one of {', '.join(sorted(own))}, or the option encoder={self.name} (its keys differ)")
        if self.pooling not in type(self).poolings:
            raise ConfigError("encoder.pooling", f"{self.pooling!r} with encoder={self.name}",
                              f"use one of {', '.join(type(self).poolings)}")
        random_init = root.model.random_init
        if self.bidirectional and random_init and random_init.architecture != "llama":
            raise ConfigError("encoder.bidirectional", f"a random {random_init.architecture} masked LM attends both ways already",
                              "use encoder.bidirectional=true only with a decoder backbone (e.g. model=tiny_llama), else false")


@dataclass
class LatentAttentionConfig(Section):
    """encoder.latent_attention: NV-Embed's pooling block (read when encoder.pooling=latent_attention)."""

    latents: int = setting(at_least=1)
    heads: int = setting(at_least=1)


@dataclass
class DenseEncoderConfig(EncoderConfig):
    """encoder=dense: one embedding per text from the LM's hidden states."""

    poolings: ClassVar[tuple[str, ...]] = DENSE_POOLINGS

    normalize: bool = setting()
    temperature: Number = setting(above=0)
    query_prefix: Optional[str] = setting()
    document_prefix: Optional[str] = setting()
    latent_attention: LatentAttentionConfig = section(LatentAttentionConfig)

    def check(self, path: str, root) -> None:
        super().check(path, root)
        if self.pooling == "latent_attention" and self.name == "csr":
            # CsrEncoder saves only its autoencoder: a trained pooling block would be lost at save time.
            raise ConfigError("encoder.pooling", "latent_attention with encoder=csr", "use eos, mean or last with csr")
        if self.sparsifiers.documents.method != "none" or self.sparsifiers.queries.method != "none":
            raise ConfigError("encoder.sparsifiers", f"encoder={self.name} does not use sparsifiers",
                              "leave encoder.sparsifiers.*.method=none (csr's sparsity is encoder.csr.k)")


@dataclass
class CsrConfig(Section):
    """encoder.csr: the top-k sparse autoencoder over the dense embeddings."""

    latent_dim: int = setting(at_least=1)
    k: int = setting(at_least=1)
    reconstruction_weight: Number = setting(at_least=0)

    def check(self, path: str, root) -> None:
        if self.k > self.latent_dim:
            raise ConfigError(f"{path}.k", f"{self.k} active latents of {self.latent_dim}",
                              f"use an integer in 1..{path}.latent_dim")


@dataclass
class CsrEncoderConfig(DenseEncoderConfig):
    """encoder=csr: the dense encoder's embeddings through a sparse autoencoder."""

    csr: CsrConfig = section(CsrConfig)


# The encoder options that add keys, by the name their YAML file gives (`- /schema/encoder/<name>`).
ENCODER_SCHEMAS = {"dense": DenseEncoderConfig, "csr": CsrEncoderConfig}

# `encoder.name`: each family registered next to its implementation (model/variants.py, dense.py, csr.py) with
# the config dataclass its option is typed by (`schema=`, EncoderConfig unless it adds keys).
ENCODERS = Registry("encoder family", "encoder.name", builtins="splade_peft.model.variants", schema=EncoderConfig,
                    sparse=True)  # sparse: searched in a sparse index (index=lucene), else a dense one (faiss)


# --- lora= ----------------------------------------------------------------------------------------------------------

# `lora.method`: each method is a function registered next to its implementation (splade_peft/model/adapters.py),
# with `reads`, the lora.* keys it uses; a PEFT method also reads TARGETING (which modules it adapts).
ADAPTER_METHODS = Registry("adapter method", "lora.method", builtins="splade_peft.model.adapters", peft=True, reads=())
TARGETING = ("target_modules", "layers", "train_head")


def keys_read_by(method: str) -> list[str]:
    """The lora.* keys `method` reads; a key it does not read must keep its lora.yaml value."""
    variant = ADAPTER_METHODS.get(method)
    return sorted({*variant.reads, *(TARGETING if variant.peft else ())})


@dataclass
class LoraConfig(Section):
    """The adapter (conf/lora/*.yaml; every file starts from lora.yaml)."""

    method: str = setting()
    r: int = setting(at_least=1)
    alpha: Number = setting(above=0)
    dropout: Number = setting(at_least=0, below=1)
    use_rslora: bool = setting()
    use_dora: bool = setting()
    bias: str = setting(one_of=("none", "all", "lora_only"))
    init: str = setting(one_of=LORA_INITS)
    quantization: Optional[str] = setting(one_of=QUANTIZATIONS)
    target_r: Optional[int] = setting(at_least=1)
    target_modules: Optional[list[str]] = setting()
    layers: Optional[list[int]] = setting(
        at_least=0, allows=lambda v: len(v) > 0, says="null or a non-empty list of block indices >= 0, e.g. lora.layers=[0,1]")
    train_head: str = setting(one_of=HEAD_TRAINING)

    def check(self, path: str, root) -> None:
        defaults = OmegaConf.load(LORA_DEFAULTS)
        used = keys_read_by(self.method)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "method" and f.name not in used and value != defaults[f.name]:
                raise ConfigError(f"lora.{f.name}", f"lora.method={self.method} does not use it (set to {value!r})",
                                  f"leave it at {defaults[f.name]!r}; {self.method} reads "
                                  f"{', '.join(used) or 'no lora.* option'}")
        if self.init != "gaussian" and self.train_head != "frozen":
            # PEFT (0.21) turns a PiSSA/OLoRA adapter into a plain LoRA at save time and drops the trained head copies.
            raise ConfigError("lora.train_head", f"{self.train_head!r} with lora.init={self.init}: the trained head "
                              "would not be saved", "use lora.train_head=frozen with lora.init=pissa|olora")
        precision = str(root.trainer.precision)
        if self.quantization and precision in WEIGHT_CASTING_PRECISIONS:
            raise ConfigError("trainer.precision", f"{precision} with lora.quantization={self.quantization} casts "
                              "every weight bitsandbytes keeps in full precision, the adapter's too",
                              "use trainer.precision=bf16-mixed (the quantised layers then compute in bf16) or 32-true")
        if self.method == "adalora" and (self.target_r is None or self.target_r > self.r):
            raise ConfigError("lora.target_r", f"{self.target_r!r} with lora.r={self.r}", "use an integer in 1..lora.r")
