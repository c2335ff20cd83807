"""Corpus encoding: the project's encoder vs a naive loop and sentence-transformers, on the same texts; and
corpus encoding into vector files, the pipeline's path vs the per-document reference it replaced.

All three encoders produce log(1 + relu(logits)) max-pooled over the real tokens of the same checkpoint with
the same max length and threads; the naive loop is the textbook version (fixed batches in input
order, the full (batch, length, vocab) logits tensor in float32). The fraction of the machine's
matmul throughput is counted from the model's FLOPs on the real (unpadded) tokens.
"""

import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from splade_peft.index.encode import (dimension_names, encode_texts, encoded_batches, length_sorted_batches,
                                      term_weights, vocabulary_terms)
from splade_peft.index.impact import quantize, write_impact_batches, write_vector_collection
from splade_peft.index.sparsity import SparsityCounter
from splade_peft.memory import peak_memory
from splade_peft.model.encoder import SpladeEncoder

WEIGHT_TOLERANCE = 1e-4
TOP_TERMS = 10


@torch.inference_mode()
def naive_vectors(masked_lm, tokenizer, texts: list[str], max_length: int, batch_size: int = 32) -> torch.Tensor:
    """(texts, vocab): fixed batches in input order, full logits materialised, pooled after log1p(relu)."""
    masked_lm.eval()
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        logits = masked_lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        weights = torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)
        rows.append(weights.amax(dim=1))
    return torch.cat(rows)


