"""Datagram servers: echo through every kind, bursts, oversized datagrams, the socket's mode."""

from __future__ import annotations

import logging
import time
import socket

import pytest
from support import run_until
from test_servers_support import FORK_WARNING, dgram_roundtrip, needs_fork, no_leaks, serving

from netloop import socketserver as ss
from netloop.dispatcher import ACCEPT_BURST

pytestmark = pytest.mark.usefixtures("no_leaks")
_ = no_leaks


class Upper(ss.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


class Count(ss.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        self.server.handled.append(data)


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.parametrize("cls", [
    ss.UDPServer, ss.ThreadingUDPServer,
    pytest.param(getattr(ss, "ForkingUDPServer", None), marks=needs_fork),
], ids=["sync", "threading", "forking"])
def test_datagram_echo(cls):
    server = cls(("127.0.0.1", 0), Upper)
    assert server.server_address == server.socket.getsockname()
    with serving(server, 0.5):
        for i in range(3):
            assert dgram_roundtrip(socket.AF_INET, server.server_address, b"dg %d" % i) \
                == b"DG %d" % i


def test_server_socket_stays_blocking_for_handlers():
    with ss.UDPServer(("127.0.0.1", 0), Upper) as server:
        assert server.socket.gettimeout() is None
        assert isinstance(server, ss.TCPServer)  # as in the standard library


def test_datagram_burst_is_bounded():
    with ss.UDPServer(("127.0.0.1", 0), Count) as server:
        server.handled = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for i in range(ACCEPT_BURST + 5):
                c.sendto(b"%d" % i, server.server_address)
            lp = server.get_loop()
            lp.run_once(5)
            assert len(server.handled) == ACCEPT_BURST
            lp.run_once(5)
            assert len(server.handled) == ACCEPT_BURST + 5
            assert server.handled == [b"%d" % i for i in range(ACCEPT_BURST + 5)]


def test_oversized_datagram_is_logged_and_dropped(caplog):
    class Small(ss.UDPServer):
        max_packet_size = 64

    with Small(("127.0.0.1", 0), Count) as server:
        server.handled = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(b"x" * 65, server.server_address)
            c.sendto(b"y" * 64, server.server_address)
            with caplog.at_level(logging.WARNING, logger="netloop.servers"):
                server.get_loop().run_once(5)
        assert server.handled == [b"y" * 64]
        assert any("larger than max_packet_size (64 bytes); dropped" in r.getMessage()
                   for r in caplog.records)
        assert server.socket.fileno() >= 0


def test_a_flood_of_oversized_datagrams_is_logged_once_per_interval(caplog, monkeypatch):
    from netloop.servers import udp
    now = [1000.0]
    monkeypatch.setattr(udp, "_clock", lambda: now[0])

    class Small(ss.UDPServer):
        max_packet_size = 64

    def warnings():
        return [r.getMessage() for r in caplog.records if "max_packet_size" in r.getMessage()]

    with Small(("127.0.0.1", 0), Count) as server:
        server.handled = []
        lp = server.get_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c, \
                caplog.at_level(logging.WARNING, logger="netloop.servers"):
            for _ in range(50):
                c.sendto(b"x" * 65, server.server_address)
            c.sendto(b"y", server.server_address)
            run_until(lp, lambda: server.handled == [b"y"])
            assert len(warnings()) == 1 and "more" not in warnings()[0]
            now[0] += udp._TRUNC_LOG_EVERY
            c.sendto(b"x" * 65, server.server_address)
            c.sendto(b"z", server.server_address)
            run_until(lp, lambda: server.handled == [b"y", b"z"])
            assert len(warnings()) == 2
            assert warnings()[1].endswith("dropped (and 49 more since the last warning)")
        assert server.socket.fileno() >= 0


def test_overridden_get_request_takes_one_datagram_per_event():
    class Custom(ss.UDPServer):
        def get_request(self):
            data, addr = self.socket.recvfrom(self.max_packet_size)  # would block on empty
            return (data, self.socket), addr

    with Custom(("127.0.0.1", 0), Count) as server:
        server.handled = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(b"a", server.server_address)
            c.sendto(b"b", server.server_address)
            server.get_loop().run_once(5)
            assert server.handled == [b"a"]
            server.handle_request()
            assert server.handled == [b"a", b"b"]


@pytest.mark.parametrize("cls", [ss.UDPServer, ss.TCPServer, ss.ThreadingUDPServer])
def test_constructor_uses_the_socket_as_socketserver_does(cls):
    # python-osc's tests patch socket.socket and build servers on the mock: socketserver's
    # constructor only binds (and listens); a private loop's server must not ask for fileno().
    from unittest import mock

    with mock.patch("socket.socket") as fake:
        server = cls(("127.0.0.1", 0), ss.BaseRequestHandler)
    sock = fake.return_value
    sock.bind.assert_called_once_with(("127.0.0.1", 0))
    assert server.socket is sock
    sock.fileno.assert_not_called()
    server.server_close()
    sock.close.assert_called_once_with()


def test_private_server_moved_to_a_shared_loop_is_served_there():
    import netloop

    loop = netloop.Loop()
    server = ss.UDPServer(("127.0.0.1", 0), ss.DatagramRequestHandler)
    try:
        server.set_loop(loop)  # attached at once: the shared loop's run serves it
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(10)
            client.sendto(b"ping", server.server_address)
            got = []
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                loop.run_once(0.05)
                try:
                    got.append(client.recvfrom(100, socket.MSG_DONTWAIT)[0])
                except BlockingIOError:
                    pass
            assert got == [b""]  # DatagramRequestHandler replies what wfile holds: nothing
    finally:
        server.server_close()
        loop.close()
