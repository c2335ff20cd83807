"""Evaluating what an earlier job trained, without training (`model.adapter=<folder> lora=frozen`).

The folder is either a job's adapter folder (<run_dir>/adapter as SparseEncoder.save wrote it, or the run
folder holding it): the configured backbone is loaded and the saved adapter(s) and encoder parameters are
put on it; or an exported folder (`python -m splade_peft.export`): a plain masked LM, loaded as the backbone.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch import nn

from splade_peft.errors import ConfigError, DataError
from splade_peft.model.adapters import METADATA_FILE
from splade_peft.model.variants import OWN_PARAMETERS_FILE, QUERY_LM_FOLDER

log = logging.getLogger(__name__)


def adapter_location(path: str | Path) -> Path:
    """The folder itself, or the adapter/ folder of a run folder."""
    path = Path(path).expanduser()
    return path / "adapter" if (path / "adapter").is_dir() else path


def is_exported(folder: Path) -> bool:
    return (folder / "config.json").exists() and not (folder / METADATA_FILE).exists()


def check_saved(adapter: str | None) -> Path | None:
    """The folder model.adapter names (None when unset), refused early when it cannot be evaluated."""
    if not adapter:
        return None
    folder = adapter_location(adapter)
    if not (folder / METADATA_FILE).exists() and not is_exported(folder):
        raise DataError(folder, "is neither a job's adapter folder (no splade_peft.json) nor an exported model folder "
                        "(no config.json)", fix="pass <run_dir>, <run_dir>/adapter or a `python -m splade_peft.export` folder")
    return folder


def backbone_config(model_cfg: DictConfig) -> DictConfig:
    """The `model` section, with an exported folder as the backbone when model.adapter names one."""
    folder = check_saved(model_cfg.adapter)
    if folder is None or not is_exported(folder):
        return model_cfg
    return OmegaConf.merge(model_cfg, {"name_or_path": str(folder), "random_init": None, "num_layers": None})


@dataclass
class SavedEncoder:
    """A job's adapter folder, applied to the encoder build_encoder makes from the configured backbone."""

    folder: Path

    def adapt(self):
        """An `adapt` for build_encoder: the document (or shared) LM gets the folder's adapter, a separate query
        LM the one in its query_encoder/ subfolder (build_encoder adapts the document LM first)."""
        folders = iter([self.folder, self.folder / QUERY_LM_FOLDER])
        return lambda masked_lm: load_adapter(masked_lm, next(folders))

    def load_own_parameters(self, encoder: nn.Module) -> None:
        """The query table and learned sparsifier values the job trained (absent: the encoder has none)."""
        path = self.folder / OWN_PARAMETERS_FILE
        own = encoder.own_parameters() if hasattr(encoder, "own_parameters") else {}
        saved = load_file(path) if path.exists() else {}
        if set(saved) != set(own):
            raise ConfigError("encoder", f"the saved encoder in {self.folder} has parameters {sorted(saved) or 'none'}, "
                              f"this encoder= config {sorted(own) or 'none'}", "use the encoder= options the job trained with")
        with torch.no_grad():
            for name, parameter in own.items():
                parameter.copy_(saved[name])
                parameter.requires_grad_(False)


def saved_encoder(adapter: str | None) -> SavedEncoder | None:
    """The adapter folder model.adapter names; None when unset or an exported folder (that is the backbone)."""
    folder = check_saved(adapter)
    return SavedEncoder(folder) if folder is not None and not is_exported(folder) else None


def load_adapter(masked_lm: nn.Module, folder: Path) -> nn.Module:
    if not (folder / METADATA_FILE).exists():
        raise DataError(folder / METADATA_FILE, "not found: the encoder= config has a second LM the saved job did not train",
                        fix="use the encoder= options the job trained with")
    metadata = json.loads((folder / METADATA_FILE).read_text())
    if metadata["base_model"] != masked_lm.name_or_path:
        log.warning("the adapter in %s was trained on %s; loading it on %s", folder, metadata["base_model"], masked_lm.name_or_path)
    if metadata["method"] == "full":  # the whole LM was trained and saved
        return type(masked_lm).from_pretrained(folder).requires_grad_(False)
    from peft import PeftModel

    return PeftModel.from_pretrained(masked_lm, folder, is_trainable=False)
