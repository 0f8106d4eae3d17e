"""The command line speaks TLS: ``echo --tls-cert/--tls-key`` (every kind) and ``demo --tls``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

import tlssupport
from support import server_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind,extra", [("dispatcher", []), ("chat", []), ("socketserver", []),
                                        ("chat", ["--workers", "1"]),
                                        ("socketserver", ["--workers", "1"])])
def test_echo_serves_tls(kind: str, extra: list) -> None:
    p = tlssupport.paths()
    with server_process("-m", "netloop", "echo", "--kind", kind, "--tls-cert", p["cert"],
                        "--tls-key", p["key"], *extra) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "TLS) listening on 127.0.0.1:" in line, line
        port = int(line.strip().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with tlssupport.client_context().wrap_socket(raw, server_hostname="localhost") as s:
                payload = (b"y" * 99 + b"\n") * 500
                s.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    chunk = s.recv(65536)
                    assert chunk
                    got += chunk
                assert got == payload
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_echo_with_a_bad_certificate_is_one_line_error(tmp_path: "os.PathLike[str]") -> None:
    bad = os.path.join(str(tmp_path), "bad.pem")
    with open(bad, "w") as f:
        f.write("not a certificate\n")
    proc = subprocess.run([sys.executable, "-m", "netloop", "echo", "--tls-cert", bad],
                          env=ENV, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cannot load the TLS certificate" in proc.stderr


@pytest.mark.timeout(60)
def test_demo_tls() -> None:
    p = tlssupport.paths()
    proc = subprocess.run([sys.executable, "-m", "netloop", "demo", "--tls", "--seconds", "0.3",
                           "--connections", "5", "--tls-cert", p["cert"], "--tls-key", p["key"]],
                          env=ENV, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert "TLS)" in proc.stdout and "round trips/s" in proc.stdout


@pytest.mark.timeout(60)
def test_demo_tls_makes_its_own_certificate() -> None:
    proc = subprocess.run([sys.executable, "-m", "netloop", "demo", "--tls", "--seconds", "0.2",
                           "--connections", "2"],
                          env=ENV, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert "TLS)" in proc.stdout
