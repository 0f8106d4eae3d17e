"""ThreadingMixIn and ForkingMixIn: requests off the loop, joined or reaped, nothing kept."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from test_servers_support import (FORK_WARNING, needs_fork, no_leaks, serving, stream_roundtrip,
                                  wait_until)

from netloop import socketserver as ss

pytestmark = pytest.mark.usefixtures("no_leaks")
_ = no_leaks


class Hold(ss.BaseRequestHandler):
    """Runs until the test sets ``server.release``."""

    def handle(self) -> None:
        self.server.started.append(threading.current_thread())
        self.server.release.wait(10)
        self.request.sendall(b"done")


def holding_server(cls=ss.ThreadingTCPServer, **attrs):
    server = cls(("127.0.0.1", 0), Hold)
    server.started = []
    server.release = threading.Event()
    for name, value in attrs.items():
        setattr(server, name, value)
    return server


def test_threading_requests_run_concurrently():
    barrier = threading.Barrier(3, timeout=10)

    class Meet(ss.BaseRequestHandler):
        def handle(self):
            barrier.wait()  # passes only if three handlers run at once
            self.request.sendall(b"met")

    server = ss.ThreadingTCPServer(("127.0.0.1", 0), Meet)
    results = []
    with serving(server, 60.0):
        clients = [threading.Thread(target=lambda: results.append(
            stream_roundtrip(socket.AF_INET, server.server_address, b"")))
            for _ in range(3)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
    assert results == [b"met"] * 3


def test_server_close_joins_request_threads():
    server = holding_server()
    with socket.create_connection(server.server_address) as c:
        server.handle_request()
        wait_until(lambda: server.started, 5, "the handler")
        closer = threading.Thread(target=server.server_close)
        closer.start()
        closer.join(0.05)
        assert closer.is_alive()  # waiting for the request thread
        server.release.set()
        closer.join(5)
        assert not closer.is_alive()
        assert not server.started[0].is_alive()
        c.settimeout(5)
        assert c.recv(10) == b"done"


def test_block_on_close_false_does_not_join():
    server = holding_server(block_on_close=False)
    with socket.create_connection(server.server_address):
        server.handle_request()
        wait_until(lambda: server.started, 5, "the handler")
        server.server_close()  # returns at once
        assert server.started[0].is_alive()
        assert len(server._threads) == 0
        server.release.set()
        server.started[0].join(5)


def test_daemon_threads():
    server = holding_server(daemon_threads=True)
    with socket.create_connection(server.server_address):
        server.handle_request()
        wait_until(lambda: server.started, 5, "the handler")
        assert server.started[0].daemon
        assert len(server._threads) == 0  # daemon threads are never joined
        server.release.set()
        server.started[0].join(5)
        server.server_close()


def test_finished_threads_are_not_kept():
    class Quick(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"q")

    server = ss.ThreadingTCPServer(("127.0.0.1", 0), Quick)
    sizes = []
    with serving(server, 60.0):
        for _ in range(100):
            assert stream_roundtrip(socket.AF_INET, server.server_address, b"") == b"q"
            sizes.append(len(server._threads))
    # Flat, not growing to 100: only threads that may still be running are kept. (Under load,
    # with the suite's parallel workers, a few handlers that already answered are still
    # finishing: 4 were seen, so the bound leaves room.)
    assert max(sizes) <= 10, sizes
    assert sizes[-1] <= 10 and sum(sizes[50:]) <= 10 * 50


def test_threading_handler_exception_goes_to_handle_error():
    errors = []

    class Broken(ss.BaseRequestHandler):
        def handle(self):
            raise ValueError("in a thread")

    class Server(ss.ThreadingTCPServer):
        def handle_error(self, request, client_address):
            errors.append(threading.current_thread().name)

    server = Server(("127.0.0.1", 0), Broken)
    with serving(server, 60.0):
        assert stream_roundtrip(socket.AF_INET, server.server_address, b"") == b""
    assert len(errors) == 1 and errors[0] != threading.current_thread().name


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_forked_child_never_runs_the_loop_and_exits_cleanly(capfd):
    read_fd, write_fd = os.pipe()
    statuses = []

    class WhoAmI(ss.BaseRequestHandler):
        def handle(self):
            print("child", os.getpid(), "handled")  # buffered: flushed before os._exit
            self.request.sendall(b"%d" % os.getpid())

    class Server(ss.ForkingTCPServer):
        def collect_children(self, *, blocking=False):
            for pid in list(self.active_children or ()):
                _, status = os.waitpid(pid, 0)
                statuses.append(status)
                self.active_children.discard(pid)

    server = Server(("127.0.0.1", 0), WhoAmI)
    lp = server.get_loop()
    # A timer of the parent's loop: it would write from the child if the child ran the loop.
    ticker = lp.call_every(0.001, lambda: os.write(write_fd, b"%d\n" % os.getpid()))
    print("parent output before forking")  # must appear once, not once per child
    try:
        with serving(server, 0.001):
            pids = {int(stream_roundtrip(socket.AF_INET, server.server_address, b""))
                    for _ in range(3)}
            wait_until(lambda: os.read(read_fd, 1 << 16), 5, "the parent's timer")
    finally:
        ticker.cancel()
        os.close(write_fd)
        written = b""
        while True:
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            written += chunk
        os.close(read_fd)
    assert len(pids) == 3 and os.getpid() not in pids
    assert {int(line) for line in written.split()} <= {os.getpid()}
    assert statuses == [0, 0, 0]
    out = capfd.readouterr().out
    assert out.count("parent output before forking") == 1
    for pid in pids:
        assert out.count("child %d handled" % pid) == 1


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_forking_children_reaped_and_bounded():
    seen = []

    class Quick(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"k")

    class Server(ss.ForkingTCPServer):
        max_children = 2

        def process_request(self, request, client_address):
            super().process_request(request, client_address)
            seen.append(len(self.active_children))

    server = Server(("127.0.0.1", 0), Quick)
    with server:
        for _ in range(6):
            with socket.create_connection(server.server_address) as c:
                server.handle_request()
                c.settimeout(5)
                assert c.recv(1) == b"k"
    assert max(seen) <= server.max_children
    assert not server.active_children  # server_close() waited for all of them


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_forking_block_on_close_false_does_not_wait():
    class Wait(ss.BaseRequestHandler):
        def handle(self):
            # Until the client sends a byte (not until EOF: the child holds a copy of the
            # client's socket too, forked from this very process).
            self.request.recv(1)

    class Server(ss.ForkingTCPServer):
        block_on_close = False

    server = Server(("127.0.0.1", 0), Wait)
    c = socket.create_connection(server.server_address)
    try:
        server.handle_request()
        (pid,) = server.active_children
        server.server_close()  # does not wait for the child
        assert server.active_children == {pid}
    finally:
        c.sendall(b"x")
        c.close()
    _, status = os.waitpid(pid, 0)
    assert status == 0


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_forking_handle_timeout_reaps():
    class Quick(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"z")

    class Server(ss.ForkingTCPServer):
        timeout = 0.01

    with Server(("127.0.0.1", 0), Quick) as server:
        with socket.create_connection(server.server_address) as c:
            server.handle_request()
            c.settimeout(5)
            assert c.recv(1) == b"z"
        wait_until(lambda: (server.handle_request(), not server.active_children)[1], 5,
                   "handle_timeout() to reap the child")
