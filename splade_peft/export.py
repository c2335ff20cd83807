"""`python -m splade_peft.export <run_dir or adapter dir> <out_dir>`: merge a trained adapter into its base
and save a plain Hugging Face masked-LM folder (weights, config, tokenizer) that AutoModelForMaskedLM loads
alone. A QLoRA adapter is merged into the dequantised base: the export is full precision.
"""

import json
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

from splade_peft.errors import DataError
from splade_peft.model.adapters import METADATA_FILE
from splade_peft.model.backbones import quantized_loading


def adapter_folder(source: Path) -> Path:
    folder = source / "adapter" if (source / "adapter").is_dir() else source
    if not (folder / METADATA_FILE).exists():
        raise DataError(
            folder / METADATA_FILE, "not found: not a trained adapter folder",
            fix="pass a run folder of `python -m splade_peft` (it holds adapter/) or its adapter/ folder; "
            "lora=frozen trains nothing and has none",
        )
    return folder


def merged_model(folder: Path, metadata: dict):
    if metadata["method"] == "full":
        return AutoModelForMaskedLM.from_pretrained(folder)
    base_path = metadata["base_model"]
    if metadata["quantization"]:
        model_type = AutoConfig.from_pretrained(base_path).model_type
        loading = quantized_loading(metadata["quantization"], model_type, torch.float32, on_gpu=torch.cuda.is_available())
        # Dequantised before merging: merging into k-bit weights would quantise the sum again.
        base = AutoModelForMaskedLM.from_pretrained(base_path, **loading).dequantize()
    else:
        base = AutoModelForMaskedLM.from_pretrained(base_path)
    return PeftModel.from_pretrained(base, folder).merge_and_unload()


def export(source: Path, out_dir: Path) -> Path:
    folder = adapter_folder(Path(source))
    metadata = json.loads((folder / METADATA_FILE).read_text())
    model = merged_model(folder, metadata).to(torch.float32)
    if metadata["train_head"] == "full":
        # The trained vocabulary projection is a copy of its own: tied again on load, it would be replaced
        # by the input embeddings.
        model.config.tie_word_embeddings = False
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(metadata["base_model"]).save_pretrained(out_dir)
    return Path(out_dir)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m splade_peft.export <run_dir or adapter dir> <out_dir>")
    print(f"exported: {export(Path(sys.argv[1]), Path(sys.argv[2]))}")


if __name__ == "__main__":
    main()
