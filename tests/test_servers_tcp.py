"""TCP servers on the reactor: the request pipeline, handle_request(), bursts, handler options."""

from __future__ import annotations

import errno
import io
import socket
import threading
import time

import pytest
from test_servers_support import (FORK_WARNING, have_ipv6, needs_fork, no_leaks, serving,
                                  stream_roundtrip, wait_until)

import netloop
from netloop import socketserver as ss
from netloop.dispatcher import ACCEPT_BURST

pytestmark = pytest.mark.usefixtures("no_leaks")
_ = no_leaks


class UpperLine(ss.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


class Recorder(ss.BaseRequestHandler):
    """Records each request; sends one byte so that the client knows it was handled."""

    def handle(self) -> None:
        self.server.handled.append(self.client_address)
        self.request.sendall(b"!")


def make(cls, handler=UpperLine, **kw):
    server = cls(("127.0.0.1", 0), handler, **kw)
    server.handled = []
    return server


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.parametrize("cls", [
    ss.TCPServer, ss.ThreadingTCPServer,
    pytest.param(getattr(ss, "ForkingTCPServer", None), marks=needs_fork),
], ids=["sync", "threading", "forking"])
def test_stream_echo(cls):
    server = make(cls)
    assert server.server_address == server.socket.getsockname()
    assert server.server_address[1] != 0
    with serving(server, 0.5):
        for i in range(3):
            line = b"hello %d\n" % i
            assert stream_roundtrip(socket.AF_INET, server.server_address, line) == line.upper()
    assert server.socket.fileno() == -1


@pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback")
def test_ipv6():
    class Server6(ss.TCPServer):
        address_family = socket.AF_INET6

    server = Server6(("::1", 0), UpperLine)
    with serving(server):
        assert stream_roundtrip(socket.AF_INET6, server.server_address[:2], b"six\n") == b"SIX\n"


def test_handle_request_handles_one_request():
    server = make(ss.TCPServer, Recorder, bind_and_activate=True)
    server.request_queue_size = 8
    with server:
        clients = [socket.create_connection(server.server_address) for _ in range(3)]
        try:
            for n in (1, 2, 3):
                assert server.handle_request() is None
                assert len(server.handled) == n
        finally:
            for c in clients:
                c.close()


def test_handle_request_timeout_calls_handle_timeout():
    class Server(ss.TCPServer):
        timeout = 0.05
        timeouts = 0

        def handle_timeout(self):
            self.timeouts += 1
            return "timed out"

    with Server(("127.0.0.1", 0), Recorder) as server:
        start = time.monotonic()
        assert server.handle_request() == "timed out"
        assert server.timeouts == 1
        assert time.monotonic() - start >= 0.05
        # A timeout set on the socket bounds the wait too (the smaller one wins).
        server.timeout = None
        server.socket.settimeout(0.05)
        assert server.handle_request() == "timed out"
        assert server.timeouts == 2


def test_handle_request_with_pending_request_does_not_time_out():
    class Server(ss.TCPServer):
        timeout = 0.0

        def handle_timeout(self):
            raise AssertionError("handle_timeout called with a request pending")

    with Server(("127.0.0.1", 0), Recorder) as server:
        server.handled = []
        with socket.create_connection(server.server_address) as c:
            c.settimeout(5)
            wait_until(lambda: server.handle_request() is None and server.handled, 5,
                       "the pending request")
            assert c.recv(1) == b"!"


def test_verify_request_false_shuts_request_down():
    calls = []

    class Server(ss.TCPServer):
        def verify_request(self, request, client_address):
            calls.append(("verify", client_address))
            return False

        def shutdown_request(self, request):
            calls.append(("shutdown", None))
            super().shutdown_request(request)

    with Server(("127.0.0.1", 0), Recorder) as server:
        server.handled = []
        with socket.create_connection(server.server_address) as c:
            c.settimeout(5)
            server.handle_request()
            assert c.recv(10) == b""  # closed without being handled
        assert [name for name, _ in calls] == ["verify", "shutdown"]
        assert server.handled == []


def test_process_request_exception_goes_to_handle_error_and_server_goes_on():
    errors = []

    class Broken(ss.BaseRequestHandler):
        def handle(self):
            if self.server.fail:
                raise ValueError("boom")
            self.request.sendall(b"ok")

    class Server(ss.TCPServer):
        fail = True

        def handle_error(self, request, client_address):
            import sys
            errors.append((sys.exc_info()[0], client_address))

    server = Server(("127.0.0.1", 0), Broken)
    with serving(server, 0.05):
        assert stream_roundtrip(socket.AF_INET, server.server_address, b"x") == b""
        server.fail = False
        assert stream_roundtrip(socket.AF_INET, server.server_address, b"x") == b"ok"
    assert errors and errors[0][0] is ValueError


def test_default_handle_error_prints_traceback(capsys):
    class Broken(ss.BaseRequestHandler):
        def handle(self):
            raise KeyError("wrong")

    with ss.TCPServer(("127.0.0.1", 0), Broken) as server:
        with socket.create_connection(server.server_address):
            server.handle_request()
    err = capsys.readouterr().err
    assert "Exception occurred during processing of request from" in err
    assert "KeyError: 'wrong'" in err and "Traceback" in err


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt])
def test_exiting_exceptions_leave_handle_request(exc):
    shut = []

    class Exits(ss.BaseRequestHandler):
        def handle(self):
            raise exc()

    class Server(ss.TCPServer):
        def handle_error(self, request, client_address):
            raise AssertionError("handle_error must not see %r" % exc)

        def shutdown_request(self, request):
            shut.append(request)
            super().shutdown_request(request)

    with Server(("127.0.0.1", 0), Exits) as server:
        with socket.create_connection(server.server_address):
            with pytest.raises(exc):
                server.handle_request()
        assert len(shut) == 1
        # The loop is usable again afterwards.
        server.RequestHandlerClass = Recorder
        server.handled = []
        with socket.create_connection(server.server_address):
            server.handle_request()
        assert len(server.handled) == 1


