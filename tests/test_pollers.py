"""The poller contract: one set of tests run against every backend, skipped where it is missing."""

from __future__ import annotations

import os
import resource
import select
import socket
import struct
import tempfile
import time
from typing import Iterator, List, Tuple

import pytest

import netloop
from netloop import pollers
from netloop.pollers import ERROR, HANGUP, INVALID, READ, READ_MASK, WRITE

ALL_NAMES = ["select", "poll", "epoll", "kqueue"]


@pytest.fixture(params=ALL_NAMES)
def poller(request: pytest.FixtureRequest) -> Iterator[pollers.Poller]:
    name = request.param
    if name not in pollers.available():
        pytest.skip("%s is not available on this platform" % name)
    p = pollers.by_name(name)()
    yield p
    p.close()


@pytest.fixture
def pair() -> Iterator[Tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def tcp_pair() -> Tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def flags_for(events: List[Tuple[int, int]], fd: int) -> int:
    found = 0
    for efd, flags in events:
        if efd == fd:
            found |= flags
    return found


def poll_for(p: pollers.Poller, fd: int, wanted: int, timeout: float = 2.0) -> int:
    """Poll until ``fd`` reports one of ``wanted`` (the kernel may need a moment on loopback)."""
    deadline = time.monotonic() + timeout
    while True:
        flags = flags_for(p.poll(0.05), fd)
        if flags & wanted or time.monotonic() > deadline:
            return flags


class TestContract:
    def test_nothing_ready(self, poller, pair):
        a, b = pair
        poller.register(a.fileno(), READ_MASK)
        assert poller.poll(0) == []

    def test_read_when_data_waits(self, poller, pair):
        a, b = pair
        poller.register(a.fileno(), READ_MASK)
        b.send(b"x")
        assert poll_for(poller, a.fileno(), READ) & READ
        assert not flags_for(poller.poll(0), b.fileno())

    def test_write_when_writable(self, poller, pair):
        a, b = pair
        poller.register(a.fileno(), WRITE)
        flags = flags_for(poller.poll(0), a.fileno())
        assert flags & WRITE
        assert not flags & READ

    def test_modify_changes_interest(self, poller, pair):
        a, b = pair
        fd = a.fileno()
        poller.register(fd, READ_MASK)
        assert poller.poll(0) == []
        poller.modify(fd, READ_MASK | WRITE)
        assert flags_for(poller.poll(0), fd) & WRITE
        b.send(b"x")
        poller.modify(fd, WRITE)
        flags = poll_for(poller, fd, WRITE)
        assert flags & WRITE and not flags & READ
        poller.modify(fd, READ_MASK)
        flags = poll_for(poller, fd, READ)
        assert flags & READ and not flags & WRITE

    def test_unregister_stops_events(self, poller, pair):
        a, b = pair
        poller.register(a.fileno(), READ_MASK | WRITE)
        assert flags_for(poller.poll(0), a.fileno())
        poller.unregister(a.fileno())
        b.send(b"x")
        assert flags_for(poller.poll(0.05), a.fileno()) == 0

    def test_several_fds(self, poller):
        pairs = [socket.socketpair() for _ in range(5)]
        try:
            for a, _ in pairs:
                poller.register(a.fileno(), READ_MASK)
            for _, b in pairs[1::2]:
                b.send(b"x")
            deadline = time.monotonic() + 2
            ready: set = set()
            while len(ready) < 2 and time.monotonic() < deadline:
                ready |= {fd for fd, flags in poller.poll(0.05) if flags & READ}
            assert ready == {a.fileno() for a, b in pairs[1::2]}
        finally:
            for a, b in pairs:
                a.close()
                b.close()

    def test_poll_zero_never_blocks(self, poller, pair):
        a, b = pair
        poller.register(a.fileno(), READ_MASK)
        start = time.monotonic()
        for _ in range(100):
            assert poller.poll(0) == []
        assert time.monotonic() - start < 0.5

    def test_poll_timeout_waits(self, poller, pair):
        a, b = pair
        poller.register(a.fileno(), READ_MASK)
        start = time.monotonic()
        assert poller.poll(0.05) == []
        assert time.monotonic() - start >= 0.04

    def test_poll_none_returns_when_event_pending(self, poller, pair):
        a, b = pair
        poller.register(a.fileno(), READ_MASK)
        b.send(b"x")
        start = time.monotonic()
        events = poller.poll(None)
        assert flags_for(events, a.fileno()) & READ
        assert time.monotonic() - start < 1

    def test_hangup_after_peer_closes(self, poller, pair):
        a, b = pair
        fd = a.fileno()
        poller.register(fd, READ_MASK)
        b.close()
        flags = poll_for(poller, fd, READ | HANGUP)
        # Every backend says readable (recv gives b''); poll and epoll also say HANGUP.
        assert flags & (READ | HANGUP)
        if poller.name in ("poll", "epoll"):
            assert flags & HANGUP

    def test_error_after_peer_reset(self, poller):
        client, server = tcp_pair()
        try:
            fd = server.fileno()
            poller.register(fd, READ_MASK)
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            if poller.name in ("poll", "epoll"):
                flags = poll_for(poller, fd, HANGUP | ERROR)
                assert flags & HANGUP and flags & ERROR
            else:
                flags = poll_for(poller, fd, READ)
                assert flags & READ
            with pytest.raises(ConnectionResetError):
                server.recv(10)
        finally:
            server.close()

    def test_unregister_closed_fd(self, poller):
        a, b = socket.socketpair()
        fd = a.fileno()
        poller.register(fd, READ_MASK)
        a.close()
        b.close()
        poller.unregister(fd)  # must not raise
        poller.unregister(fd)  # nor twice

    def test_unregister_unknown_fd(self, poller, pair):
        poller.unregister(pair[0].fileno())

    def test_register_closed_fd_raises_oserror(self, poller):
        a, b = socket.socketpair()
        fd = a.fileno()
        a.close()
        b.close()
        if poller.name == "select":
            # select() learns of a closed fd only when it polls (the loop then finds it).
            return
        if poller.name == "poll":
            # poll(2) keeps a closed fd in its array and answers POLLNVAL.
            poller.register(fd, READ_MASK)
            assert flags_for(poller.poll(0), fd) & INVALID
            return
        with pytest.raises(OSError):
            poller.register(fd, READ_MASK)

    def test_name(self, poller):
        assert pollers.by_name(poller.name) is type(poller)


def test_epoll_regular_file_is_always_ready():
    if "epoll" not in pollers.available():
        pytest.skip("no epoll")
    p = pollers.EpollPoller()
    with tempfile.TemporaryFile() as f:
        f.write(b"data")
        f.flush()
        try:
            p.register(f.fileno(), READ_MASK)
            start = time.monotonic()
            events = p.poll(None)
            assert flags_for(events, f.fileno()) == READ
            assert time.monotonic() - start < 1
            p.modify(f.fileno(), READ_MASK | WRITE)
            assert flags_for(p.poll(5), f.fileno()) == READ | WRITE
            p.unregister(f.fileno())
            assert p.poll(0) == []
        finally:
            p.close()


def test_epoll_poll_is_an_instance_attribute_only():
    # The loop reads poller.poll once per pass. EpollPoller stores the C epoll.poll (or its
    # regular-file variant) on the instance; a method of the same name on the class would
    # shadow it, and each read would take the interpreter's generic attribute lookup.
    if "epoll" not in pollers.available():
        pytest.skip("no epoll")
    assert not any("poll" in vars(k) for k in pollers.EpollPoller.__mro__)
    p = pollers.EpollPoller()
    try:
        assert p.poll == p._ep.poll
        with tempfile.TemporaryFile() as f:
            p.register(f.fileno(), READ_MASK)
            assert p.poll == p._poll_with_files
            p.unregister(f.fileno())
        assert p.poll == p._ep.poll
    finally:
        p.close()


def test_epoll_finds_fd_closed_behind_its_back(monkeypatch):
    """epoll drops a closed fd silently; find_closed() says POLLNVAL for it, once."""
    if "epoll" not in pollers.available():
        pytest.skip("no epoll")
    from netloop.pollers import base as base_module
    monkeypatch.setattr(base_module, "SWEEP_INTERVAL", 0.0)
    p = pollers.EpollPoller()
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    e = None
    try:
        fd = a.fileno()
        p.register(fd, READ_MASK)
        p.register(c.fileno(), READ_MASK)
        assert p.find_closed() == []
        a.close()
        assert p.poll(0) == []  # epoll itself says nothing
        # The number is reused by a file the poller never saw: still reported as closed.
        e = socket.socket()
        if e.fileno() != fd:
            os.dup2(e.fileno(), fd)
            e.close()
            e = socket.socket(fileno=fd)
        assert p.find_closed() == [(fd, INVALID)]
        assert p.find_closed() == []  # once: the kernel holds nothing for it any more
        p.unregister(fd)  # the loop may still unregister it: harmless, e is untouched
        e.getsockname()
    finally:
        p.close()
        for s in (a, b, c, d, e):
            if s is not None:
                s.close()


def test_epoll_sweep_is_rate_limited():
    if "epoll" not in pollers.available():
        pytest.skip("no epoll")
    p = pollers.EpollPoller()
    a, b = socket.socketpair()
    try:
        p.register(a.fileno(), READ_MASK)
        fd = a.fileno()
        a.close()
        p._next_sweep = time.monotonic() + 60  # not yet due
        assert p.find_closed() == []
        p._next_sweep = 0
        assert p.find_closed() == [(fd, INVALID)]
    finally:
        p.close()
        b.close()


def test_select_refuses_large_fd():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = pollers.FD_SETSIZE + 6
    raised = False
    if soft <= target:
        if hard != resource.RLIM_INFINITY and hard <= target:
            pytest.skip("RLIMIT_NOFILE hard limit %d is too low to open fd %d" % (hard, target))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target + 1, hard))
        raised = True
    sock = socket.socket()
    try:
        os.dup2(sock.fileno(), target)
        try:
            p = pollers.SelectPoller()
            with pytest.raises(pollers.FDSetSizeError) as info:
                p.register(target, READ_MASK)
            assert isinstance(info.value, ValueError)
            message = str(info.value)
            assert str(target) in message and "epoll" in message
            assert p.poll(0) == []  # the refused fd is not half-registered
            p.close()
            # The loop reports the refusal to the channel rather than crashing every channel.
        finally:
            os.close(target)
    finally:
        sock.close()
        if raised:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_by_name_error_lists_available():
    with pytest.raises(ValueError) as info:
        pollers.by_name("nosuchpoller")
    message = str(info.value)
    assert "nosuchpoller" in message
    for name in pollers.available():
        assert name in message


