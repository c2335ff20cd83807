"""Corpus encoding: the project's encoder vs a naive loop and sentence-transformers, on the same texts.

All three produce log(1 + relu(logits)) max-pooled over the real tokens of the same checkpoint with
the same max length and threads; the naive loop is the textbook version (fixed batches in input
order, the full (batch, length, vocab) logits tensor in float32). The fraction of the machine's
matmul throughput is counted from the model's FLOPs on the real (unpadded) tokens.
"""

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from splade_peft.memory import peak_memory
from splade_peft.index.encode import encode_texts, vocabulary_terms
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


def bench_encoding(masked_lm, tokenizer, checkpoint: Path, texts: Mapping[str, str], max_length: int,
                   rounds: int) -> dict:
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
        "ratios": {
            "project_vs_naive": results["naive"]["seconds"] / results["project"]["seconds"],
            "project_vs_sentence_transformers":
                results["sentence_transformers"]["seconds"] / results["project"]["seconds"],
            "project_fraction_of_matmul": results["project"]["fraction_of_matmul"],
        },
    }
