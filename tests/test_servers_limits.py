"""Connection limits on netloop.socketserver servers (``set_connection_limits()``), real clients.

A request counts from the moment it is taken until its handler has finished (in its thread, or
in its child process once reaped; a TLS request from its handshake on); over a limit it is taken
and shut down at once, with one warning per episode of refusals.
"""

from __future__ import annotations

import http.client
import http.server
import logging
import socket
import ssl
from typing import Any, List

import pytest
from test_servers_support import FORK_WARNING, needs_fork, no_leaks, serving, wait_until

from netloop import socketserver as ss

import tlssupport

pytestmark = pytest.mark.usefixtures("no_leaks")
_ = no_leaks

LIMIT_LINE = "connection limit reached"


class LineEcho(ss.StreamRequestHandler):
    """Echo lines until the client closes: the request lives as long as the client wants."""

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    c = socket.socket()
    c.settimeout(10)
    c.bind((source, 0))
    c.connect(("127.0.0.1", port))
    return c


def served(c: socket.socket) -> bool:
    """True if the server echoes a line on ``c``; False if it closed (refused) the connection."""
    try:
        c.sendall(b"hi\n")
        return c.recv(10) == b"hi\n"
    except (ConnectionResetError, BrokenPipeError):
        return False


def refused(c: socket.socket) -> bool:
    try:
        return c.recv(10) == b""
    except ConnectionResetError:
        return True


def limit_lines(caplog: pytest.LogCaptureFixture) -> List[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "netloop.servers" and LIMIT_LINE in r.getMessage()]


def test_threaded_server_limits_in_all_and_per_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="netloop.servers")
    server = ss.ThreadingTCPServer(("127.0.0.1", 0), LineEcho)
    server.daemon_threads = False
    server.set_connection_limits(max_connections=3, max_per_address=2)
    assert (server.max_connections, server.max_per_address) == (3, 2)
    held: List[socket.socket] = []
    try:
        with serving(server, 60.0):
            port = server.server_address[1]
            for _ in range(2):
                held.append(connect(port))
                assert served(held[-1])
            assert server.connection_count == 2
            # A third from the same address: refused by the per-address limit, three times,
            # one warning.
            for _ in range(3):
                with connect(port) as c:
                    assert refused(c)
            assert len(limit_lines(caplog)) == 1
            # Another address still has room in all: the episode ends.
            held.append(connect(port, "127.0.0.2"))
            assert served(held[-1])
            # Three held: a fourth from a third address is refused by the overall limit, a new
            # episode with a line of its own.
            for _ in range(2):
                with connect(port, "127.0.0.3") as c:
                    assert refused(c)
            lines = limit_lines(caplog)
            assert len(lines) == 2, [r.getMessage() for r in lines]
            assert "2 from 127.0.0.1" in lines[0].getMessage()
            assert "3 held" in lines[1].getMessage()
            # The handlers' threads finish when their clients close: room again.
            held.pop(0).close()
            wait_until(lambda: server.connection_count == 2, what="the count to drop")
            held.append(connect(port, "127.0.0.3"))
            assert served(held[-1])
            for c in held:
                c.close()
            held.clear()
            wait_until(lambda: server.connection_count == 0, what="every request to end")
    finally:
        for c in held:
            c.close()
    assert len(limit_lines(caplog)) == 2


class KeepAliveHello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"hello " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _get(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200
    return resp.read()


def test_http_client_refused_while_a_keep_alive_connection_holds_the_only_slot(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="netloop.servers")
    server = ss.ThreadingTCPServer(("127.0.0.1", 0), KeepAliveHello)
    server.set_connection_limits(max_connections=1)
    with serving(server, 60.0):
        port = server.server_address[1]
        first = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            assert _get(first, "/a") == b"hello /a"
            assert _get(first, "/b") == b"hello /b"  # the same connection, still held
            second = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError,
                                    BrokenPipeError)):
                    _get(second, "/c")
            finally:
                second.close()
        finally:
            first.close()
        wait_until(lambda: server.connection_count == 0, what="the keep-alive request to end")
        again = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            assert _get(again, "/d") == b"hello /d"
        finally:
            again.close()
    assert len(limit_lines(caplog)) == 1


class FailingHandler(ss.BaseRequestHandler):
    def handle(self) -> None:
        raise RuntimeError("boom in the handler")


