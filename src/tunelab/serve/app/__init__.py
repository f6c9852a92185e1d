"""The HTTP server above the engine: OpenAI-compatible routes, keys, limits, metrics, log.

``create_app`` (``tunelab.serve.app.api``) builds the FastAPI app over a loaded
``ModelRegistry``; ``DrainingServer`` (``.server``) runs it on uvicorn and drains on
SIGTERM. The engine below (``tunelab.serve.batching``) knows nothing of HTTP; this
package knows nothing of how models are loaded. Importing the package is light: the app
(and with it torch) loads when ``create_app`` is first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from tunelab.serve.app.api import create_app

        return create_app
    raise AttributeError(name)
