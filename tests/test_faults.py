"""Faults: resets, half-closes, floods, sockets closed behind a channel's back, EMFILE."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import threading
from typing import Any, List

import pytest

import netloop
from coresupport import Echo, EchoServer, echo_roundtrip, recv_some, rst_close
from support import run_until

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")




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

    select says EBADF and poll POLLNVAL at once; epoll says nothing at all (it drops the fd
    silently), so there the loss is found when the number is registered again: here by the
    next accept().
    """
    server = EchoServer(loop.map)
    victim = socket.create_connection(server.address)
    other = socket.create_connection(server.address)
    late = socket.socket()  # made now, so that the number freed below goes to accept()
    try:
        run_until(loop, lambda: len(server.channels) == 2)
        echo_roundtrip(loop, other, b"before")
        dead = server.channels[0]
        fd = dead._fileno
        dead.socket.close()  # behind the dispatcher's (and the loop's) back
        with caplog.at_level("WARNING", logger="netloop"):
            if loop.poller.name in ("epoll", "kqueue"):
                late.connect(server.address)
            run_until(loop, lambda: dead.closed_by == "handle_close", timeout=10)
        assert any("closed behind" in r.getMessage() for r in caplog.records)
        assert loop.map.get(fd) is not dead and dead not in loop._objs.values()
        echo_roundtrip(loop, other, b"after")
    finally:
        victim.close()
        other.close()
        late.close()


def test_closed_behind_back_reported_once(loop, caplog):
    """One line per lost descriptor, on every backend; later passes do not repeat it."""
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    e = f = None
    try:
        dead, alive = Echo(a, map=loop.map), Echo(c, map=loop.map)
        loop.run_once(0)
        fd = a.fileno()
        a.close()
        with caplog.at_level("WARNING", logger="netloop"):
            for _ in range(3):
                loop.run_once(0)
            e, f = socket.socketpair()  # takes the lost number: epoll finds the loss now
            if e.fileno() != fd:
                os.dup2(e.fileno(), fd)
                e.close()
                e = socket.socket(fileno=fd)
            fresh = Echo(e, map=loop.map)
            run_until(loop, lambda: dead.closed_by == "handle_close")
            for _ in range(20):
                loop.run_once(0)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "closed behind" in warnings[0], warnings
        assert alive.connected and fresh.connected and loop.map[fd] is fresh
        f.sendall(b"ping")
        got = bytearray()
        f.setblocking(False)
        run_until(loop, lambda: recv_some(f, got) or got == b"ping")
    finally:
        for s in (b, c, d, e, f):
            if s is not None:
                s.close()


def test_socket_closed_behind_back_and_number_reused(loop):
    """The dead channel's fd is reused by a socket the loop does not know: select and poll
    still report it; epoll has forgotten it, and keeps the stranger untouched until the
    number is registered again."""
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
        if loop.poller.name in ("epoll", "kqueue"):
            for _ in range(5):
                loop.run_once(0)
            assert spare.fileno() == fd
            Echo(spare, map=loop.map)  # the number registered again: the loss is found
            spare = None
        run_until(loop, lambda: dead.closed_by == "handle_close", timeout=10)
        if spare is not None:
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


class ForgetfulServer(netloop.Dispatcher):
    """Keeps no reference to its connections (most servers do not): a channel dropped from
    the map is garbage, and so is its socket object."""

    def __init__(self, map: Any) -> None:
        super().__init__(map=map)
        self.create_socket()
        self.bind(("127.0.0.1", 0))
        self.listen(64)
        self.address = self.socket.getsockname()
        self.fds: List[int] = []

    def handle_accepted(self, sock: Any, addr: Any) -> None:
        self.fds.append(sock.fileno())
        Echo(sock, map=self._map)


def _echo_all(lp: netloop.Loop, clients: List[socket.socket], data: bytes) -> None:
    got = {c: bytearray() for c in clients}
    for c in clients:
        c.setblocking(False)
        c.send(data)

    def done() -> bool:
        for c, g in got.items():
            try:
                chunk = c.recv(4096)
            except BlockingIOError:
                continue
            assert chunk, "the server closed a new client's connection"
            g.extend(chunk)
        return all(g == data for g in got.values())

    run_until(lp, done)


