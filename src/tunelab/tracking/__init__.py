"""What a run leaves behind and how work reports: run folders, metric logs, reports.

- ``run_dir``: creating, finding and listing run folders, input fingerprints;
- ``loggers``: ``metrics.jsonl`` and TensorBoard;
- ``reporter``: the ``Reporter`` lower layers tell what is happening (silent by
  default; the CLI's writes to stderr);
- ``html``, ``plots``: the one HTML report shell and plot scaffolding that the data
  gate's and evaluation's reports share.

It knows nothing of training, models or data formats.
"""