def test_a_request_whose_handler_raises_stops_counting(capsys: pytest.CaptureFixture) -> None:
    server = ss.ThreadingTCPServer(("127.0.0.1", 0), FailingHandler)
    server.set_connection_limits(max_connections=1)
    with serving(server, 60.0):
        port = server.server_address[1]
        for _ in range(3):  # each in turn takes the only slot and gives it back
            wait_until(lambda: server.connection_count == 0, what="the slot to be free")
            with connect(port) as c:
                assert c.recv(10) == b""
    assert capsys.readouterr().err.count("RuntimeError: boom in the handler") == 3


def test_synchronous_server_counts_during_process_request() -> None:
    seen: List[int] = []

    class Counting(ss.BaseRequestHandler):
        def handle(self) -> None:
            seen.append(self.server.connection_count)
            self.request.sendall(b"ok")

    server = ss.TCPServer(("127.0.0.1", 0), Counting)
    server.set_connection_limits(max_connections=1)
    with server:
        port = server.server_address[1]
        for _ in range(2):
            with connect(port) as c:
                server.handle_request()
                assert c.recv(10) == b"ok"
    assert seen == [1, 1]
    assert server.connection_count == 0


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_forked_request_counts_until_its_child_is_reaped() -> None:
    server = ss.ForkingTCPServer(("127.0.0.1", 0), LineEcho)
    server.set_connection_limits(max_connections=1)
    with serving(server, 60.0):
        port = server.server_address[1]
        # A forked child holds a copy of every client socket of this process: shutdown(), not
        # close(), is what ends a client's side for the child's handler.
        with connect(port) as first:
            assert served(first)  # its child is running
            with connect(port) as second:
                assert refused(second)
            assert server.connection_count == 1
            first.shutdown(socket.SHUT_WR)
        # The first client is done: its child ends and, reaped, frees the slot.
        wait_until(lambda: server.connection_count == 0, what="the child to be reaped")
        with connect(port) as third:
            assert served(third)
            third.shutdown(socket.SHUT_WR)


def test_tls_handshakes_count_against_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="netloop.servers")

    class Server(ss.TLSMixIn, ss.ThreadingTCPServer):  # type: ignore[name-defined,misc]
        daemon_threads = True

    server = Server(("127.0.0.1", 0), LineEcho, context=tlssupport.server_context())
    server.set_connection_limits(max_connections=1)
    with serving(server, 60.0):
        port = server.server_address[1]
        silent = connect(port)  # connects, never says hello: its handshake holds the slot
        try:
            wait_until(lambda: server.connection_count == 1, what="the handshake to count")
            ctx = tlssupport.client_context()
            with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                with ctx.wrap_socket(connect(port), server_hostname="localhost"):
                    pass
        finally:
            silent.close()
        wait_until(lambda: server.connection_count == 0, what="the dropped handshake to end")
        with ctx.wrap_socket(connect(port), server_hostname="localhost") as tls:
            tls.sendall(b"over tls\n")
            assert tls.recv(20) == b"over tls\n"
            assert server.connection_count == 1
    assert len(limit_lines(caplog)) == 1


def test_set_connection_limits_checks_its_arguments() -> None:
    with ss.TCPServer(("127.0.0.1", 0), LineEcho, bind_and_activate=False) as server:
        assert server.connection_count == 0
        assert (server.max_connections, server.max_per_address) == (None, None)
        with pytest.raises(ValueError):
            server.set_connection_limits(max_connections=0)
        with pytest.raises(ValueError):
            server.set_connection_limits(max_per_address=-1)
        server.set_connection_limits(max_per_address=3)
        assert (server.max_connections, server.max_per_address) == (None, 3)
        server.set_connection_limits()
        assert server.connection_count == 0



def test_a_refused_proxy_header_gives_its_slot_back(caplog: pytest.LogCaptureFixture) -> None:
    # The PROXY mix-in closes a connection whose header is bad before any handler runs: the
    # count finds that out when the limit is reached, and the next client is served.
    from netloop import proxy

    class Server(proxy.ProxyProtocolServerMixIn, ss.ThreadingTCPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), LineEcho)
    server.set_connection_limits(max_connections=1)
    with serving(server, 60.0):
        port = server.server_address[1]
        with connect(port) as bad:
            bad.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert refused(bad)
        with connect(port) as good:
            good.sendall(proxy.format_v1(("192.0.2.7", 4000), ("192.0.2.1", 80)) + b"hi\n")
            assert good.recv(10) == b"hi\n"
            assert server.connection_count == 1
    assert not limit_lines(caplog)
