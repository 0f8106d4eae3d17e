"""The select backend past FD_SETSIZE: connections it cannot watch are closed, one log line per
episode (not one per connection), and the server keeps serving the connections it can watch."""

from __future__ import annotations

import logging
import os
import resource
import socket
from typing import Iterator, List

import pytest

import netloop
from netloop import pollers

from support import run_until

LIMIT = pollers.FD_SETSIZE


class Echo(netloop.BufferedDispatcher):
    def handle_read(self) -> None:
        data = self.recv(4096)
        if data:
            self.send(data)

    def handle_close(self) -> None:
        self.close()


class Server(netloop.Dispatcher):
    def __init__(self, lp: netloop.Loop) -> None:
        super().__init__(map=lp.map)
        self.create_socket(socket.AF_INET)
        self.bind(("127.0.0.1", 0))
        self.listen(128)
        self.address = self.socket.getsockname()

    def handle_accepted(self, sock: socket.socket, addr: object) -> None:
        Echo(sock, map=self._map)


class Filler:
    """Takes every free descriptor below FD_SETSIZE, so the next socket gets one select()
    cannot watch; ``free(n)`` gives n of them back."""

    def __init__(self) -> None:
        self.null = os.open(os.devnull, os.O_RDONLY)
        self.fds: List[int] = []

    def fill(self) -> None:
        while True:
            fd = os.dup(self.null)
            if fd >= LIMIT:
                os.close(fd)
                return
            self.fds.append(fd)

    def free(self, count: int) -> None:
        for _ in range(count):
            os.close(self.fds.pop())

    def close(self) -> None:
        self.free(len(self.fds))
        os.close(self.null)


@pytest.fixture
def filler() -> Iterator[Filler]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = LIMIT + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip("RLIMIT_NOFILE hard limit %d is below %d" % (hard, wanted))
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    f = Filler()
    try:
        yield f
    finally:
        f.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def closed_by_server(client: socket.socket) -> bool:
    try:
        return client.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def lines(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == "netloop"]


@pytest.mark.timeout(30)
def test_refused_connections_log_one_line_per_episode(filler: Filler,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    lp = netloop.Loop(poller="select")
    clients: List[socket.socket] = []
    server = Server(lp)
    lp.run_once(0)  # the server is up (its loop holds its poller and wake-up pipe) before the load

    def connect(count: int) -> List[socket.socket]:
        new = [socket.create_connection(server.address, timeout=5) for _ in range(count)]
        for c in new:
            c.setblocking(False)
        clients.extend(new)
        return new

    try:
        with caplog.at_level(logging.INFO, logger="netloop"):
            # Episode 1: 40 connections, every accepted socket numbered FD_SETSIZE or more.
            filler.fill()
            refused = connect(40)
            run_until(lp, lambda: all(closed_by_server(c) for c in refused), timeout=10)
            assert len(lines(caplog)) == 1, lines(caplog)
            assert "FD_SETSIZE" in lines(caplog)[0] and "epoll" in lines(caplog)[0]
            # A channel registered again (its reading paused and resumed) is no new descriptor:
            # the episode goes on.
            lp.pause_reading(server)
            lp.run_once(0)
            lp.resume_reading(server)
            refused = connect(5)
            run_until(lp, lambda: all(closed_by_server(c) for c in refused), timeout=10)
            assert len(lines(caplog)) == 1, lines(caplog)

            # Descriptors below the limit are free again: the next connection is served,
            # and one line says how many were refused meanwhile.
            filler.free(8)
            served, = connect(1)
            served.sendall(b"ping")
            got = bytearray()

            def echoed() -> bool:
                try:
                    got.extend(served.recv(16))
                except BlockingIOError:
                    pass
                return bytes(got) == b"ping"

            run_until(lp, echoed)
            assert len(lines(caplog)) == 2, lines(caplog)
            assert "again" in lines(caplog)[1] and "45 channel" in lines(caplog)[1]

            # Episode 2 gets its own first line, and again only one.
            filler.fill()
            refused = connect(10)
            run_until(lp, lambda: all(closed_by_server(c) for c in refused), timeout=10)
            assert len(lines(caplog)) == 3, lines(caplog)
            assert server.accepting and lp.map.get(server._fileno) is server
    finally:
        for c in clients:
            c.close()
        for obj in list(lp.map.values()):
            obj.close()
        lp.close()
