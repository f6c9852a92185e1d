"""The HTTP server above the engine: OpenAI-compatible routes, keys, limits, metrics, log.

``create_app`` builds the FastAPI app over a loaded ``ModelRegistry``; ``DrainingServer``
runs it on uvicorn and drains on SIGTERM. The engine below (``tunelab.serve.batching``)
knows nothing of HTTP; this package knows nothing of how models are loaded.
"""

from tunelab.serve.app.api import create_app

__all__ = ["create_app"]
