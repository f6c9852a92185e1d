"""The image's HEALTHCHECK: exit 0 when ``GET /health`` on this container's server answers 200.

The image has no curl (slim base), so the check is the standard library alone. It asks
127.0.0.1: the check runs inside the container, whatever address the server listens on.
It knows nothing of keys (``/health`` needs none) or of the models served.
"""

import os
import sys
import urllib.request

port = os.environ.get("TUNELAB_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=4) as r:
        sys.exit(0 if r.status == 200 else 1)
except OSError as e:  # refused, timed out, or an HTTP error status
    print(f"health check failed: {e}", file=sys.stderr)
    sys.exit(1)