def test_exception_in_serve_forever_leaves_it():
    class Exits(ss.BaseRequestHandler):
        def handle(self):
            raise SystemExit(3)

    with ss.TCPServer(("127.0.0.1", 0), Exits) as server:
        client = threading.Thread(
            target=lambda: socket.create_connection(server.server_address).close())
        client.start()
        with pytest.raises(SystemExit):
            server.serve_forever(0.05)
        client.join()


def test_get_request_error_other_than_oserror_propagates_like_stdlib():
    class Server(ss.TCPServer):
        def get_request(self):
            conn, addr = super().get_request()
            conn.close()
            raise ValueError("bad get_request")

    with Server(("127.0.0.1", 0), Recorder) as server:
        with socket.create_connection(server.server_address):
            with pytest.raises(ValueError, match="bad get_request"):
                server.handle_request()


def test_bind_failure_closes_the_socket():
    for _ in range(50):
        with pytest.raises(OverflowError):
            ss.TCPServer(("127.0.0.1", -1), Recorder)


def test_bind_and_activate_false_and_reuse_options():
    class Server(ss.TCPServer):
        allow_reuse_address = True
        allow_reuse_port = hasattr(socket, "SO_REUSEPORT")

    server = Server(("127.0.0.1", 0), Recorder, bind_and_activate=False)
    try:
        assert server.server_address == ("127.0.0.1", 0)
        server.server_bind()
        server.server_activate()
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        if Server.allow_reuse_port:
            assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        server.handled = []
        with serving(server, 0.05):
            assert stream_roundtrip(socket.AF_INET, server.server_address, b"") == b"!"
    finally:
        server.server_close()


def test_context_manager_and_closed_server():
    with ss.TCPServer(("127.0.0.1", 0), Recorder) as server:
        assert server.fileno() == server.socket.fileno() >= 0
    assert server.socket.fileno() == -1
    with pytest.raises(ValueError):
        server.serve_forever()
    server.server_close()  # twice is harmless


def test_accept_burst_is_bounded():
    server = make(ss.TCPServer, Recorder)
    server.socket.listen(ACCEPT_BURST + 16)
    with server:
        clients = [socket.create_connection(server.server_address)
                   for _ in range(ACCEPT_BURST + 8)]
        try:
            lp = server.get_loop()
            lp.run_once(5)  # one readiness event: one bounded burst
            assert len(server.handled) == ACCEPT_BURST
            lp.run_once(5)
            assert len(server.handled) == ACCEPT_BURST + 8
        finally:
            for c in clients:
                c.close()


@pytest.mark.skipif(netloop.dispatcher._TCP_INFO is None,
                    reason="the accept queue is counted on Linux only (TCP_INFO)")
def test_burst_makes_no_get_request_that_finds_nothing():
    calls = []

    class Counting(ss.TCPServer):
        def get_request(self):
            try:
                pair = super().get_request()
            except OSError as err:
                calls.append(err.errno)
                raise
            calls.append("ok")
            return pair

    server = make(Counting, Recorder)
    with server:
        clients = [socket.create_connection(server.server_address) for _ in range(4)]
        try:
            for _ in range(10000):
                if netloop.dispatcher.accept_queue_length(server.socket) >= 4:
                    break
            server.get_loop().run_once(5)
            assert len(server.handled) == 4
            assert calls == ["ok"] * 4  # no EAGAIN at the end of the burst
        finally:
            for c in clients:
                c.close()


def test_blocking_listener_takes_one_request_per_event():
    server = make(ss.TCPServer, Recorder)
    with server:
        server.socket.settimeout(None)  # a user made the listener blocking again
        clients = [socket.create_connection(server.server_address) for _ in range(3)]
        try:
            lp = server.get_loop()
            lp.run_once(5)
            assert len(server.handled) == 1
        finally:
            for c in clients:
                c.close()


