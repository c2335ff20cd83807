"""Retrieval metrics on a validation split during training, logged as `val/<metric>`.

Every `every_n_steps` optimizer steps the validation corpus and queries are encoded and searched with
the in-memory exact searcher: it returns the Lucene impact index's rankings (see search/exact.py)
without writing a collection, starting a JVM and building an index, which would cost seconds per check.
"""

import lightning as L
from lightning.pytorch.callbacks import Callback

from splade_peft.data.collection import Collection
from splade_peft.evaluation.metrics import evaluate
from splade_peft.index.encode import encode_texts
from splade_peft.index.impact import quantize
from splade_peft.model.variants import SparseEncoder
from splade_peft.search.exact import ExactImpactSearcher


class RetrievalValidation(Callback):
    def __init__(self, collection: Collection, tokenizer, every_n_steps: int, query_max_length: int,
                 doc_max_length: int, quantization: float, k: int):
        self.collection, self.tokenizer, self.every_n_steps = collection, tokenizer, every_n_steps
        self.query_max_length, self.doc_max_length = query_max_length, doc_max_length
        self.quantization, self.k = quantization, k
        self.history: list[tuple[int, dict[str, float]]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        encoder = pl_module.encoder
        was_training = encoder.training
        metrics = {f"val/{name}": value for name, value in self.evaluate(encoder).items()}
        encoder.train(was_training)  # encode_texts leaves the encoder in eval mode
        self.history.append((step, metrics))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def evaluate(self, encoder: SparseEncoder) -> dict[str, float]:
        documents = self._quantised(encoder.side("documents"), self.collection.corpus, self.doc_max_length)
        queries = self._quantised(encoder.side("queries"), self.collection.queries, self.query_max_length)
        run = ExactImpactSearcher(documents.items()).search(queries, self.k)
        return evaluate(self.collection.qrels, run, min_relevant_grade=self.collection.min_relevant_grade)

    def _quantised(self, encoder, texts, max_length: int) -> dict:
        return {text_id: quantize(vector, self.quantization)
                for text_id, vector in encode_texts(encoder, self.tokenizer, texts, max_length)}