def test_fd_closed_behind_back_then_reused_by_accept(loop, caplog):
    """os.close() of served connections behind the loop, then new clients: accept() reuses
    the numbers; the stale channels are retired (logged) without closing the new
    connections' descriptors, even once their socket objects are garbage-collected."""
    server = ForgetfulServer(loop.map)
    first = [socket.create_connection(server.address) for _ in range(3)]
    later = [socket.socket() for _ in range(4)]  # made now: the freed numbers go to accept()
    try:
        run_until(loop, lambda: len(server.fds) == 3)
        _echo_all(loop, first, b"hello")
        lost = server.fds[:2]
        with caplog.at_level("WARNING", logger="netloop"):
            for fd in lost:
                os.close(fd)  # user code, behind the channels' backs
            for c in later:
                c.connect(server.address)
            run_until(loop, lambda: len(server.fds) == 7)
            assert set(lost) <= set(server.fds[3:])  # the numbers were reused
            gc.collect()  # the stale socket objects, if any, close what they hold now
            _echo_all(loop, later + first[2:], b"served")
            gc.collect()
            _echo_all(loop, later, b"again")
        lines = [r.getMessage() for r in caplog.records if "closed behind" in r.getMessage()]
        assert len(lines) == len(lost), lines
        for c in later:
            c.setblocking(True)
            c.shutdown(socket.SHUT_WR)
    finally:
        for c in first + later:
            c.close()


def test_fd_closed_behind_back_under_run_forever(poller_name, caplog):
    """The same on a loop in run_forever() with no timer at all (epoll never sees an idle
    pass there): the reuse is found when accept() registers the number again."""
    lp = netloop.Loop(poller=poller_name)
    server = ForgetfulServer(lp.map)
    runner = threading.Thread(target=lp.run_forever)
    clients: List[socket.socket] = []
    try:
        with caplog.at_level("WARNING", logger="netloop"):
            runner.start()
            first = socket.create_connection(server.address, timeout=5)
            clients.append(first)
            first.sendall(b"one")
            assert first.recv(3) == b"one"
            closed = threading.Event()
            late = socket.socket()
            clients.append(late)

            def close_behind_back() -> None:
                os.close(server.fds[0])
                closed.set()

            lp.call_soon_threadsafe(close_behind_back)
            assert closed.wait(5)
            late.settimeout(5)
            late.connect(server.address)
            for _ in range(3):
                late.sendall(b"ping")
                assert late.recv(4) == b"ping"
                lp.call_soon_threadsafe(gc.collect)
        assert any("closed behind" in r.getMessage() for r in caplog.records)
    finally:
        lp.stop()
        runner.join(5)
        for c in clients:
            c.close()
        for obj in list(lp.map.values()):
            obj.close()
        lp.close()
    assert not runner.is_alive()


def test_fd_reused_while_no_loop_watches_the_map(caplog):
    """The same retirement when the map's loop holds no kernel objects at that moment (not
    run yet, or released between runs): the new channel keeps its descriptor."""
    lp = netloop.Loop()
    closed: List[str] = []

    class Tracked(Echo):
        def handle_close(self) -> None:
            closed.append("stale")
            super().handle_close()

    a, b = socket.socketpair()
    e = f = None
    try:
        Tracked(a, map=lp.map)
        fd = a.fileno()
        os.close(fd)  # behind the channel's back, before any pass
        e, f = socket.socketpair()
        if e.fileno() != fd:
            os.dup2(e.fileno(), fd)
            e.close()
            e = socket.socket(fileno=fd)
        with caplog.at_level("WARNING", logger="netloop"):
            fresh = Echo(e, map=lp.map)
        assert any("closed behind" in r.getMessage() for r in caplog.records)
        del a
        gc.collect()  # the stale socket object, if it still owned fd, would close it now
        os.fstat(fd)
        f.sendall(b"ping")
        f.setblocking(False)
        got = bytearray()
        run_until(lp, lambda: recv_some(f, got) or (got == b"ping" and bool(closed)))
        assert lp.map[fd] is fresh and closed == ["stale"]
    finally:
        for obj in list(lp.map.values()):
            obj.close()
        lp.close()
        for s in (b, f):
            if s is not None:
                s.close()


