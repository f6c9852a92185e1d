"""The data-quality gate: what a user runs on data before training on it.

- ``check``: line-numbered findings (format, empty or over-long rows, duplicates, PII);
- ``profile``, ``report``: statistics, plots and the HTML report of a data set;
- ``clean``, ``dedup``, ``split``, ``balance``, ``augment``: file-to-file operations;
- ``labels``, ``leakage``, ``pii``: label conflicts and agreement, train/test overlap,
  personal data.

It reads files through ``tunelab.data`` and receives a tokenizer when it needs one; it
never loads a model and never prints (the CLI shows what it returns).
"""
