"""The project's Hydra config as the benchmarks compose it (the checkout's conf/ folder)."""

from pathlib import Path

from hydra import compose, initialize_config_dir

from splade_peft.config import validate

CONF = Path(__file__).resolve().parents[1] / "conf"


def project_config(overrides: list[str]):
    """conf/config.yaml on SciFact without a logger, with `overrides`, validated as a job's config is."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["data=scifact", "logger=none", *overrides])
    validate(cfg)
    return cfg