class FakeSocket:
    """A test's stand-in for a socket (as other projects' suites make): a made-up number."""

    def __init__(self, no: int) -> None:
        self.no = no
        self.closed = False

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return self.no

    def getpeername(self) -> Any:
        return ("127.0.0.1", self.no)

    def close(self) -> None:
        self.closed = True


class Quiet(netloop.Dispatcher):
    """Neither readable nor writable: the loop registers nothing with the kernel for it."""

    def __init__(self, sock: Any, map: Any, log: List[str], name: str) -> None:
        self.log, self.name = log, name
        super().__init__(sock, map=map)

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False

    def handle_close(self) -> None:
        self.log.append(self.name)
        self.close()


def test_fake_sockets_sharing_a_number_are_not_retired(loop, caplog):
    """Two channels on stand-in sockets with one made-up number (zope.server's tests do this):
    the second takes the map's entry, as in asyncore; the first is told nothing (no fake
    socket has a descriptor to lose) and nothing is logged."""
    closed: List[str] = []
    with caplog.at_level("WARNING", logger="netloop"):
        loop.run_once(0)
        first = Quiet(FakeSocket(4242), loop.map, closed, "first")
        second = Quiet(FakeSocket(4242), loop.map, closed, "second")
        for _ in range(3):
            loop.run_once(0)
    assert loop.map[4242] is second
    assert first._fileno == 4242 and not first.socket.closed and closed == []
    assert not [r for r in caplog.records if "closed behind" in r.getMessage()]
    first.close()  # its close() leaves the new channel's entry alone
    assert loop.map[4242] is second
    second.close()


@pytest.mark.parametrize("how", ["second socket object", "detached, as ssl wrapping does"])
def test_descriptor_still_open_under_a_new_channel_is_not_retired(how, caplog):
    """A new channel on the same open descriptor (a second socket object made on it, or the
    first one detached and the number given to a new object, as ``ssl.wrap_socket()``
    does): epoll still holds the file's registration, so nothing was closed behind anyone's
    back. The new channel takes the number as in asyncore; the old one is not closed, and
    its later close() neither takes the new one out of the map nor stops its reads."""
    lp = netloop.Loop(poller="epoll")
    closed: List[str] = []

    class Reader(netloop.Dispatcher):
        def __init__(self, sock: socket.socket, name: str) -> None:
            self.name, self.got = name, bytearray()
            super().__init__(sock, map=lp.map)

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            self.got += self.recv(100)

        def handle_close(self) -> None:
            closed.append(self.name)
            self.close()

    a, b = socket.socketpair()
    fd = a.fileno()
    try:
        with caplog.at_level("WARNING", logger="netloop"):
            old = Reader(a, "old")
            lp.run_once(0)
            if how == "second socket object":
                twin = socket.socket(fileno=fd)
            else:
                twin = socket.socket(fileno=a.detach())
            new = Reader(twin, "new")
            lp.run_once(0)
        assert not [r for r in caplog.records if "closed behind" in r.getMessage()]
        assert lp.map[fd] is new and closed == []
        b.send(b"one")
        run_until(lp, lambda: new.got == b"one")
        if old.socket.fileno() == fd:
            old.socket.detach()  # the descriptor is new's to close
        old.close()
        assert lp.map[fd] is new
        b.send(b"two")
        run_until(lp, lambda: new.got == b"onetwo")
        assert old.got == b"" and closed == []
    finally:
        for obj in list(lp.map.values()):
            obj.close()
        lp.close()
        b.close()


def test_epoll_holds_tells_a_reused_number_from_an_open_one():
    from netloop.pollers.epoll import EpollPoller
    poller = EpollPoller(track_closed=False)
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        fd = a.fileno()
        poller.register(fd, netloop.pollers.READ)
        assert poller.holds(fd, netloop.pollers.READ)
        os.dup2(c.fileno(), fd)  # the registered file closed, its number now another's
        assert not poller.holds(fd, netloop.pollers.READ)
        assert not poller.holds(b.fileno(), netloop.pollers.READ)  # never registered
    finally:
        poller.close()
        for s in (a, b, c, d):
            s.close()
