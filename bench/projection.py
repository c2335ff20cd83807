"""`python -m bench.projection`: the SPLADE encoder's training step, before vs after the batched projection.

Times forward + backward of the encoder (the default LoRA on splade-2l) on one batch of the default SciFact
training shape (experiment=scifact_local: 8 queries of at most 32 tokens, 8 x (1 + 4) documents of at most
256), with MaskedMaxProjection as it is now and with the implementation it replaced (kept here only, as
the "before" reference). Repeats alternate between the two; the best of each is kept, and their ratio is
printed: other processes on a shared machine slow single repeats, rarely the best one.
"""

import argparse
import json
import time
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from unittest import mock

import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from splade_peft.model import encoder as encoder_module
from splade_peft.model.adapters import wrap_with_adapter
from splade_peft.model.encoder import SpladeEncoder

REPO = Path(__file__).resolve().parents[1]
QUERIES, DOCUMENTS_PER_QUERY, QUERY_LENGTH, DOCUMENT_LENGTH = 8, 1 + 4, 32, 256


class BeforeMaskedMaxProjection(torch.autograd.Function):
    """The training path this module's measurement compares against: one text at a time over its real tokens
    (a host sync per text to find them), and a backward over the non-zero gradients with index_put_."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, attention_mask):
        values = hidden.new_empty(hidden.shape[0], weight.shape[0])
        argmax = torch.empty(values.shape, dtype=torch.long, device=hidden.device)
        projection = weight.to(hidden.dtype).T
        for row, mask in enumerate(attention_mask.bool()):
            positions = mask.nonzero().squeeze(1)
            row_max = (hidden[row, positions] @ projection).max(dim=0)
            values[row], argmax[row] = row_max.values, positions[row_max.indices]
        if bias is not None:
            values.add_(bias.to(values.dtype))
        ctx.save_for_backward(hidden, weight, argmax)
        return values

    @staticmethod
    def backward(ctx, grad_values):
        hidden, weight, argmax = ctx.saved_tensors
        rows, terms = grad_values.nonzero(as_tuple=True)
        grads = grad_values[rows, terms].unsqueeze(1)
        grad_hidden = torch.zeros_like(hidden)
        grad_hidden.index_put_((rows, argmax[rows, terms]), grads * weight[terms].to(grads.dtype), accumulate=True)
        return grad_hidden, None, None, None  # the benchmark's vocabulary projection is frozen (tied embeddings)


@contextmanager
def projection_function(function):
    with mock.patch.object(encoder_module, "MaskedMaxProjection", function):
        yield


def scifact_texts(folder: Path) -> tuple[list[str], list[str]] | None:
    """The first queries and documents of SciFact, for a realistic amount of padding (None when absent)."""
    if not (folder / "corpus.jsonl").exists():
        return None
    with open(folder / "queries.jsonl") as queries, open(folder / "corpus.jsonl") as corpus:
        query_texts = [json.loads(line)["text"] for line in islice(queries, QUERIES)]
        documents = [json.loads(line) for line in islice(corpus, QUERIES * DOCUMENTS_PER_QUERY)]
    return query_texts, [f"{d.get('title', '')} {d['text']}" for d in documents]


def default_batch(checkpoint: Path, data: Path) -> tuple[BertForMaskedLM, dict, dict]:
    """splade-2l and SciFact when present; otherwise a random model of splade-2l's size and full-length texts."""
    texts = scifact_texts(data)
    if (checkpoint / "config.json").exists() and texts is not None:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        def tokenize(batch, length):
            return dict(tokenizer(batch, padding=True, truncation=True, max_length=length,
                                  return_tensors="pt", return_token_type_ids=False))

        model = BertForMaskedLM.from_pretrained(checkpoint)
        return model, tokenize(texts[0], QUERY_LENGTH), tokenize(texts[1], DOCUMENT_LENGTH)
    print(f"{checkpoint} or {data} missing: a random model and random full-length texts")
    config = BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512)

    def random_texts(count, length):
        return {"input_ids": torch.randint(1000, 30522, (count, length)),
                "attention_mask": torch.ones(count, length, dtype=torch.long)}

    return BertForMaskedLM(config), random_texts(QUERIES, QUERY_LENGTH), random_texts(QUERIES * DOCUMENTS_PER_QUERY, DOCUMENT_LENGTH)


def training_step(encoder: SpladeEncoder, queries: dict, documents: dict) -> tuple[float, torch.Tensor]:
    """Seconds for forward + backward of both sides, and the query-document scores (to check both agree)."""
    encoder.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks for both implementations
    started = time.perf_counter()
    scores = encoder(**queries) @ encoder(**documents).T
    scores.sum().backward()
    return time.perf_counter() - started, scores.detach()


def bench_projection(checkpoint: Path, data: Path, repeats: int = 5) -> dict:
    masked_lm, queries, documents = default_batch(checkpoint, data)
    lora = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "lora" / "lora.yaml"), {"dropout": 0.0})
    encoder = SpladeEncoder(wrap_with_adapter(masked_lm, lora)).train()
    times = {"before": [], "after": []}
    scores = {}
    for repeat in range(repeats + 1):  # the first round warms up allocator and thread pool, and is dropped
        for name, function in (("before", BeforeMaskedMaxProjection), ("after", encoder_module.MaskedMaxProjection)):
            with projection_function(function):
                seconds, scores[name] = training_step(encoder, queries, documents)
            if repeat:
                times[name].append(seconds)
    before, after = min(times["before"]), min(times["after"])
    return {
        "threads": torch.get_num_threads(), "repeats": repeats,
        "queries": list(queries["input_ids"].shape), "documents": list(documents["input_ids"].shape),
        "before_best_s": round(before, 3), "after_best_s": round(after, 3), "speedup": round(before / after, 2),
        "max_score_difference": (scores["before"] - scores["after"]).abs().max().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO / ".cache" / "checkpoints" / "splade-2l")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "scifact")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(bench_projection(args.checkpoint, args.data, args.repeats), indent=2))


if __name__ == "__main__":
    main()
