"""Every example runs to completion against real sockets, as a user would run it."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import subprocess
import sys
import threading

import pytest

from support import server_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))


def run_example(name: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(60)
def test_echo_server_and_client_examples() -> None:
    with server_process(os.path.join(EXAMPLES, "asyncore_echo_server.py"), "--max-connections",
                 "1") as server:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = line.strip().rsplit(":", 1)[1]
        client = run_example("asyncore_echo_client.py", "127.0.0.1", port, "ping over netloop")
        assert client.returncode == 0, client.stderr
        assert "received b'ping over netloop'" in client.stdout
        # The server stops by itself once its one connection is served.
        assert server.wait(timeout=20) == 0
        assert "Incoming connection from" in server.stdout.read()


@pytest.mark.timeout(60)
def test_http_client_example_against_a_local_http_server(tmp_path) -> None:
    body = b"netloop fetched this file\n" * 100
    (tmp_path / "page.txt").write_bytes(body)
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        port = httpd.server_address[1]
        result = run_example("asyncore_http_client.py", "http://127.0.0.1:%d/page.txt" % port)
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.0 200")
    assert result.stdout.endswith(body.decode())


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["heartbeat.py", "embedding.py"])
def test_loop_service_examples(name: str) -> None:
    result = run_example(name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(60)
def test_demo_command_prints_what_it_did() -> None:
    result = subprocess.run([sys.executable, "-m", "netloop", "demo", "--seconds", "0.5",
                             "--connections", "5"], env=ENV, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert "backend:" in result.stdout
    assert "round trips/s" in result.stdout
    count = int(result.stdout.split("\n")[1].split()[0])
    assert count > 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend,kind", [("auto", "dispatcher"), ("select", "dispatcher"),
                                          ("poll", "dispatcher"), ("auto", "chat"),
                                          ("auto", "socketserver")])
def test_echo_command_serves_and_stops_on_sigterm(backend: str, kind: str) -> None:
    import socket
    with server_process("-m", "netloop", "echo", "--backend", backend, "--kind", kind) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.strip().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            payload = (b"x" * 99 + b"\n") * 1000  # lines, so the chat kind echoes it too
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(65536)
                assert chunk
                got += chunk
            assert got == payload
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "stopped" in proc.stdout.read()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args", [["asyncore_echo_server.py", "--port", "0"],
                                  ["socketserver_tcp_echo.py", "serve", "0"],
                                  ["starttls_server.py", "CERT", "KEY", "0"]],
                         ids=lambda a: a[0])
def test_example_servers_stop_cleanly_on_sigterm(args) -> None:
    """The example servers run as services: SIGTERM (systemd's stop) ends them with status 0,
    as Ctrl-C does, not by the signal."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import tlssupport
    finally:
        sys.path.pop(0)
    paths = tlssupport.paths()
    argv = [paths["cert"] if a == "CERT" else paths["key"] if a == "KEY" else a for a in args]
    with server_process(os.path.join(EXAMPLES, argv[0]), *argv[1:]) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline()  # listening
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
