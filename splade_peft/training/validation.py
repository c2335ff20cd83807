"""Retrieval metrics on a validation split, as Lightning validates: every `eval.validate_every_n_steps`
optimizer steps SpladeModule.validation_step encodes the split's corpus and queries, batch by batch,
and at the end they are searched with the in-memory exact searcher and logged as `val/<metric>`, which
ModelCheckpoint (training.keep_best) and EarlyStopping (training.early_stopping_patience) can monitor.

The exact searcher returns the Lucene impact index's rankings (see search/exact.py) without writing a
collection, starting a JVM and building an index, which would cost seconds per check.
"""

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from splade_peft.data.collection import Collection
from splade_peft.device import on_job_device
from splade_peft.evaluation.metrics import evaluate
from splade_peft.index.encode import length_sorted_batches, term_weights, vocabulary_terms
from splade_peft.index.impact import quantize
from splade_peft.model.variants import as_sparse_encoder
from splade_peft.search.exact import ExactImpactSearcher

SIDES = ("documents", "queries")


@dataclass(frozen=True)
class ValidationSplit:
    """The split a job chooses on and how it is searched: `split` (eval.validation_split: DEV_SPLIT, the
    split carved from the training queries, or a split of the training dataset by name), sliced to
    eval.validation_max_queries / validation_max_documents, searched to depth eval.k with the index's
    quantisation and encoding batches; validated every `every_n_steps` optimizer steps during training
    (eval.validate_every_n_steps, 0: only the final model is measured on it)."""

    every_n_steps: int
    split: str
    max_queries: int | None
    max_documents: int | None
    k: int
    quantization: float
    tokens_per_batch: int
    max_batch_size: int

    @classmethod
    def of(cls, eval_cfg, index_cfg) -> "ValidationSplit":
        """The eval and index sections' validation settings."""
        return cls(eval_cfg.validate_every_n_steps, eval_cfg.validation_split, eval_cfg.validation_max_queries,
                   eval_cfg.validation_max_documents, eval_cfg.k, index_cfg.quantization, index_cfg.tokens_per_batch,
                   index_cfg.max_batch_size)


class RetrievalValidation:
    def __init__(self, collection: Collection, tokenizer, query_max_length: int, doc_max_length: int,
                 quantization: float, k: int, tokens_per_batch: int = 8192, max_batch_size: int = 64):
        self.collection, self.tokenizer = collection, tokenizer
        self.max_lengths = {"documents": doc_max_length, "queries": query_max_length}
        self.quantization, self.k = quantization, k
        self.tokens_per_batch, self.max_batch_size = tokens_per_batch, max_batch_size
        self.terms = vocabulary_terms(tokenizer)
        self.vectors: dict[str, dict] = {side: {} for side in SIDES}

    def texts(self, side: str) -> dict[str, str]:
        return self.collection.corpus if side == "documents" else self.collection.queries

    def batches(self) -> list[dict]:
        """The corpus, then the queries, tokenised and length-sorted into padded batches."""
        batches = []
        for side in SIDES:
            texts = self.texts(side)
            ids = list(texts)
            token_ids = self.tokenizer([texts[i] for i in ids], truncation=True, max_length=self.max_lengths[side])["input_ids"]
            for batch in length_sorted_batches([len(t) for t in token_ids], self.tokens_per_batch, self.max_batch_size):
                padded = self.tokenizer.pad({"input_ids": [token_ids[i] for i in batch]}, return_tensors="pt")
                batches.append({"side": side, "ids": [ids[i] for i in batch], "input_ids": padded["input_ids"],
                                "attention_mask": padded["attention_mask"]})
        return batches

    def dataloader(self) -> DataLoader:
        # Its own generator: starting to iterate a DataLoader draws a seed, and drawing it from the global
        # RNG would make a resumed run's batches differ from an uninterrupted one's.
        return DataLoader(self.batches(), batch_size=None, generator=torch.Generator())

    def start(self) -> None:
        self.vectors = {side: {} for side in SIDES}

    def add(self, side: str, ids: list[str], weights: torch.Tensor, terms: list[str] | None = None) -> None:
        """Quantised vectors of a batch; `terms` names the dimensions when they are not the vocabulary's."""
        # fp32 before quantising: under bf16 autocast the encoder's output may be bf16.
        for text_id, row in zip(ids, weights.float().cpu()):
            self.vectors[side][text_id] = quantize(term_weights(row, terms or self.terms), self.quantization)

    def metrics(self) -> dict[str, float]:
        run = ExactImpactSearcher(self.vectors["documents"].items()).search(self.vectors["queries"], self.k)
        return evaluate(self.collection.qrels, run, min_relevant_grade=self.collection.min_relevant_grade)


def selection_metrics(encoder, validation: RetrievalValidation, trainer_cfg) -> dict[str, float]:
    """The encoder as it leaves training (the kept checkpoint with training.keep_best) on the validation
    split, on the job's device and precision (the trainer section): the job's dev figure."""
    encoder = as_sparse_encoder(encoder)
    encoder.eval()
    validation.start()
    with on_job_device(encoder, trainer_cfg) as device, torch.inference_mode():
        for batch in validation.dataloader():
            side = encoder.side(batch["side"])
            weights = side(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            validation.add(batch["side"], batch["ids"], weights, getattr(side, "term_names", None))
    return validation.metrics()
