"""What training, evaluation and serving read: the inputs, never their quality.

- ``example``: the canonical example (a chat of messages, with tools if any);
- ``readers``, ``formats``, ``extra_formats``, ``load``: read JSONL/JSON/CSV/TSV/Parquet
  files, detect their format and turn each row into an ``Example`` with its line number;
- ``table``: row tables (text and label columns) for the gate and evaluation;
- ``template``, ``length``, ``token_lengths``: the one chat rendering (with answer-only
  loss masks) that training, evaluation and serving share, and the over-length policy;
- ``findings``: the per-line finding that every reader reports;
- ``tasks``: the synthetic tasks we generate (the quickstart's ticket routing).

This package receives a tokenizer object and never loads a model; it knows nothing of
data quality (``tunelab.gate``), training or serving.
"""
