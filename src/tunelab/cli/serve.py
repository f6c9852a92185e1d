"""`tunelab serve`: arguments, the API key, and what a person starting a server reads.

Flags override the ``--config`` file (``tunelab.config.serve``). Keys come from
``TUNELAB_API_KEYS`` and ``--api-key-file``; with neither, a key is generated, printed
here once (stderr) and kept only in the server's memory. The admin key (``--admin-key``
or ``TUNELAB_ADMIN_KEY``) opens the /admin/ routes (experiment weights); without one
they stay off. Everything is printed to
stderr: a server has no result for stdout. Server logs go through ``logging`` at the
config's ``log_level``, never with prompt or answer text at info.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tunelab.cli import exits
from tunelab.cli.args import port


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the top-level sub-parsers."""
    s = sub.add_parser(
        "serve", help="serve models over an OpenAI-compatible HTTP API",
        description="Serve runs and models over HTTP (/v1/chat/completions, /v1/completions, "
                    "/v1/models), with API keys, limits, metrics, a request log and A/B "
                    "experiments. SIGTERM drains: requests in flight finish, then the server "
                    "exits 0. SIGHUP rereads the --config file's experiments.")
    s.add_argument("models", nargs="*", metavar="MODEL_OR_RUN",
                   help="run folders or names, store names or model folders (default: the "
                        "config's models)")
    s.add_argument("--config", default=None, metavar="YAML",
                   help="serve settings file (models, aliases, limits, filters, log)")
    s.add_argument("--host", default=None,
                   help="the address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=port, default=None,
                   help="the port (default 8000; 0 picks a free one)")
    s.add_argument("--api-key-file", default=None, metavar="FILE",
                   help="valid API keys, one a line (also read: TUNELAB_API_KEYS, "
                        "comma-separated); with neither, a key is made and printed once")
    s.add_argument("--admin-key", default=None, metavar="KEY",
                   help="turn on the /admin/ routes (experiment weights) with this key, which "
                        "no API key may equal (also read: TUNELAB_ADMIN_KEY, which keeps it "
                        "out of the process list); default: the admin routes are off")
    s.add_argument("--db", default=None, metavar="URL",
                   help="the request log database (default: SQLite under the tunelab home; "
                        "postgresql://... for several servers)")
    s.add_argument("--runs-dir", default=None,
                   help="where run names are looked up (default: the config's, else runs)")
    s.add_argument("--no-log-text", action="store_true",
                   help="keep only counts and timings in the request log, no prompts or answers")
    s.set_defaults(func=_cmd_serve)


def _cmd_serve(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.config.serve import load_serve_settings
    from tunelab.recipes.serve import run_serve
    from tunelab.serve.app.auth import configured_admin_key, configured_keys, generate_key

    settings = load_serve_settings(a.config, {
        "models": a.models or None, "host": a.host, "port": a.port, "db": a.db,
        "runs_dir": a.runs_dir, "log_text": False if a.no_log_text else None})
    keys = configured_keys(None, a.api_key_file)
    generated = None
    if not keys:
        generated = generate_key()
        keys = [generated]
    admin_key = configured_admin_key(a.admin_key, keys)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("tunelab")
    logger.addHandler(handler)
    logger.setLevel(settings.log_level.upper())

    def ready(url: str, names: list[str]) -> None:
        print(f"serving {', '.join(names)} at {url}/v1 (Ctrl-C or SIGTERM drains and stops)",
              file=sys.stderr)
        if generated is not None:
            print(f"API key (made for this run, shown once, kept only in memory): {generated}",
                  file=sys.stderr)
        sys.stderr.flush()

    drained = run_serve(settings, keys, ready, StderrReporter(), admin_key, a.config)
    if drained is False:
        print("stopped: the drain timeout passed; unfinished requests were cancelled",
              file=sys.stderr)
    else:
        print("stopped", file=sys.stderr)
    return exits.OK
