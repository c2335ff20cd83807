"""`python -m splade_peft.export <run_dir or adapter dir> <out_dir>`: everything a trained encoder needs, merged
into a folder that sentence-transformers' `SparseEncoder(out_dir)` loads and that gives the same vectors.

- encoder=splade: the adapter merged into its base, saved as a plain Hugging Face masked LM at the folder's
  root (AutoModelForMaskedLM loads it alone), plus SpladePooling (max or sum) for sentence-transformers;
- encoder=splade_separate: a query LM and a document LM, each merged, behind a query/document Router;
- encoder=inference_free: the learned query table (relu'd, special tokens zeroed, as it scores) as a
  SparseStaticEmbedding for queries, the merged LM with SpladePooling for documents.

sentence-transformers keeps one maximum length per LM: encoder=splade's queries are cut at the documents'
length (model.doc_max_length), not model.query_max_length; the Router variants keep both.

Sparsifiers other than `none`, decoder backbones made bidirectional and the dense/csr families have no
sentence-transformers counterpart that scores the same: the export refuses them rather than write a model
that would. A QLoRA adapter is merged into the dequantised base: the export is full precision.

The folder's README.md is a model card built from the job's results.json (splade_peft/model_card.py);
sentence-transformers is told not to write its own.
"""

import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

from splade_peft.errors import DataError, SpladePeftError
from splade_peft.model.adapters import METADATA_FILE
from splade_peft.model.backbones import quantized_loading
from splade_peft.model.variants import OWN_PARAMETERS_FILE, QUERY_LM_FOLDER
from splade_peft.model_card import write_model_card

log = logging.getLogger(__name__)
QUERY_TABLE = "query_encoder.weights"  # the inference-free query table among the encoder's own parameters
EXPORTABLE = ("splade", "splade_separate", "inference_free")


@dataclass(frozen=True)
class EncoderSpec:
    """What the job encoded with: the variant, its pooling and sparsifiers, the texts' maximum lengths."""

    name: str
    pooling: str = "max"
    sparsifiers: tuple[str, ...] = ()  # the methods other than `none`, as `<side>=<method>`
    bidirectional: bool = False
    max_length: int | None = None  # the documents' (sentence-transformers keeps one length per LM)
    query_max_length: int | None = None


def adapter_folder(source: Path) -> Path:
    folder = source / "adapter" if (source / "adapter").is_dir() else source
    if not (folder / METADATA_FILE).exists():
        raise DataError(
            folder / METADATA_FILE, "not found: not a trained adapter folder",
            fix="pass a run folder of `python -m splade_peft` (it holds adapter/) or its adapter/ folder; "
            "lora=frozen trains nothing and has none",
        )
    return folder


def encoder_spec(folder: Path) -> EncoderSpec:
    """From the job's saved config (<run_dir>/.hydra/config.yaml); an adapter folder moved out of its run
    folder is read for what it holds (a query LM, a query table) and assumed max-pooled without sparsifiers."""
    saved = folder.parent / ".hydra" / "config.yaml"
    if not saved.exists():
        own = load_file(folder / OWN_PARAMETERS_FILE) if (folder / OWN_PARAMETERS_FILE).exists() else {}
        name = "splade_separate" if (folder / QUERY_LM_FOLDER).is_dir() else "inference_free" if QUERY_TABLE in own else "splade"
        log.warning("%s has no saved job config beside it: exporting it as encoder=%s, max pooling, no sparsifiers", folder, name)
        return EncoderSpec(name)
    config = OmegaConf.load(saved)
    encoder, model = config.encoder, config.model
    sparsifiers = tuple(f"{side}={spec.method}" for side, spec in encoder.get("sparsifiers", {}).items() if spec.method != "none")
    return EncoderSpec(encoder.name, encoder.get("pooling", "max"), sparsifiers, bool(encoder.get("bidirectional", False)),
                       model.get("doc_max_length"), model.get("query_max_length"))


def refuse_unexportable(spec: EncoderSpec) -> None:
    if spec.name not in EXPORTABLE:
        raise SpladePeftError(f"export: encoder={spec.name} is not a vocabulary-sparse SPLADE encoder; sentence-transformers' "
                              f"SparseEncoder cannot load it (exportable: {', '.join(EXPORTABLE)})")
    if spec.sparsifiers:
        raise SpladePeftError(f"export: encoder.sparsifiers.{spec.sparsifiers[0]} has no sentence-transformers module that "
                              "sparsifies the same way; the exported model would score differently -- export an encoder "
                              "trained with encoder.sparsifiers.*.method=none")
    if spec.bidirectional:
        raise SpladePeftError("export: encoder.bidirectional=true changes the decoder's attention at load time, which a "
                              "plain Hugging Face folder cannot record -- it is not exportable")


