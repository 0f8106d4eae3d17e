"""Each socketserver example runs to completion and prints what it should."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def run(name: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-W", "error", os.path.join(EXAMPLES, name)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_tcp_echo():
    out = run("socketserver_tcp_echo.py")
    assert "Received: HELLO WORLD" in out
    assert "Received: NETLOOP SERVES SOCKETSERVER" in out
    assert "127.0.0.1 wrote: b'hello world'" in out


def test_stream_handler():
    out = run("socketserver_stream_handler.py")
    assert "Received: FIRST LINE" in out and "Received: SECOND LINE" in out


def test_udp():
    out = run("socketserver_udp.py")
    assert "Received: PING OVER UDP" in out and "Received: AND ANOTHER" in out


def test_threading():
    out = run("socketserver_threading.py")
    threads = re.findall(r"Received: (.+?): Hello World (\d)", out)
    assert [n for _, n in threads] == ["1", "2", "3"]
    assert len({name for name, _ in threads}) == 3  # three request threads
    assert "netloop-loop" not in {name for name, _ in threads}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forking():
    out = run("socketserver_forking.py")
    server_pid = int(re.search(r"server pid (\d+)", out).group(1))
    children = re.findall(r"child (\d+) of (\d+) got: request (\d)", out)
    assert [n for _, _, n in children] == ["1", "2", "3"]
    assert all(int(parent) == server_pid for _, parent, _ in children)
    assert len({pid for pid, _, _ in children}) == 3
    assert "clients exited with 0 ; children left: 0" in out


def test_echo_logging_call_order():
    out = run("socketserver_echo_logging.py")
    calls = [line.split(None, 1)[1].split(" ")[0] for line in out.splitlines()
             if line.startswith(("server", "handler"))]
    # shutdown() is called by the client's thread once it has its reply, which may be before
    # the loop's thread has logged the end of the request: check it apart.
    assert calls.index("shutdown") < len(calls) - 2
    calls.remove("shutdown")
    assert calls == [
        "__init__", "server_activate", "serve_forever",
        "get_request", "verify_request", "process_request", "finish_request",
        "__init__", "setup", "handle", "recv()->b'Hello,", "finish",
        "shutdown_request", "close_request",
        "serve_forever", "server_close",
    ], out
    assert out.index("server   serve_forever returned") > out.index("server   shutdown\n")
    assert "client   received b'Hello, world'" in out


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs AF_UNIX")
def test_shared_loop():
    out = run("socketserver_shared_loop.py")
    for line in ("tcp : b'OVER TCP\\n'", "udp : b'OVER UDP'", "unix: b'OVER A UNIX SOCKET\\n'",
                 "echo: b'through a dispatcher\\n'", "the loop's timer ticks"):
        assert line in out, out


def test_stdlib_servers():
    out = run("socketserver_stdlib_servers.py")
    assert "http.server: a file served by http.server on netloop" in out
    assert "wsgiref    : Hello from WSGI, you asked for /some/page" in out
    assert "xmlrpc     : pow(2, 10) = 1024" in out
