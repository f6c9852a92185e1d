"""Run folders, the run listing, metric loggers. Knows nothing of training."""