def merged_model(folder: Path):
    metadata = json.loads((folder / METADATA_FILE).read_text())
    if metadata["method"] == "full":
        model = AutoModelForMaskedLM.from_pretrained(folder)
    else:
        base_path = metadata["base_model"]
        if metadata["quantization"]:
            model_type = AutoConfig.from_pretrained(base_path).model_type
            loading = quantized_loading(metadata["quantization"], model_type, torch.float32,
                                        torch.device("cuda" if torch.cuda.is_available() else "cpu"))
            # Dequantised before merging: merging into k-bit weights would quantise the sum again.
            base = AutoModelForMaskedLM.from_pretrained(base_path, **loading).dequantize()
        else:
            base = AutoModelForMaskedLM.from_pretrained(base_path)
        model = PeftModel.from_pretrained(base, folder).merge_and_unload()
    model = model.to(torch.float32)
    if metadata["train_head"] == "full":
        # The trained vocabulary projection is a copy of its own: tied again on load, it would be replaced
        # by the input embeddings.
        model.config.tie_word_embeddings = False
    return model, metadata


def save_language_model(folder: Path, out_dir: Path) -> Path:
    """The adapter in `folder` merged into its base, saved with the base's tokenizer as a plain masked-LM folder."""
    model, metadata = merged_model(folder)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(metadata["base_model"]).save_pretrained(out_dir)
    return out_dir


def query_table(folder: Path, tokenizer) -> torch.Tensor:
    """The inference-free query weights as QueryWeightTable scores with them: relu'd, special tokens zero."""
    weights = torch.relu(load_file(folder / OWN_PARAMETERS_FILE)[QUERY_TABLE].float())
    weights[tokenizer.all_special_ids] = 0.0
    return weights


def export(source: Path, out_dir: Path) -> Path:
    folder = adapter_folder(Path(source))
    spec = encoder_spec(folder)
    refuse_unexportable(spec)
    out_dir = Path(out_dir)
    try:
        from sentence_transformers import SparseEncoder
        from sentence_transformers.sparse_encoder.modules import Router, SparseStaticEmbedding, SpladePooling, Transformer
    except ImportError:
        if spec.name != "splade":
            raise SpladePeftError(f"export: encoder={spec.name} is exported for sentence-transformers, which is not "
                                  "installed -- pip install 'sentence-transformers>=5'") from None
        log.warning("sentence-transformers is not installed: writing the merged masked LM only")
        save_language_model(folder, out_dir)
        write_model_card(folder, out_dir, spec.name, sentence_transformers=False)
        return out_dir

    def splade_modules(lm_folder: Path, max_length: int | None) -> list:
        lm = Transformer(str(lm_folder), transformer_task="fill-mask", max_seq_length=max_length)
        return [lm, SpladePooling(spec.pooling, embedding_dimension=lm.auto_model.config.vocab_size)]

    with tempfile.TemporaryDirectory(prefix="splade-peft-export-") as scratch:
        if spec.name == "splade":
            modules = splade_modules(save_language_model(folder, out_dir), spec.max_length)
        else:
            documents = splade_modules(save_language_model(folder, Path(scratch) / "documents"), spec.max_length)
            if spec.name == "splade_separate":
                query_lm = save_language_model(folder / QUERY_LM_FOLDER, Path(scratch) / "queries")
                queries = splade_modules(query_lm, spec.query_max_length or spec.max_length)
            else:
                tokenizer = documents[0].tokenizer
                queries = [SparseStaticEmbedding(tokenizer, weight=query_table(folder, tokenizer), frozen=True)]
            modules = [Router.for_query_document(query_modules=queries, document_modules=documents)]
        SparseEncoder(modules=modules, similarity_fn_name="dot", device="cpu").save(str(out_dir), create_model_card=False)
    write_model_card(folder, out_dir, spec.name)
    return out_dir


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m splade_peft.export <run_dir or adapter dir> <out_dir>")
    try:
        print(f"exported: {export(Path(sys.argv[1]), Path(sys.argv[2]))}")
    except SpladePeftError as error:
        sys.exit(f"splade_peft: {error}")


if __name__ == "__main__":
    main()