def project_vectors(masked_lm, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    """(texts, vocab) from the pipeline's own encoder (`encode_texts`), densified for comparison."""
    terms = {term: column for column, term in enumerate(vocabulary_terms(tokenizer))}
    dense = torch.zeros(len(texts), len(terms))
    encoded = encode_texts(SpladeEncoder(masked_lm), tokenizer, dict(enumerate(texts)), max_length)
    for row, vector in encoded:
        for term, weight in vector.items():
            dense[row, terms[term]] = weight
    return dense


def sentence_transformers_vectors(checkpoint: Path, texts: list[str], max_length: int,
                                  batch_size: int = 32) -> Callable[[], torch.Tensor]:
    """A closure so that loading the SparseEncoder stays outside the timed part."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    model = SparseEncoder(modules=[
        Transformer(str(checkpoint), transformer_task="fill-mask", max_seq_length=max_length),
        SpladePooling(pooling_strategy="max"),
    ], device="cpu")
    return lambda: model.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                                convert_to_sparse_tensor=False, show_progress_bar=False).float().cpu()


def matmul_gflops(rows: int, hidden: int, vocab: int, min_seconds: float = 1.0) -> float:
    """The machine's fp32 matmul rate on the vocabulary projection's shape (rows x hidden @ hidden x vocab)."""
    left, right = torch.randn(rows, hidden), torch.randn(hidden, vocab)
    left @ right  # warm-up: thread pool and kernel selection
    repeats, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        left @ right
        repeats += 1
    return 2 * rows * hidden * vocab * repeats / (time.perf_counter() - started) / 1e9


def model_flops(config, lengths: list[int]) -> float:
    """Forward FLOPs (2 per multiply-add) of a BERT masked LM over texts of these real lengths."""
    hidden, ffn, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    total = 0.0
    for length in lengths:
        per_layer = 2 * length * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * length * length * hidden
        total += config.num_hidden_layers * per_layer + 2 * length * hidden * (hidden + vocab)
    return total


def compare(reference: torch.Tensor, candidate: torch.Tensor) -> dict:
    """Largest weight difference and how many texts' top terms (by weight) differ from the reference."""
    max_diff = (reference - candidate).abs().max().item()
    differing = sum(top_terms(expected) != top_terms(got) for expected, got in zip(reference, candidate))
    return {"max_abs_diff": max_diff, "texts_with_different_top_terms": differing,
            "identical": max_diff <= WEIGHT_TOLERANCE and differing == 0}


def top_terms(weights: torch.Tensor) -> list[int]:
    """The TOP_TERMS heaviest active terms of one vector, ties in term order."""
    order = torch.sort(weights, descending=True, stable=True).indices[:TOP_TERMS]
    return [term for term in order.tolist() if weights[term] > 0]


def timed(encode: Callable[[], torch.Tensor], rounds: int) -> tuple[torch.Tensor, float, float]:
    """(vectors, best seconds over the rounds, peak RSS growth in MB)."""
    best = float("inf")
    with peak_memory() as memory:
        for _ in range(rounds):
            started = time.perf_counter()
            vectors = encode()
            best = min(best, time.perf_counter() - started)
    return vectors, best, memory.peak_growth_mb


@torch.inference_mode()
def per_document_files(encoder, tokenizer, texts: Mapping[str, str], max_length: int, folder: Path, index) -> int:
    """The reference for the pipeline's corpus encoding (as it was before issue 27): each batch's dense
    (batch, vocabulary) block copied to the host, a dict per document, quantised in Python, the JSON written in
    series with the encoder. Returns documents written."""
    terms = vocabulary_terms(tokenizer)
    ids = list(texts)
    token_ids = tokenizer([texts[i] for i in ids], truncation=True, max_length=max_length)["input_ids"]

    def documents():
        for batch in length_sorted_batches([len(t) for t in token_ids], index.tokens_per_batch, index.max_batch_size):
            padded = tokenizer.pad({"input_ids": [token_ids[i] for i in batch]}, return_tensors="pt")
            weights = encoder(padded["input_ids"], padded["attention_mask"]).float().cpu()
            for row, position in enumerate(batch):
                yield ids[position], quantize(term_weights(weights[row], terms), index.quantization)

    return write_vector_collection(documents(), folder, index.shards)


def pipeline_files(encoder, tokenizer, texts: Mapping[str, str], max_length: int, folder: Path, index) -> int:
    """The pipeline's corpus encoding (evaluation/retrieval.py): non-zeros quantised where the encoder runs, one
    copy per batch, the JSON written by a background thread."""
    batches = encoded_batches(encoder, tokenizer, texts, max_length, index.tokens_per_batch, index.max_batch_size,
                              index.quantization)
    return write_impact_batches(batches, dimension_names(encoder, tokenizer), folder, index.shards, SparsityCounter())


def bench_corpus_files(encoder, tokenizer, texts: Mapping[str, str], max_length: int, index, rounds: int) -> dict:
    """Both ways of encoding a corpus into vector files on the same documents, taking turns for `rounds` rounds
    (each keeps its fastest), and whether they wrote the same bytes."""
    paths = {"per_document": per_document_files, "pipeline": pipeline_files}
    best = dict.fromkeys(paths, float("inf"))
    with tempfile.TemporaryDirectory(prefix="splade-bench-files-") as scratch:
        for _ in range(rounds):
            for name, write in paths.items():
                started = time.perf_counter()
                written = write(encoder, tokenizer, texts, max_length, Path(scratch) / name, index)
                best[name] = min(best[name], time.perf_counter() - started)
        identical = all((Path(scratch) / "per_document" / part.name).read_bytes() == part.read_bytes()
                        for part in (Path(scratch) / "pipeline").glob("*.jsonl"))
    return {"texts": len(texts), "written": written, "rounds": rounds, "tokens_per_batch": index.tokens_per_batch,
            "max_batch_size": index.max_batch_size, "identical_files": identical,
            **{f"{name}_docs_per_s": len(texts) / seconds for name, seconds in best.items()},
            "pipeline_vs_per_document": best["per_document"] / best["pipeline"]}


def bench_encoding(masked_lm, tokenizer, checkpoint: Path, texts: Mapping[str, str], max_length: int,
                   rounds: int, corpus: Mapping[str, str] | None = None, index=None) -> dict:
    """The three encoders on `texts`; with `corpus` and the `index` section, bench_corpus_files on `corpus`."""
    text_list = list(texts.values())
    lengths = [len(ids) for ids in tokenizer(text_list, truncation=True, max_length=max_length)["input_ids"]]
    encoders = {
        "naive": lambda: naive_vectors(masked_lm, tokenizer, text_list, max_length),
        "project": lambda: project_vectors(masked_lm, tokenizer, text_list, max_length),
        "sentence_transformers": sentence_transformers_vectors(checkpoint, text_list, max_length),
    }
    results, vectors = {}, {}
    for name, encode in encoders.items():
        vectors[name], seconds, growth_mb = timed(encode, rounds)
        results[name] = {"seconds": seconds, "docs_per_s": len(text_list) / seconds,
                         "tokens_per_s": sum(lengths) / seconds, "peak_rss_growth_mb": growth_mb}
    files = bench_corpus_files(SpladeEncoder(masked_lm), tokenizer, corpus, max_length, index, rounds) if corpus else None
    config = masked_lm.config
    matmul = matmul_gflops(max(lengths), config.hidden_size, config.vocab_size)
    flops = model_flops(config, lengths)
    for name, row in results.items():
        row["gflops"] = flops / row["seconds"] / 1e9
        row["fraction_of_matmul"] = row["gflops"] / matmul
        if name != "naive":
            row["vs_naive"] = compare(vectors["naive"], vectors[name])
    return {
        "texts": len(text_list), "real_tokens": sum(lengths), "max_length": max_length, "rounds": rounds,
        "matmul_gflops": matmul, "matmul_shape": [max(lengths), config.hidden_size, config.vocab_size],
        "model_gflops_per_pass": flops / 1e9,
        "projection_share_of_flops": 2 * sum(lengths) * config.hidden_size * config.vocab_size / flops,
        "encoders": results,
        **({"corpus_files": files} if files else {}),
        "ratios": {
            "project_vs_naive": results["naive"]["seconds"] / results["project"]["seconds"],
            "project_vs_sentence_transformers":
                results["sentence_transformers"]["seconds"] / results["project"]["seconds"],
            "project_fraction_of_matmul": results["project"]["fraction_of_matmul"],
            **({"files_pipeline_vs_per_document": files["pipeline_vs_per_document"]} if files else {}),
        },
    }
