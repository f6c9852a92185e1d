"""`tunelab serve` started wrong, and started without a key: a message and an exit code, or
a key made, printed once and required."""

from __future__ import annotations

import socket

import pytest
from serve_server import http_call, start_server

from tunelab.cli import exits
from tunelab.cli.main import main


def test_a_port_in_use_is_refused_before_any_model_loads(capsys, tiny_model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", str(tiny_model_dir), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == exits.USAGE and f"port {port} on 127.0.0.1 is in use" in err
    assert "loading" not in err and "Traceback" not in err


def test_an_unknown_model_is_a_model_error(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code = main(["serve", "no-such-model", "--port", "0"])
    err = capsys.readouterr().err
    assert code == exits.MODEL and "no-such-model" in err and "Traceback" not in err


def test_a_key_file_without_keys_is_refused(capsys, tmp_path, tiny_model_dir):
    (tmp_path / "keys").write_text("# none yet\n")
    code = main(["serve", str(tiny_model_dir), "--api-key-file", str(tmp_path / "keys")])
    assert code == exits.USAGE and "holds no key" in capsys.readouterr().err


@pytest.mark.slow
def test_without_a_key_one_is_made_printed_once_and_required(tmp_path, tiny_model_dir):
    s = start_server(tmp_path / "keyless", [str(tiny_model_dir)], {"public_metrics": True},
                     env={"TUNELAB_API_KEYS": ""})
    try:
        lines = [x for x in s.output().splitlines() if x.startswith("API key")]
        assert len(lines) == 1
        key = lines[0].rsplit(": ", 1)[1]
        assert len(key) >= 40
        assert http_call(s, "GET", "/v1/models", key=None)[0] == 401
        status, _, body = http_call(s, "GET", "/v1/models", key=key)
        assert status == 200 and body["data"][0]["id"] == str(tiny_model_dir)
        assert http_call(s, "GET", "/metrics", key=None)[0] == 200  # public_metrics: true
    finally:
        assert s.stop() == 0
    assert s.output().count(key) == 1
