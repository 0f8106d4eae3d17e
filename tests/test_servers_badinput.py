"""Bad clients and a starved process: the server goes on, says so in one line, never spins,
and never closes its listening socket because of one client."""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import subprocess
import sys
import time

import pytest
from test_servers_support import no_leaks, serving, stream_roundtrip, wait_until

from netloop import socketserver as ss

pytestmark = pytest.mark.usefixtures("no_leaks")
_ = no_leaks

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


class UpperLine(ss.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_silent_client_does_not_block_a_threading_server():
    server = ss.ThreadingTCPServer(("127.0.0.1", 0), UpperLine)
    with serving(server, 60.0):
        silent = socket.create_connection(server.server_address)
        try:
            for i in range(3):
                line = b"other %d\n" % i
                assert stream_roundtrip(socket.AF_INET, server.server_address, line) \
                    == line.upper()
        finally:
            silent.close()


def test_silent_client_times_out_on_a_synchronous_server(capsys):
    class Patient(UpperLine):
        timeout = 0.2

    server = ss.TCPServer(("127.0.0.1", 0), Patient)
    with serving(server, 60.0):
        with socket.create_connection(server.server_address):
            assert stream_roundtrip(socket.AF_INET, server.server_address, b"next\n") \
                == b"NEXT\n"
    err = capsys.readouterr().err
    assert "ended early: TimeoutError" in err or "ended early: timeout" in err
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_client_reset_mid_request(capsys):
    class BigReply(ss.StreamRequestHandler):
        def handle(self):
            if self.rfile.readline() == b"ok\n":
                self.wfile.write(b"fine")
            else:
                self.wfile.write(b"z" * (8 << 20))

    with ss.TCPServer(("127.0.0.1", 0), BigReply) as server:
        client = socket.create_connection(server.server_address)
        client.sendall(b"GET /half")  # no end of line: the request is cut short
        reset(client)
        server.handle_request()
        err = capsys.readouterr().err
        assert "ended early: Connection" in err or "ended early: BrokenPipe" in err, err
        assert "Traceback" not in err
        # The listening socket is untouched and serves the next client.
        assert server.socket.fileno() >= 0
        with socket.create_connection(server.server_address) as good:
            good.sendall(b"ok\n")
            server.handle_request()
            good.settimeout(5)
            assert good.makefile("rb").read() == b"fine"


def test_reset_before_accept_is_skipped(capsys):
    handled = []

    class Note(ss.BaseRequestHandler):
        def handle(self):
            handled.append(self.client_address)
            self.request.sendall(b"hi")

    with ss.ThreadingTCPServer(("127.0.0.1", 0), Note) as server:
        early = socket.create_connection(server.server_address)
        reset(early)
        with serving(server, 60.0):
            assert stream_roundtrip(socket.AF_INET, server.server_address, b"") == b"hi"
    assert handled
    assert "Traceback" not in capsys.readouterr().err


def test_simulated_emfile_rests_the_listener(caplog):
    class Starved(ss.TCPServer):
        calls = 0
        starving = True

        def get_request(self):
            self.calls += 1
            if self.starving:
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return super().get_request()

    class Hello(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"hello")

    server = Starved(("127.0.0.1", 0), Hello)
    with caplog.at_level(logging.ERROR, logger="netloop.servers"):
        with serving(server, 60.0):
            with socket.create_connection(server.server_address) as c:
                wait_until(lambda: server.calls >= 1, 5, "a first accept")
                start_calls = server.calls
                cpu = time.process_time()
                time.sleep(0.35)  # measuring a rate, not ordering events
                calls = server.calls - start_calls
                cpu = time.process_time() - cpu
                assert calls <= 8, calls  # a spinning server makes thousands
                assert cpu < 0.25, cpu
                server.starving = False
                c.settimeout(5)
                assert c.recv(10) == b"hello"
                assert server.socket.fileno() >= 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("Too many open files" in m and "stays open" in m for m in messages)
    # One line per episode, however many times the resting listener tried again (as a
    # dispatcher listener logs it), not one every ACCEPT_BACKOFF.
    assert server.calls - start_calls >= 2
    assert sum("Too many open files" in m for m in messages) == 1, messages


def test_persistent_odd_error_does_not_spin(caplog):
    class Odd(ss.TCPServer):
        calls = 0

        def get_request(self):
            self.calls += 1
            raise OSError(errno.EINVAL, "odd")

    server = Odd(("127.0.0.1", 0), UpperLine)
    with caplog.at_level(logging.WARNING, logger="netloop.servers"):
        with serving(server, 60.0):
            with socket.create_connection(server.server_address):
                wait_until(lambda: server.calls >= 1, 5, "a first accept")
                time.sleep(0.35)  # measuring a rate, not ordering events
                assert server.calls <= 32 * 6, server.calls
    assert any("failed 32 times in a row" in r.getMessage() for r in caplog.records)


EMFILE_CHILD = r'''
import logging, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from netloop import socketserver as ss
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")

class Hello(ss.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"served")
        self.server.served += 1
        if self.server.served == 3:
            self.server.shutdown()

class Server(ss.TCPServer):
    request_queue_size = 16
    served = 0
    failures = 0
    first_failure = None
    def get_request(self):
        try:
            return super().get_request()
        except OSError as err:
            if err.errno == 24:
                self.failures += 1
                if self.first_failure is None:
                    self.first_failure = time.monotonic()
            raise

server = Server(("127.0.0.1", 0), Hello)
lp = server.get_loop()
hog = []
state = {}

def exhaust():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
    try:
        while True:
            hog.append(os.dup(0))
    except OSError:
        pass
    state["cpu"] = time.process_time()
    print("exhausted", server.server_address[1], flush=True)

def maybe_free():
    if server.first_failure is not None and time.monotonic() - server.first_failure > 0.4:
        state["cpu"] = time.process_time() - state["cpu"]
        state["failures"] = server.failures
        for fd in hog:
            os.close(fd)
        hog.clear()
        ticker.cancel()

lp.call_soon(exhaust)
ticker = lp.call_every(0.02, maybe_free)
server.serve_forever(60)
server.server_close()
print("stats", state["failures"], "%.3f" % state["cpu"], flush=True)
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses RLIMIT_NOFILE like Linux")
def test_real_emfile_in_a_child_process():
    proc = subprocess.Popen([sys.executable, "-c", EMFILE_CHILD, SRC], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first[0] == "exhausted", first
        port = int(first[1])
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        try:
            for c in clients:
                assert c.recv(10) == b"served"
        finally:
            for c in clients:
                c.close()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stats = out.split()
    assert stats[0] == "stats", out
    failures, cpu = int(stats[1]), float(stats[2])
    assert 1 <= failures <= 10, failures   # one per rest period, not a busy loop
    assert cpu < 0.3, cpu
    assert "Too many open files; resting 0.1s (the server's socket stays open)" in err, err
    assert proc.returncode == 0
