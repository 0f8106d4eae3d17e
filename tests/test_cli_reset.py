"""A connection its peer resets: the CLI's echo closes it without a read (no failing read, no
Python exception); every other dispatcher still reads it, as asyncore's did."""

from __future__ import annotations

import socket
from typing import Any, List

import pytest

import netloop
import netloop.asyncore
from netloop import cli
from coresupport import echo_roundtrip, rst_close
from support import run_until

pytestmark = pytest.mark.timeout(30)

# The pollers that report a reset as an error with the hang-up (select() only says readable).
REPORTS_ERRORS = {"epoll", "poll"}


def _still_serves(lp: netloop.Loop, server: Any, payload: bytes) -> None:
    """A new client of ``server`` gets ``payload`` echoed; its channel is gone after it closes."""
    other = socket.create_connection(server.address)
    try:
        echo_roundtrip(lp, other, payload)
    finally:
        other.close()
    run_until(lp, lambda: len(lp.map) == 1)


def _counting(base: Any, reads: List[int]) -> Any:
    """``base``'s handle_read() counted, set after the class is made (so the class keeps the
    reset rule its base gives it)."""
    class Counted(base):  # type: ignore[misc,valid-type]
        pass
    original = base.handle_read

    def handle_read(self: Any) -> None:
        reads.append(1)
        original(self)
    Counted.handle_read = handle_read  # type: ignore[method-assign]
    return Counted


@pytest.mark.parametrize("kind", ["dispatcher", "chat"])
def test_the_echo_closes_a_reset_connection_without_reading_it(loop: netloop.Loop,
                                                               poller_name: str,
                                                               kind: str) -> None:
    reads: List[int] = []
    server = cli._make_echo(kind, "127.0.0.1", 0, loop)
    server.handler_class = _counting(server.handler_class, reads)
    client = socket.create_connection(server.address)
    echo_roundtrip(loop, client, b"ping\n")
    before = len(reads)
    rst_close(client)
    run_until(loop, lambda: len(loop.map) == 1)
    if poller_name in REPORTS_ERRORS:
        assert len(reads) == before  # closed by handle_close() alone
    else:
        assert len(reads) == before + 1  # select(): readable, and the read finds the reset
    # The server goes on.
    _still_serves(loop, server, b"still here\n")


def test_bytes_sent_just_before_a_reset_are_not_echoed_and_nothing_breaks(
        loop: netloop.Loop) -> None:
    server = cli.EchoServer("127.0.0.1", 0, loop.map)
    doomed = socket.create_connection(server.address)
    run_until(loop, lambda: len(loop.map) == 2)
    doomed.sendall(b"x" * 1000)
    rst_close(doomed)  # before the loop has read a byte of it
    run_until(loop, lambda: len(loop.map) == 1)
    _still_serves(loop, server, b"y" * 10000)


class _ReadsItself(cli.EchoHandler):
    def handle_read(self) -> None:
        cli.EchoHandler.handle_read(self)


class _SendsItsWay(cli.EchoHandler):
    def send(self, data: Any) -> None:
        cli.EchoHandler.send(self, bytes(data))


@pytest.mark.parametrize("handler", [_ReadsItself, _SendsItsWay])
def test_an_echo_subclass_that_reads_its_own_way_reads_the_reset(loop: netloop.Loop,
                                                                 handler: Any) -> None:
    assert handler._nl_close_on_reset is False
    assert cli.EchoHandler._nl_close_on_reset is True
    reads: List[int] = []
    server = cli.EchoServer("127.0.0.1", 0, loop.map)
    server.handler_class = _counting(handler, reads)
    client = socket.create_connection(server.address)
    echo_roundtrip(loop, client, b"ping")
    before = len(reads)
    rst_close(client)
    run_until(loop, lambda: len(loop.map) == 1)
    assert len(reads) == before + 1


def test_asyncore_handlers_still_read_a_reset_connection(loop: netloop.Loop) -> None:
    """asyncore's contract: a reset reaches handle_read(), whose recv() calls handle_close()
    and returns b''."""
    events: List[Any] = []

    class Handler(netloop.asyncore.dispatcher_with_send):
        def handle_read(self) -> None:
            data = self.recv(8192)
            events.append(data)
            if data:
                self.send(data)

        def handle_close(self) -> None:
            events.append("close")
            self.close()

    class Server(netloop.asyncore.dispatcher):
        def __init__(self) -> None:
            netloop.asyncore.dispatcher.__init__(self, map=loop.map)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.bind(("127.0.0.1", 0))
            self.listen(5)

        def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
            Handler(sock, map=loop.map)

    assert Handler._nl_close_on_reset is False
    server = Server()
    client = socket.create_connection(server.socket.getsockname())
    echo_roundtrip(loop, client, b"ping")
    rst_close(client)
    run_until(loop, lambda: len(loop.map) == 1)
    assert events == [b"ping", "close", b""]  # recv() called handle_close(), then returned


class _FailsToClose(cli.EchoHandler):
    """Its first handle_close() raises before closing (handle_error() then closes it)."""
    failures: List[str] = []

    def handle_close(self) -> None:
        if not _FailsToClose.failures:
            _FailsToClose.failures.append("raised")
            raise RuntimeError("handle_close failed")
        cli.EchoHandler.handle_close(self)


def test_a_handle_close_that_raises_on_a_reset_leaves_the_loop_serving(
        loop: netloop.Loop, caplog: pytest.LogCaptureFixture) -> None:
    assert _FailsToClose._nl_close_on_reset is True  # (it reads as EchoHandler does)
    _FailsToClose.failures.clear()
    server = cli.EchoServer("127.0.0.1", 0, loop.map)
    server.handler_class = _FailsToClose
    client = socket.create_connection(server.address)
    echo_roundtrip(loop, client, b"ping")
    rst_close(client)
    run_until(loop, lambda: len(loop.map) == 1)  # closed all the same (leak check: no fd left)
    assert _FailsToClose.failures == ["raised"]
    assert "handle_close failed" in caplog.text  # handle_error() logged it
    _still_serves(loop, server, b"still here")
