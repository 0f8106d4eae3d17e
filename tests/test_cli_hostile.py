"""The command-line servers, each in its own process, against clients that misbehave: a line
that never ends, a client that never reads, a TLS client that resets or half-closes without
close_notify. (Found by a fault audit of every server the project ships.)"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Iterator, List, Tuple

import pytest

import tlssupport

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))


def _start(args: List[str], procs: List[subprocess.Popen]) -> Tuple[subprocess.Popen, int]:
    """Start a server (in ``procs`` at once, for the fixture to reap whatever happens next); its
    port, from the line it prints (echo on stdout, smtpd on stderr)."""
    proc = subprocess.Popen([sys.executable, *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    stream = proc.stderr if "netloop.smtpd" in args else proc.stdout
    assert stream is not None
    line = stream.readline()
    marker = "listening on 127.0.0.1:"
    assert marker in line, line
    return proc, int(line.split(marker, 1)[1].split()[0].rstrip(")"))


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None and proc.stdout is not None
    err = proc.stderr.read()
    proc.stderr.close()
    proc.stdout.close()
    return err


@pytest.fixture
def procs() -> Iterator[List[subprocess.Popen]]:
    started: List[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def _rss_kb(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _echo_ok(port: int, tls: bool = False) -> None:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = (tlssupport.client_context().wrap_socket(raw, server_hostname="localhost")
            if tls else raw)
    with sock:
        sock.sendall(b"fresh\n")
        got = b""
        while not got.endswith(b"\n"):
            chunk = sock.recv(100)
            assert chunk
            got += chunk
        assert got == b"fresh\n"


def _push_until_stalled(sock: socket.socket, chunk: bytes, most: int) -> int:
    """Send ``chunk`` again and again without reading, until the server stops taking it
    (no progress for a second) or ``most`` bytes went; the count sent."""
    sock.setblocking(False)
    sent = 0
    last = time.monotonic()
    view = memoryview(chunk)
    while sent < most and time.monotonic() - last < 1.0:
        try:
            n = sock.send(view)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        except ConnectionError:
            break  # the server refused the rest (a line over its limit) and closed
        sent += n
        last = time.monotonic()
    return sent


@pytest.mark.timeout(60)
def test_chat_echo_refuses_a_line_that_never_ends(procs) -> None:
    proc, port = _start(["-m", "netloop", "echo", "--kind", "chat"], procs)
    rss = _rss_kb(proc.pid)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        _push_until_stalled(c, b"x" * 65536, 40 << 20)
    assert _rss_kb(proc.pid) - rss < 8 * 1024  # a 1 MiB cap on a line, not 40 MiB held
    _echo_ok(port)
    _stop(proc)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args", [["-m", "netloop", "echo", "--kind", "chat"],
                                  ["-m", "netloop.smtpd", "-n", "-c", "DebuggingServer",
                                   "127.0.0.1:0"]],
                         ids=["chat-echo", "smtpd"])
def test_a_client_that_never_reads_is_not_hoarded(args: List[str], procs) -> None:
    """Pipelined lines (echo) or commands (smtpd) from a client that never reads the replies:
    the server stops reading it once a bounded queue is full, instead of keeping every
    reply in memory."""
    smtp = "netloop.smtpd" in args
    proc, port = _start(args, procs)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        if smtp:
            c.recv(1000)  # the greeting
        rss = _rss_kb(proc.pid)
        line = b"NOOP\r\n" if smtp else b"y" * 63 + b"\n"
        sent = _push_until_stalled(c, line * 1024, 40 << 20)
        assert sent < 40 << 20
        assert _rss_kb(proc.pid) - rss < 12 * 1024
    if not smtp:
        _echo_ok(port)
    _stop(proc)


def _tls_send_then_half_close(port: int, data: bytes, deadline: float) -> bytes:
    """A TLS client over memory BIOs: sends ``data`` while reading, then shuts its socket's
    write side down without a close_notify, and reads until the server's end. What came back."""
    import select
    import ssl
    obj_in, obj_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tlssupport.client_context().wrap_bio(obj_in, obj_out, server_hostname="localhost")
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setblocking(False)
    got = bytearray()
    out = b""
    off = 0
    shaken = shut = False
    try:
        while time.monotonic() < deadline:
            if not shaken:
                try:
                    tls.do_handshake()
                    shaken = True
                except ssl.SSLWantReadError:
                    pass
            if shaken and off < len(data) and obj_out.pending < 1 << 20:
                off += tls.write(data[off:off + 65536])
            out += obj_out.read()
            if shaken and off == len(data) and not out and not shut:
                raw.shutdown(socket.SHUT_WR)  # no close_notify: a plain FIN
                shut = True
            readable, writable, _ = select.select([raw], [raw] if out else [], [], 0.5)
            if writable:
                out = out[raw.send(out):]
            if readable:
                chunk = raw.recv(1 << 20)
                if not chunk:
                    obj_in.write_eof()
                else:
                    obj_in.write(chunk)
            if shaken:
                try:
                    while True:
                        piece = tls.read(1 << 20)
                        if not piece:
                            return bytes(got)
                        got += piece
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return bytes(got)
        return bytes(got)
    finally:
        raw.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["dispatcher", "chat"])
