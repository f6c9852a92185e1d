"""tunelab: from raw examples to a fine-tuned, evaluated and served language model.

Importing this package has no side effects and loads no heavy library; the public
API below imports lazily.
"""

from __future__ import annotations

from tunelab.errors import (
    ConfigError,
    DataError,
    ModelError,
    ModelNotFoundError,
    StoreError,
    TrainingError,
    TunelabError,
    UnsafeModelError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "ModelError",
    "ModelNotFoundError",
    "StoreError",
    "TrainingError",
    "TunelabError",
    "UnsafeModelError",
    "__version__",
]