def test_available_order():
    names = pollers.available()
    assert names[-1] == "select"
    assert set(names) <= set(ALL_NAMES)
    if hasattr(select, "epoll"):
        assert names[0] == "epoll"


@pytest.mark.parametrize("name", ["select", "poll", "epoll"])
def test_env_var_picks_backend(monkeypatch, name):
    if name not in pollers.available():
        pytest.skip("no %s" % name)
    monkeypatch.setenv(pollers.ENV_VAR, name)
    assert pollers.best() is pollers.by_name(name)
    p = pollers.create()
    try:
        assert p.name == name
    finally:
        p.close()
    lp = netloop.Loop()
    try:
        assert lp.poller.name == name
    finally:
        lp.close()
    # An explicit name wins over the environment.
    other = "select" if name != "select" else pollers.available()[0]
    lp = netloop.Loop(poller=other)
    try:
        assert lp.poller.name == other
    finally:
        lp.close()


def test_env_var_auto_and_unset(monkeypatch):
    monkeypatch.delenv(pollers.ENV_VAR, raising=False)
    assert pollers.best() is pollers.by_name(pollers.available()[0])
    monkeypatch.setenv(pollers.ENV_VAR, "auto")
    assert pollers.best() is pollers.by_name(pollers.available()[0])
    monkeypatch.setenv(pollers.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="bogus"):
        pollers.best()


def test_create_accepts_instance():
    p = pollers.SelectPoller()
    assert pollers.create(p) is p
    p.close()
