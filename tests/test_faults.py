"""Faults: resets, half-closes, floods, sockets closed behind a channel's back, EMFILE."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys

import pytest

import netloop
from coresupport import Echo, EchoServer, recv_some
from support import run_until

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def rst_close(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER on, zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def echo_roundtrip(lp: netloop.Loop, client: socket.socket, data: bytes) -> None:
    client.setblocking(False)
    client.send(data)
    got = bytearray()
    run_until(lp, lambda: recv_some(client, got) or len(got) >= len(data))
    assert got == data


def test_peer_reset_mid_stream(loop):
    server = EchoServer(loop.map)
    victim = socket.create_connection(server.address)
    other = socket.create_connection(server.address)
    try:
        run_until(loop, lambda: len(server.channels) == 2)
        echo_roundtrip(loop, other, b"before")
        # The victim sends a lot and resets without reading the echo: the server's channel
        # has a send backlog and unread input when the RST arrives.
        victim.setblocking(False)
        try:
            victim.send(os.urandom(1 << 20))
        except BlockingIOError:
            pass
        for _ in range(5):
            loop.run_once(0)
        rst_close(victim)
        run_until(loop, lambda: server.channels[0].closed_by == "handle_close")
        assert server.channels[0]._fileno is None
        echo_roundtrip(loop, other, b"after")
        assert server.channels[1].connected
    finally:
        other.close()
        if victim.fileno() >= 0:
            victim.close()


def test_half_closed_peer(loop):
    server = EchoServer(loop.map)
    client = socket.create_connection(server.address)
    try:
        run_until(loop, lambda: server.channels)
        echo_roundtrip(loop, client, b"hello")
        client.shutdown(socket.SHUT_WR)
        ch = server.channels[0]
        run_until(loop, lambda: ch.closed_by == "handle_close")
        client.settimeout(5)
        assert client.recv(10) == b""  # the server closed its side in turn
    finally:
        client.close()


def test_flood(loop):
    server = EchoServer(loop.map)
    data = os.urandom(5 << 20)

    class Flooder(netloop.BufferedDispatcher):
        def __init__(self) -> None:
            super().__init__(map=loop.map)
            self.got = bytearray()
            self.create_socket()
            self.connect(server.address)

        def handle_connect(self) -> None:
            self.send(data)  # all at once: what the kernel does not take is queued

        def handle_read(self) -> None:
            self.got.extend(self.recv(1 << 16))

    f = Flooder()
    run_until(loop, lambda: len(f.got) >= len(data), timeout=30)
    assert f.got == data
    assert not f._outq and not server.channels[0]._outq


def test_socket_closed_behind_back(loop, caplog):
    """``d.socket.close()`` without ``d.close()``: reported through handle_close, others go on.

    select says EBADF, poll POLLNVAL, and epoll nothing at all (it drops the fd silently): the
    epoll poller finds it on an idle pass.
    """
    server = EchoServer(loop.map)
    victim = socket.create_connection(server.address)
    other = socket.create_connection(server.address)
    try:
        run_until(loop, lambda: len(server.channels) == 2)
        echo_roundtrip(loop, other, b"before")
        dead = server.channels[0]
        fd = dead._fileno
        dead.socket.close()  # behind the dispatcher's (and the loop's) back
        with caplog.at_level("WARNING", logger="netloop"):
            run_until(loop, lambda: dead.closed_by == "handle_close", timeout=10)
        assert fd not in loop.map and fd not in loop._masks
        echo_roundtrip(loop, other, b"after")
    finally:
        victim.close()
        other.close()


def test_closed_behind_back_reported_once(loop, caplog, monkeypatch):
    """Later idle passes do not report the same dead descriptor again and again."""
    from netloop.pollers import base as base_module
    monkeypatch.setattr(base_module, "SWEEP_INTERVAL", 0.0)
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        dead, alive = Echo(a, map=loop.map), Echo(c, map=loop.map)
        loop.run_once(0)
        a.close()
        with caplog.at_level("WARNING", logger="netloop"):
            run_until(loop, lambda: dead.closed_by == "handle_close")
            for _ in range(20):
                loop.run_once(0)
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        # select and epoll log one line; poll's POLLNVAL goes straight to handle_close.
        assert len(warnings) <= 1, [r.getMessage() for r in warnings]
        assert alive.connected
    finally:
        for s in (b, c, d):
            s.close()


def test_socket_closed_behind_back_and_number_reused(loop):
    """The dead channel's fd is reused by a socket the loop does not know: still reported."""
    server = EchoServer(loop.map)
    victim = socket.create_connection(server.address)
    other = socket.create_connection(server.address)
    spare = None
    try:
        run_until(loop, lambda: len(server.channels) == 2)
        dead = server.channels[0]
        fd = dead._fileno
        dead.socket.close()
        spare = socket.socket()
        if spare.fileno() != fd:
            os.dup2(spare.fileno(), fd)
            spare.close()
            spare = socket.socket(fileno=fd)
        run_until(loop, lambda: dead.closed_by == "handle_close", timeout=10)
        assert spare.fileno() == fd  # the loop did not close the stranger's descriptor
        echo_roundtrip(loop, other, b"still served")
    finally:
        victim.close()
        other.close()
        if spare is not None:
            spare.close()


EMFILE_CHILD = r"""
import json, logging, os, resource, socket, sys, time
sys.path.insert(0, SRC)
import netloop

lines = []
class Collect(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
logging.getLogger("netloop").addHandler(Collect())
logging.getLogger("netloop").setLevel(logging.INFO)

lp = netloop.Loop(poller=POLLER)
accepted = []

class Server(netloop.Dispatcher):
    def handle_accepted(self, sock, addr):
        accepted.append(sock)

server = Server(map=lp.map)
server.create_socket()
server.bind(("127.0.0.1", 0))
server.listen(16)
lp.run_once(0)

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
clients = [socket.create_connection(server.socket.getsockname()) for _ in range(3)]
fillers = []
while True:
    try:
        fillers.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        break

usage = lambda: (lambda u: u.ru_utime + u.ru_stime)(resource.getrusage(resource.RUSAGE_SELF))
cpu0, wall0, passes = usage(), time.monotonic(), 0
while time.monotonic() - wall0 < 1.0:
    lp.run_once(1.0)
    passes += 1
cpu = usage() - cpu0
starved = dict(accepted=len(accepted), passes=passes, cpu=cpu,
               listening=server.accepting and server._fileno in lp.map,
               lines=[l for l in lines if "accept" in l])

for fd in fillers:
    os.close(fd)
deadline = time.monotonic() + 5
while len(accepted) < 3 and time.monotonic() < deadline:
    lp.run_once(0.05)
print(json.dumps(dict(starved=starved, accepted_after=len(accepted))))
"""


@pytest.mark.parametrize("poller_name", netloop.available_pollers())
def test_emfile_on_accept(poller_name):
    code = EMFILE_CHILD.replace("SRC", repr(SRC)).replace("POLLER", repr(poller_name))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    starved = result["starved"]
    print("\n%s: %d passes, %.3f s CPU in 1 s starved of fds; log: %r"
          % (poller_name, starved["passes"], starved["cpu"], starved["lines"]))
    assert starved["accepted"] == 0
    assert starved["listening"]
    assert starved["lines"], "no log line about the failed accept()"
    assert "Too many open files" in starved["lines"][0]
    assert len(starved["lines"]) <= 2  # one clear line, not one per retry
    assert starved["passes"] < 100  # no busy loop
    assert starved["cpu"] < 0.5
    assert result["accepted_after"] == 3
