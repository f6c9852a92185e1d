"""tunelab: from raw examples to a fine-tuned, evaluated and served language model.

The public API is the names in ``__all__``: one function per workflow (the same ones
the CLI commands run), the pieces a script most often needs, the ``Reporter`` that
receives progress, and the exception tree. Importing this package has no side effects
and loads no heavy library: each name is imported on first use (``__getattr__``).

    import tunelab
    cfg = tunelab.load_config("run.yaml", ["train.learning_rate=1e-4"])
    run_dir = tunelab.run_train(cfg)  # silent; tunelab.cli.reporter.StderrReporter() shows progress
    run = tunelab.load_for_inference(str(run_dir))
    engine = tunelab.GenerationEngine(run.model, run.tokenizer, run.chat_template)
    answers = engine.generate([[{"role": "user", "content": "Hello"}]])  # one string per chat

Everything else is importable from its module but may change between versions.
"""

from __future__ import annotations

import importlib
from typing import Any

from tunelab.errors import (
    ConfigError,
    DatabaseError,
    DataError,
    ModelError,
    ModelNotFoundError,
    StoreError,
    TrainingError,
    TunelabError,
    UnsafeModelError,
    UsageError,
)

__version__ = "0.1.0"

# name -> the module that defines it (imported lazily, on first use)
_LAZY = {
    "EvalSettings": "tunelab.config.evaluation",
    "GenerationEngine": "tunelab.serve.engine",
    "Reporter": "tunelab.tracking.reporter",
    "RunConfig": "tunelab.config.schema",
    "SILENT": "tunelab.tracking.reporter",
    "check_data": "tunelab.gate.check",
    "config_from_dict": "tunelab.config.loader",
    "load_config": "tunelab.config.loader",
    "load_eval_config": "tunelab.config.evaluation",
    "load_examples": "tunelab.data.load",
    "load_for_inference": "tunelab.models.runs",
    "run_curve": "tunelab.recipes.curve",
    "run_evaluation": "tunelab.recipes.evaluate",
    "run_quickstart": "tunelab.recipes.quickstart",
    "run_train": "tunelab.recipes.train",
    "run_tune": "tunelab.recipes.tune",
}

__all__ = [
    "ConfigError",
    "DataError",
    "DatabaseError",
    "EvalSettings",
    "GenerationEngine",
    "ModelError",
    "ModelNotFoundError",
    "Reporter",
    "RunConfig",
    "SILENT",
    "StoreError",
    "TrainingError",
    "TunelabError",
    "UnsafeModelError",
    "UsageError",
    "__version__",
    "check_data",
    "config_from_dict",
    "load_config",
    "load_eval_config",
    "load_examples",
    "load_for_inference",
    "run_curve",
    "run_evaluation",
    "run_quickstart",
    "run_train",
    "run_tune",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tunelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return list(__all__)
