"""The names the tables give their rows, shared by a job's summary table (summary.py) and the sweep report
(sweep/): the reference systems every job scores beside the trained model, and the trained model itself."""

BM25, ZERO_SHOT, FUSION = "BM25", "zero-shot", "BM25 + zero-shot"
TRAINED = "trained"
# results.json `references` and per_query.json rows (results.REFERENCE_SYSTEMS) -> the label a table shows
REFERENCE_LABELS = {"bm25": BM25, "zero_shot": ZERO_SHOT, "fusion": FUSION}