def test_accepted_sockets_are_in_default_mode():
    modes = []

    class Probe(ss.BaseRequestHandler):
        def handle(self):
            modes.append(self.request.gettimeout())

    with ss.TCPServer(("127.0.0.1", 0), Probe) as server:
        with socket.create_connection(server.server_address):
            server.handle_request()
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(7.5)
        try:
            with socket.create_connection(server.server_address):
                server.handle_request()
        finally:
            socket.setdefaulttimeout(old)
    assert modes == [None, 7.5]


def test_stream_handler_options():
    seen = {}

    class Options(ss.StreamRequestHandler):
        rbufsize = 0
        wbufsize = 1 << 16
        timeout = 4.0
        disable_nagle_algorithm = True

        def handle(self):
            seen["timeout"] = self.connection.gettimeout()
            seen["nodelay"] = self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            seen["rfile"] = type(self.rfile)
            seen["wfile"] = type(self.wfile)
            self.wfile.write(self.rfile.readline() * 2)  # buffered: flushed by finish()

    with ss.TCPServer(("127.0.0.1", 0), Options) as server:
        with socket.create_connection(server.server_address) as c:
            c.sendall(b"ab\n")
            server.handle_request()
            c.settimeout(5)
            assert c.makefile("rb").read() == b"ab\nab\n"
    assert seen["timeout"] == 4.0 and seen["nodelay"]
    assert seen["rfile"] is socket.SocketIO
    assert issubclass(seen["wfile"], io.BufferedWriter)


def test_socket_writer_is_unbuffered():
    info = {}

    class Handler(ss.StreamRequestHandler):
        def handle(self):
            info["type"] = self.wfile
            info["fileno"] = self.wfile.fileno() == self.request.fileno()
            info["n"] = self.wfile.write(b"now\n")
            info["line"] = self.rfile.readline()  # answered only once "now" arrived

    with ss.TCPServer(("127.0.0.1", 0), Handler) as server:
        def client():
            with socket.create_connection(server.server_address) as c:
                c.settimeout(5)
                info["got"] = c.makefile("rb").readline()
                c.sendall(b"reply\n")

        t = threading.Thread(target=client)
        t.start()
        server.handle_request()
        t.join()
    assert isinstance(info["type"], io.BufferedIOBase)
    assert info["fileno"] and info["n"] == 4
    assert info["got"] == b"now\n" and info["line"] == b"reply\n"


def test_service_actions_run_each_pass():
    class Server(ss.TCPServer):
        passes = 0

        def service_actions(self):
            self.passes += 1

    server = Server(("127.0.0.1", 0), Recorder)
    with serving(server, 0.001):
        wait_until(lambda: server.passes >= 5, 10, "five passes")


def test_handle_request_from_inside_the_running_loop():
    """A handler of one server calling handle_request() of another on the same loop."""
    lp = netloop.Loop()
    try:
        inner = make(ss.TCPServer, Recorder, loop=lp)

        class Outer(ss.BaseRequestHandler):
            def handle(self):
                with socket.create_connection(inner.server_address) as c:
                    inner.handle_request()
                    c.settimeout(5)
                    self.request.sendall(c.recv(1))

        outer = ss.TCPServer(("127.0.0.1", 0), Outer, loop=lp)
        with serving(outer, 0.05):
            assert stream_roundtrip(socket.AF_INET, outer.server_address, b"") == b"!"
        inner.server_close()
        assert len(inner.handled) == 1
    finally:
        lp.close()


def test_shutdown_request_ignores_enotconn():
    class Server(ss.TCPServer):
        def close_request(self, request):
            self.closed_one = True
            super().close_request(request)

    class Sock:
        def shutdown(self, how):
            raise OSError(errno.ENOTCONN, "not connected")

        def close(self):
            pass

    with Server(("127.0.0.1", 0), Recorder) as server:
        server.shutdown_request(Sock())
        assert server.closed_one


@pytest.mark.timeout(30)
def test_default_timeout_bounds_handle_request_as_in_socketserver():
    # socket.setdefaulttimeout() before the server is made: socketserver's listening socket
    # has that timeout, and handle_request() gives up after it (handle_timeout()), although
    # netloop's listening socket is non-blocking.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.2)
    try:
        server = ss.TCPServer(("127.0.0.1", 0), ss.BaseRequestHandler)
    finally:
        socket.setdefaulttimeout(old)
    timeouts = []
    server.handle_timeout = lambda: timeouts.append(True)
    with server:
        done = threading.Event()
        thread = threading.Thread(target=lambda: (server.handle_request(), done.set()))
        thread.start()
        assert done.wait(10), "handle_request() ignored the socket's default timeout"
        thread.join(10)
        assert timeouts == [True]
        # A later socket (not the one netloop made non-blocking) is not confused with it.
        server.socket.close()
        server.socket = socket.create_server(("127.0.0.1", 0))
        server.socket.setblocking(False)
        server.timeout = 0.05
        server.handle_request()
        assert timeouts == [True, True]
