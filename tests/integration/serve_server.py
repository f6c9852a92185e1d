"""A real `tunelab serve` process for tests: started on a free port, read back, stopped.

``start_server`` runs ``python -m tunelab serve`` with the given arguments on 127.0.0.1
port 0 (the server picks a free port and prints its URL), waits until it answers, and
returns a handle with the URL, the key and the process. Raw HTTP goes through the
standard library (``http_call``), so a test sees status codes and headers as sent.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"
KEY = "test-key-123"
_URL = re.compile(r"at (http://127\.0\.0\.1:(\d+))/v1")


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    port: int
    log: Path
    db_url: str
    key: str = KEY

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(10)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def client(self, **kwargs: Any):
        import openai

        return openai.OpenAI(api_key=kwargs.pop("api_key", self.key), base_url=f"{self.url}/v1",
                             max_retries=0, timeout=kwargs.pop("timeout", 60), **kwargs)


def start_server(folder: Path, args: list[str], config: dict | None = None,
                 env: dict[str, str] | None = None, timeout: float = 180,
                 db_url: str | None = None) -> Server:
    """Start `tunelab serve ARGS --port 0` with its log in ``folder``, and its database
    there too unless ``db_url`` names one."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    db_url = db_url or f"sqlite:///{folder / 'requests.db'}"
    argv = [sys.executable, "-m", "tunelab", "serve", *args, "--port", "0", "--db", db_url]
    if config is not None:
        (folder / "serve.yaml").write_text(yaml.safe_dump(config))
        argv += ["--config", str(folder / "serve.yaml")]
    log = folder / "server.log"
    full_env = {**os.environ, "TUNELAB_HOME": str(folder / "home"), "HF_HUB_OFFLINE": "1",
                "TUNELAB_API_KEYS": KEY, "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                cwd=folder)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        m = _URL.search(text)
        if m:
            server = Server(proc, m.group(1), int(m.group(2)), log, db_url)
            status, _, _ = http_call(server, "GET", "/health", key=None)
            assert status == 200
            return server
        if proc.poll() is not None:
            raise AssertionError(f"the server exited {proc.returncode}:\n{text}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the server did not start in {timeout} s:\n{log.read_text()}")


def http_call(server: Server, method: str, path: str, body: Any = None, key: str | None = KEY,
              raw: bytes | None = None, timeout: float = 60,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One request; returns the status, the headers (lower-case names) and the JSON body
    (or the text when it is not JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    h = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    try:
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        text = resp.read().decode()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    try:
        return resp.status, hdrs, json.loads(text)
    except json.JSONDecodeError:
        return resp.status, hdrs, text


def open_stream(server: Server, body: dict, path: str = "/v1/chat/completions"
                ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Start a streamed request; read events with ``next_event``, close the connection to leave."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", path, body=json.dumps({**body, "stream": True}).encode(),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    return conn, conn.getresponse()


def next_event(resp: http.client.HTTPResponse) -> str | None:
    """The data of the next server-sent event (None at the end of the stream)."""
    while True:
        line = resp.readline()
        if not line:
            return None
        line = line.decode().strip()
        if line.startswith("data: "):
            return line[len("data: "):]


def metric(server: Server, name: str, **labels: str) -> float | None:
    """One sample of the server's /metrics, or None if absent."""
    _, _, text = http_call(server, "GET", "/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key.split("{")[0] != name:
            continue
        got = key[len(name):].strip("{}")
        if ",".join(sorted(got.split(","))) == want or (not want and not got):
            return float(value)
    return None
