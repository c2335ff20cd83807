"""Config resolvers and the checks that run on the composed config before any model or data is loaded."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from splade_peft.errors import ConfigError
from splade_peft.schema import check_schema

OmegaConf.register_new_resolver("basename", lambda path: Path(str(path)).name, replace=True)


def sweep_folder(outputs: str, name: str | None, stamp: str, experiment: str | None = None) -> str:
    """A study from sweeps/ gets a fixed folder, so that re-running it resumes; an ad-hoc -m sweep a dated
    one. The experiment is part of a study's folder: the same grid on two experiments must not share jobs."""
    if not name:
        return f"{outputs}/multirun/{stamp}"
    return f"{outputs}/sweeps/{name}-{experiment.replace('/', '-')}" if experiment else f"{outputs}/sweeps/{name}"


def job_folder_name(override_dirname: str) -> str:
    """A job folder named by its overrides, one folder deep: a `/` in a value (a path) becomes `%2F`."""
    return override_dirname.replace("%", "%25").replace("/", "%2F")


OmegaConf.register_new_resolver("sweep_folder", sweep_folder, replace=True)
OmegaConf.register_new_resolver("job_folder", job_folder_name, replace=True)

# key path -> (predicate, allowed values as the error message states them)
RANGE_CHECKS = {
    "lora.r": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "lora.alpha": (lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
    "lora.dropout": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)"),
    "lora.bias": (lambda v: v in ("none", "all", "lora_only"), "one of none, all, lora_only"),
    "lora.target_r": (lambda v: v is None or (isinstance(v, int) and v >= 1), "null or an integer >= 1"),
    "lora.layers": (
        lambda v: v is None or (len(v) > 0 and all(isinstance(i, int) and i >= 0 for i in v)),
        "null or a non-empty list of block indices >= 0, e.g. lora.layers=[0,1]",
    ),
    "data.negatives": (lambda v: isinstance(v, int) and 1 <= v <= 64, "an integer from 1 to 64"),
    "data.negatives_source": (
        lambda v: v in ("bm25", "random", "file", "st_hard_negatives"), "one of bm25, random, file, st_hard_negatives"
    ),
    "data.negatives_depth": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "data.mixture.sampling": (lambda v: v in ("round_robin", "proportional"), "one of round_robin, proportional"),
    "data.sampling": (lambda v: v in ("uniform", "teacher_rank"), "one of uniform, teacher_rank"),
    "data.training_layout": (lambda v: v in ("flagembedding", "triples"), "one of flagembedding, triples"),
    "data.teacher.scorers": (lambda v: set(v) <= {"splade", "bm25"}, "a list of splade, bm25 (or [])"),
    "data.teacher.ensemble": (lambda v: v in ("aligned", "zscore_mean", "mean"), "one of aligned, zscore_mean, mean"),
    "data.teacher.weights": (lambda v: all(w >= 0 for w in v) and (not v or sum(v) > 0),
                             "one number >= 0 per teacher, not all 0 ([]: equal)"),
    "data.teacher.missing": (lambda v: v in ("error", "skip"), "one of error, skip"),
    "data.teacher.allow_pickle": (lambda v: isinstance(v, bool), "true or false"),
    "data.teacher.from_training_file": (lambda v: isinstance(v, bool), "true or false"),
    "loss.weights.contrastive": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "loss.weights.margin_mse": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "loss.weights.kl": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "data.batch_size": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "data.unknown_ids": (lambda v: v in ("error", "drop"), "one of error, drop"),
    "loss.lambda_d": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "loss.lambda_q": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
    "loss.temperature": (lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
    "loss.warmup_steps": (lambda v: v is None or (isinstance(v, int) and v >= 0), "null or an integer >= 0"),
    "loss.warmup_fraction": (lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "a number in [0, 1]"),
    "loss.teacher_temperature": (lambda v: v is None or (isinstance(v, (int, float)) and v > 0), "null or a number > 0"),
    "loss.flops_normalization": (lambda v: v in ("batch", "unbiased"), "one of batch, unbiased"),
    "optim.lr": (lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
    "optim.query_table_lr": (lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
    "index.quantization": (lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
    "index.shards": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "index.threads": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "index.encode_shards": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "index.encode_processes": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "index.shard_launcher": (lambda v: v in ("local", "submitit"), "one of local, submitit"),
    "data.pin_memory": (lambda v: v in ("auto", True, False), "auto, true or false"),
    "data.prefetch_factor": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "eval.k": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "eval.validate_every_n_steps": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0: off)"),
    "eval.validation_max_queries": (lambda v: v is None or (isinstance(v, int) and v >= 1), "null or an integer >= 1"),
    "eval.validation_max_documents": (lambda v: v is None or (isinstance(v, int) and v >= 1), "null or an integer >= 1"),
    "model.query_max_length": (lambda v: isinstance(v, int) and v >= 2, "an integer >= 2"),
    "model.doc_max_length": (lambda v: isinstance(v, int) and v >= 2, "an integer >= 2"),
    "model.random_init.architecture": (lambda v: v in (None, "bert", "llama"), "one of bert, llama"),
    "model.num_layers": (lambda v: v is None or (isinstance(v, int) and v >= 1), "null (all) or an integer >= 1"),
    "index.name": (lambda v: v in ("lucene", "faiss"), "one of lucene, faiss"),
    "model.trust_remote_code": (lambda v: isinstance(v, bool), "true or false (false unless you trust the model's code)"),
    "training.checkpoint_every_n_steps": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "training.max_nonfinite_batches": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "training.early_stopping_patience": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0: off)"),
    "loss.in_batch": (lambda v: v in (True, False, "local", "global"), "true (= local), false, local or global"),
}


def encoder_range_checks() -> dict:
    """Checks of the `encoder=` keys, whose allowed values live with the modules that implement them.

    Imported here rather than at the top: those modules import torch, and this file is imported by
    every entry point, including `--help`.
    """
    from splade_peft.model.dense import DENSE_POOLINGS
    from splade_peft.model.encoder import POOLINGS
    from splade_peft.model.sparsifiers import SPARSIFIER_METHODS
    from splade_peft.model.variants import ENCODER_VARIANTS

    return {
        "encoder.name": (lambda v: v in ENCODER_VARIANTS, f"one of {', '.join(ENCODER_VARIANTS)}"),
        "encoder.pooling": (lambda v: v in POOLINGS + DENSE_POOLINGS,
                            f"one of {', '.join(POOLINGS)} (sparse) or {', '.join(DENSE_POOLINGS)} (dense, csr)"),
        "encoder.temperature": (lambda v: v is None or (isinstance(v, (int, float)) and v > 0), "a number > 0"),
        "encoder.csr.k": (lambda v: v is None or (isinstance(v, int) and v >= 1), "an integer >= 1"),
        "encoder.csr.latent_dim": (lambda v: v is None or (isinstance(v, int) and v >= 1), "an integer >= 1"),
        "encoder.csr.reconstruction_weight": (lambda v: v is None or (isinstance(v, (int, float)) and v >= 0),
                                              "a number >= 0"),
        "encoder.bidirectional": (lambda v: isinstance(v, bool), "true or false (true only with a decoder backbone)"),
        **{
            f"encoder.sparsifiers.{side}.{key}": check
            for side in ("documents", "queries")
            for key, check in {
                "method": (lambda v: v in SPARSIFIER_METHODS, f"one of {', '.join(SPARSIFIER_METHODS)}"),
                "k": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
                "threshold": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
                "scale": (lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0"),
                "learned": (lambda v: isinstance(v, bool), "true or false"),
            }.items()
        },
    }


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is missing, of the wrong type or out of range."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], "is required and has no value", f"set it on the command line, e.g. {missing[0]}=...")
    check_schema(cfg)
    for key, (is_allowed, allowed) in {**RANGE_CHECKS, **encoder_range_checks()}.items():
        value = OmegaConf.select(cfg, key)
        if not is_allowed(value):
            raise ConfigError(key, f"{value!r} is not allowed", f"use {allowed}")
    random_init = cfg.model.get("random_init")
    if cfg.encoder.bidirectional and random_init and random_init.architecture != "llama":
        raise ConfigError("encoder.bidirectional", f"a random {random_init.architecture} masked LM attends both ways already",
                          "use encoder.bidirectional=true only with a decoder backbone (e.g. model=tiny_llama), else false")
    validate_encoder_index(cfg)
    validate_adapter(cfg)
    if cfg.data.source == "beir" and not cfg.data.path:
        raise ConfigError("data.path", "data.source=beir needs a folder", "set data.path=<BEIR folder>")
    validate_training_data(cfg)
    if cfg.trainer.get("max_steps", -1) in (None, 0):
        raise ConfigError("trainer.max_steps", "must train at least one step", "set trainer.max_steps >= 1")


def validate_encoder_index(cfg: DictConfig) -> None:
    """A dense encoder needs the Faiss index, every sparse one (CSR included) the Lucene impact index;
    each family pools in its own way."""
    from splade_peft.model.dense import DENSE_POOLINGS
    from splade_peft.model.encoder import POOLINGS

    dense = cfg.encoder.name == "dense"
    if dense != (cfg.index.name == "faiss"):
        wanted = "faiss" if dense else "lucene"
        raise ConfigError("index.name", f"encoder={cfg.encoder.name} cannot use index={cfg.index.name}",
                          f"use index={wanted} with encoder={cfg.encoder.name} (faiss: dense, lucene: sparse)")
    poolings = DENSE_POOLINGS if cfg.encoder.name in ("dense", "csr") else POOLINGS
    if cfg.encoder.pooling not in poolings:
        raise ConfigError("encoder.pooling", f"{cfg.encoder.pooling!r} with encoder={cfg.encoder.name}",
                          f"use one of {', '.join(poolings)}")


def validate_adapter(cfg: DictConfig) -> None:
    """lora.method and the option keys it reads; a key the method ignores must keep its lora.yaml default."""
    # Imported here: the tables live with the adapters, and composing a config must not load torch.
    from splade_peft.model.adapters import ADAPTER_METHODS, HEAD_TRAINING, LORA_INITS, METHOD_KEYS, QUANTIZATIONS

    lora = cfg.lora
    for key, value, allowed in (
        ("method", lora.method, ADAPTER_METHODS), ("init", lora.init, LORA_INITS),
        ("quantization", lora.quantization, (None, *QUANTIZATIONS)), ("train_head", lora.train_head, HEAD_TRAINING),
    ):
        if value not in allowed:
            raise ConfigError(f"lora.{key}", f"{value!r} is not allowed", f"use one of {', '.join(map(str, allowed))}")
    defaults = OmegaConf.load(Path(__file__).parents[1] / "conf" / "lora" / "lora.yaml")
    used = METHOD_KEYS[lora.method]
    for key in defaults:
        if key != "method" and key not in used and lora[key] != defaults[key]:
            raise ConfigError(
                f"lora.{key}", f"lora.method={lora.method} does not use it (set to {lora[key]!r})",
                f"leave it at {defaults[key]!r}; {lora.method} reads {', '.join(sorted(used)) or 'no lora.* option'}",
            )
    if lora.init != "gaussian" and lora.train_head != "frozen":
        # PEFT (0.21) turns a PiSSA/OLoRA adapter into a plain LoRA at save time and drops the trained head copies.
        raise ConfigError("lora.train_head", f"{lora.train_head!r} with lora.init={lora.init}: the trained head would "
                          "not be saved", "use lora.train_head=frozen with lora.init=pissa|olora")
    if lora.method == "adalora" and (lora.target_r is None or lora.target_r > lora.r):
        raise ConfigError("lora.target_r", f"{lora.target_r!r} with lora.r={lora.r}", "use an integer in 1..lora.r")


def validate_training_data(cfg: DictConfig) -> None:
    """Negatives, teacher and losses that cannot work together, caught before any model is loaded."""
    data, weights = cfg.data, cfg.loss.weights
    if set(weights) - {"contrastive", "margin_mse", "kl"}:
        unknown = sorted(set(weights) - {"contrastive", "margin_mse", "kl"})[0]
        raise ConfigError(f"loss.weights.{unknown}", "is not a loss", "use contrastive, margin_mse, kl")
    if not any(weights.values()):
        raise ConfigError("loss.weights", "every ranking loss has weight 0", "give at least one loss a weight > 0")
    if data.training_file:
        has_teacher = data.teacher.from_training_file
    else:
        has_teacher = bool(data.teacher.scorers or data.teacher.files)
        if data.negatives_source in ("bm25", "random") and data.negatives > data.negatives_depth:
            raise ConfigError("data.negatives", f"{data.negatives} is more than the candidate pool "
                              f"(data.negatives_depth={data.negatives_depth})",
                              "lower data.negatives or raise data.negatives_depth")
        if data.negatives_source in ("file", "st_hard_negatives") and not data.negatives_file:
            raise ConfigError("data.negatives_file", f"data.negatives_source={data.negatives_source} needs a file",
                              "set data.negatives_file=<mined FlagEmbedding JSONL or msmarco-hard-negatives file>")
    distilling = [name for name in ("margin_mse", "kl") if weights.get(name)]
    if distilling and not has_teacher:
        raise ConfigError(f"loss.weights.{distilling[0]}", "distillation needs teacher scores and none are set",
                          "set data.teacher.scorers=[splade] (or [bm25]) or data.teacher.files=[...], or use loss=contrastive")
    if data.sampling == "teacher_rank" and not has_teacher:
        raise ConfigError("data.sampling", "teacher_rank needs teacher scores",
                          "set data.teacher.scorers or data.teacher.files, or data.sampling=uniform")