def test_tls_echo_sends_everything_before_a_half_close_without_close_notify(kind, procs):
    """A TLS client that sends and then half-closes its socket without a close_notify (a FIN
    only) gets every byte echoed before the server's end. OpenSSL 3 would answer such an
    end of input with a fatal alert, and what was queued would be lost."""
    p = tlssupport.paths()
    proc, port = _start(["-m", "netloop", "echo", "--kind", kind, "--tls-cert", p["cert"],
                         "--tls-key", p["key"]], procs)
    for _ in range(6):
        data = os.urandom(1 << 20) if kind == "dispatcher" else (b"z" * 1023 + b"\n") * 1024
        assert _tls_send_then_half_close(port, data, time.monotonic() + 30) == data
    _stop(proc)


@pytest.mark.timeout(60)
def test_tls_socketserver_echo_takes_resets_quietly(procs):
    """TLS clients of the socketserver kind that reset mid-stream: an ordinary end, no
    traceback (3.11 raised ssl.SSLEOFError in the handler, which is not a ConnectionError)."""
    p = tlssupport.paths()
    proc, port = _start(["-m", "netloop", "echo", "--kind", "socketserver", "--tls-cert",
                         p["cert"], "--tls-key", p["key"]], procs)
    for _ in range(30):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = tlssupport.client_context().wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"q" * 100000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    _echo_ok(port, tls=True)
    err = _stop(proc)
    assert "Traceback" not in err, err[-2000:]


def _smtp_ok(port: int) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.noop()[0] == 250


def _ignoring_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("args", [
    ["-m", "netloop", "echo"],
    ["-m", "netloop", "echo", "--kind", "socketserver"],
    ["-m", "netloop", "echo", "--workers", "2", "--grace", "1"],
    ["-m", "netloop.smtpd", "-n", "-c", "DebuggingServer", "127.0.0.1:0"],
], ids=["echo", "echo-socketserver", "echo-workers", "smtpd"])
@pytest.mark.timeout(60)
def test_a_server_started_with_sigint_ignored_keeps_ignoring_it(args: List[str], procs) -> None:
    # A job started in the background of a non-interactive shell (or under nohup) inherits
    # SIGINT (SIGHUP) ignored; the interpreter keeps it so, and so did smtpd's command line.
    # The Ctrl-C of the terminal's foreground job reaches the whole process group.
    proc = subprocess.Popen([sys.executable, *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_ignoring_sigint,
                            start_new_session=True)
    procs.append(proc)
    stream = proc.stderr if "netloop.smtpd" in args else proc.stdout
    assert stream is not None
    line = stream.readline()
    assert "listening on 127.0.0.1:" in line, line
    port = int(line.split("listening on 127.0.0.1:", 1)[1].split()[0].rstrip(")"))
    check = _smtp_ok if "netloop.smtpd" in args else _echo_ok
    check(port)
    os.killpg(proc.pid, signal.SIGINT)  # the server and any workers of it
    # Pending at once, and a handler would end the loop before this exchange could finish.
    for _ in range(3):
        check(port)
    assert proc.poll() is None
    _stop(proc)  # SIGTERM still stops it, with status 0
