"""The reactor: when loops return, how exceptions travel, identity within a pass, and interest."""

from __future__ import annotations

import os
import socket
from typing import Any, List

import pytest

import netloop
import netloop.asyncore
from netloop import pollers
from netloop.pollers import WRITE
from coresupport import CountingPoller, Echo, EchoServer, recv_some, tcp_pair
from support import run_until


class Writer(netloop.Dispatcher):
    """A connected channel that is always writable: one handle_write per pass."""

    def __init__(self, sock: Any, map: Any) -> None:
        super().__init__(sock, map=map)
        self.writes = 0
        self.raise_on_write: Any = None

    def handle_write(self) -> None:
        self.writes += 1
        if self.raise_on_write is not None:
            raise self.raise_on_write


class Reader(netloop.BufferedDispatcher):
    """Records reads without acting on them unless told to."""

    def __init__(self, sock: Any, map: Any, log: List[Any], name: str) -> None:
        super().__init__(sock, map=map)
        self.log = log
        self.name = name
        self.on_read: Any = None

    def handle_read(self) -> None:
        self.log.append(("read", self.name))
        if self.on_read is not None:
            self.on_read(self)
        if self._fileno is not None:
            self.recv(100)

    def handle_close(self) -> None:
        self.log.append(("close", self.name))
        self.close()


@pytest.fixture
def pairs():
    made: List[socket.socket] = []

    def make(n: int = 1):
        out = []
        for _ in range(n):
            a, b = socket.socketpair()
            made.extend((a, b))
            out.append((a, b))
        return out

    yield make
    for s in made:
        s.close()


# ---------------------------------------------------------------- when loops return

def test_run_returns_when_map_empties(loop, pairs):
    (a, b), = pairs()
    log: List[Any] = []
    r = Reader(a, loop.map, log, "r")
    r.on_read = lambda self: self.close()
    b.send(b"x")
    loop.run(timeout=5)
    assert log == [("read", "r")]
    assert not loop.map


def test_module_loop_returns_at_once_for_empty_map():
    m: dict = {}
    netloop.loop(map=m)
    netloop.asyncore.loop(map=m)
    netloop.asyncore.loop(map=m, use_poll=True)


@pytest.mark.parametrize("runner", ["Loop.run", "netloop.loop", "asyncore.loop"])
def test_count_limits_passes(poller_name, pairs, runner):
    (a, b), = pairs()
    m: dict = {}
    lp = netloop.Loop(m, poller=poller_name)
    w = Writer(a, m)
    try:
        if runner == "Loop.run":
            lp.run(timeout=1, count=3)
        elif runner == "netloop.loop":
            netloop.loop(timeout=1, map=m, count=3, poller=poller_name)
        else:
            netloop.asyncore.loop(timeout=1, map=m, count=3, poller=poller_name)
        assert w.writes == 3
    finally:
        w.close()
        lp.close()


@pytest.mark.parametrize("exc", [netloop.ExitNow, KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("runner", ["Loop.run", "netloop.loop", "asyncore.loop"])
def test_reraised_exceptions_leave_the_loop(poller_name, pairs, exc, runner):
    (a, b), = pairs()
    m: dict = {}
    lp = netloop.Loop(m, poller=poller_name)
    w = Writer(a, m)
    w.raise_on_write = exc("stop")
    errors: List[Any] = []
    w.handle_error = lambda: errors.append(1)  # type: ignore[assignment]
    try:
        with pytest.raises(exc):
            if runner == "Loop.run":
                lp.run(timeout=1, count=5)
            elif runner == "netloop.loop":
                netloop.loop(timeout=1, map=m, count=5, poller=poller_name)
            else:
                netloop.asyncore.loop(timeout=1, map=m, count=5, poller=poller_name)
        assert w.writes == 1 and errors == []
        assert not lp.running
        # The loop is usable afterwards.
        w.raise_on_write = None
        lp.run(timeout=1, count=2)
        assert w.writes == 3
    finally:
        w.close()
        lp.close()


def test_exit_now_from_timer_and_call_soon(loop):
    loop.call_soon(lambda: (_ for _ in ()).throw(netloop.ExitNow()))
    with pytest.raises(netloop.ExitNow):
        loop.run()
    loop.call_later(0, lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        loop.run()


def test_other_exceptions_go_to_handle_error(loop, pairs):
    (a1, b1), (a2, b2) = pairs(2)
    log: List[Any] = []
    bad = Reader(a1, loop.map, log, "bad")

    def explode(self: Any) -> None:
        raise ValueError("boom")

    bad.on_read = explode
    errors: List[Any] = []

    def handle_error() -> None:
        import sys
        errors.append(sys.exc_info()[1])
        bad.close()

    bad.handle_error = handle_error  # type: ignore[assignment]
    good = Echo(a2, map=loop.map)
    b1.send(b"x")
    b2.send(b"ping")
    b2.setblocking(False)
    got = bytearray()
    run_until(loop, lambda: recv_some(b2, got) or (errors and got == b"ping"))
    assert isinstance(errors[0], ValueError) and len(errors) == 1
    assert bad._fileno is None and good.connected
    # And the good channel keeps being served after the failure.
    b2.send(b"again")
    run_until(loop, lambda: recv_some(b2, got) or got == b"pingagain")


def test_default_handle_error_logs_and_closes(loop, pairs, caplog):
    (a, b), = pairs()
    log: List[Any] = []
    r = Reader(a, loop.map, log, "r")
    r.on_read = lambda self: 1 / 0
    b.send(b"x")
    with caplog.at_level("ERROR", logger="netloop"):
        run_until(loop, lambda: r._fileno is None)
    assert ("close", "r") in log
    assert "ZeroDivisionError" in caplog.text and "uncaptured python exception" in caplog.text


# ---------------------------------------------------------------- identity within a pass

def test_channel_closed_earlier_in_pass_gets_no_callback(loop, pairs):
    (a1, b1), (a2, b2) = pairs(2)
    log: List[Any] = []
    r1 = Reader(a1, loop.map, log, "one")
    r2 = Reader(a2, loop.map, log, "two")
    r1.other, r2.other = r2, r1  # type: ignore[attr-defined]

    def close_other(self: Any) -> None:
        if self.other._fileno is not None:
            self.other.close()

    r1.on_read = r2.on_read = close_other
    b1.send(b"x")
    b2.send(b"y")
    # Both fds are readable before the pass: make sure the poller reports both in one pass.
    loop.run_once(1)
    reads = [entry for entry in log if entry[0] == "read"]
    assert len(reads) == 1, log
    assert ("close", "one") not in log and ("close", "two") not in log
    loop.run_once(0)
    assert [entry for entry in log if entry[0] == "read"] == reads


def test_channel_closing_itself_gets_no_write_callback(loop, pairs):
    (a, b), = pairs()
    calls: List[str] = []

    class SelfCloser(netloop.Dispatcher):
        def handle_read(self) -> None:
            calls.append("read")
            self.close()

        def handle_write(self) -> None:
            calls.append("write")

    SelfCloser(a, map=loop.map)  # connected and writable: READ|WRITE in one event
    b.send(b"x")
    loop.run_once(1)
    assert calls == ["read"]


def test_new_channel_reusing_fd_never_gets_old_events(loop, pairs):
    (a1, b1), (a2, b2) = pairs(2)
    log: List[Any] = []
    state: dict = {}
    r1 = Reader(a1, loop.map, log, "one")
    r2 = Reader(a2, loop.map, log, "two")
    r1.other, r2.other = r2, r1  # type: ignore[attr-defined]

    def replace_other(self: Any) -> None:
        other = self.other
        if other._fileno is None:
            return
        fd = other._fileno
        other.close()
        s1, s2 = socket.socketpair()
        state["extra"] = [s1, s2]
        state["reused"] = s1.fileno() == fd
        if state["reused"]:
            new = Reader(s1, loop.map, log, "new")
            state["new"] = new
            state["fd"] = fd

    r1.on_read = r2.on_read = replace_other
    b1.send(b"x")
    b2.send(b"y")
    try:
        loop.run_once(1)
        if not state.get("reused"):
            pytest.skip("the OS did not reuse the closed descriptor number")
        new = state["new"]
        assert new.fileno() if hasattr(new, "fileno") else True
        assert new.socket.fileno() == state["fd"]
        assert ("read", "new") not in log
        # The new channel is served normally from the next pass on.
        state["extra"][1].send(b"z")
        run_until(loop, lambda: ("read", "new") in log)
        assert loop.map[state["fd"]] is new
    finally:
        for s in state.get("extra", []):
            s.close()


# ---------------------------------------------------------------- plain maps edited by hand

class Foreign:
    """Only the asyncore protocol: no netloop base class."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.got = bytearray()
        self.events: List[str] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read_event(self) -> None:
        self.events.append("read")
        self.got.extend(self.sock.recv(100))

    def handle_write_event(self) -> None:
        self.events.append("write")

    def handle_expt_event(self) -> None:
        self.events.append("expt")

    def handle_error(self) -> None:
        self.events.append("error")

    def handle_close(self) -> None:
        self.events.append("close")


def test_plain_dict_edited_by_hand(poller_name, pairs):
    (a, b), (c, d) = pairs(2)
    a.setblocking(False)
    m: dict = {}
    lp = netloop.Loop(m, poller=poller_name)
    try:
        log: List[Any] = []
        keeper = Reader(c, m, log, "keeper")  # keeps the map non-empty when f leaves it
        lp.run_once(0)
        f = Foreign(a)
        m[a.fileno()] = f  # behind the loop's back
        b.send(b"hello")
        run_until(lp, lambda: f.got == b"hello")
        assert a.fileno() in lp._masks
        del m[a.fileno()]
        lp.run_once(0)
        assert a.fileno() not in lp._masks
        b.send(b"more")
        for _ in range(3):
            lp.run_once(0.01)
        assert f.got == b"hello"
        # netloop.loop() serves a hand-made map too, and returns when it is emptied.
        m[a.fileno()] = f
        f.handle_read_event = lambda: m.clear()  # type: ignore[assignment]
        netloop.loop(timeout=1, map=m, count=50)
        assert not m
        keeper.close()
    finally:
        lp.close()


class Refusing(Foreign):
    """An object that takes none of netloop's attributes (as one with ``__slots__``)."""

    refused = "_nl_"  # the prefix of the names it refuses

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith(self.refused):
            raise AttributeError(name)
        super().__setattr__(name, value)


class RefusingDirect(Refusing):
    """Takes netloop's loop reference but not its direct-read flag."""

    refused = "_nl_direct"


@pytest.mark.parametrize("cls", [Refusing, RefusingDirect])
def test_an_object_refusing_netloop_attributes_is_read_and_forgotten(poller_name, pairs, cls):
    """The loop tests a flag it sets on each channel before anything else at a read event; an
    object in a legacy map that cannot take it is still read through handle_read_event(),
    not sent to handle_error(), and once out of the map no longer names the loop as its own
    (it did, when it took that reference but not the flag)."""
    (a, b), = pairs(1)
    m: dict = {}
    lp = netloop.Loop(m, poller=poller_name)
    try:
        f = cls(a)
        m[a.fileno()] = f
        lp.run_once(0)
        assert not hasattr(f, "_nl_direct")
        assert getattr(f, "_nl_loop", None) is (None if cls is Refusing else lp)
        b.send(b"hello")
        run_until(lp, lambda: f.got == b"hello")
        b.send(b" again")
        run_until(lp, lambda: f.got == b"hello again")
        assert "error" not in f.events and f.events.count("read") >= 2
        del m[a.fileno()]
        lp.run_once(0)
        assert getattr(f, "_nl_loop", None) is None
    finally:
        lp.close()


def test_a_channel_that_leaves_the_map_is_routed_afresh(poller_name, pairs):
    """A channel read directly (the flag the loop tests first at a read event) loses the flag
    when it leaves the map: put back into the map by hand during the pass that took it out,
    its event of that pass meets the pass's guard of closed numbers instead of going straight
    to handle_read()."""
    (a, b), (c, d) = pairs(2)
    counting = CountingPoller(poller_name)
    lp = netloop.Loop(poller=counting)
    log: List[Any] = []
    try:
        x = Reader(a, lp.map, log, "x")
        y = Reader(c, lp.map, log, "y")
        b.send(b"1")
        d.send(b"1")
        run_until(lp, lambda: x._nl_direct and y._nl_direct)
        seen: dict = {}

        def remove_the_other(ch: Any) -> None:
            seen.setdefault(ch.name, len(counting.timeouts))
            if "removed" not in seen:
                other = y if ch is x else x
                seen["removed"] = other.name
                fd = other._fileno
                other.del_channel()
                lp.map[fd] = other  # behind the loop's back

        x.on_read = y.on_read = remove_the_other
        b.send(b"2")  # both ready for the same pass
        d.send(b"2")
        run_until(lp, lambda: "removed" in seen)
        lp.run_once(0)
        removed = seen["removed"]
        first = "x" if removed == "y" else "y"
        assert seen.get(removed, 1e9) > seen[first]
    finally:
        lp.map.clear()
        lp.close()


def test_hand_removed_entry_with_pending_event(poller_name, pairs):
    """An fd deleted from the map while its event is in flight is dropped, not dispatched."""
    (a, b), (c, d) = pairs(2)
    m: dict = {}
    lp = netloop.Loop(m, poller=poller_name)
    try:
        f1, f2 = Foreign(a), Foreign(c)
        m[a.fileno()] = f1
        m[c.fileno()] = f2
        lp.run_once(0)
        b.send(b"x")
        d.send(b"y")

        def remove_other() -> None:
            m.pop(a.fileno(), None)
            m.pop(c.fileno(), None)
            m[a.fileno()] = f1  # f1 stays; whichever ran second must not run

        f1.handle_read_event = f2.handle_read_event = remove_other  # type: ignore[assignment]
        lp.run_once(1)
        assert c.fileno() not in m
        lp.run_once(0)
        assert c.fileno() not in lp._masks
        m.clear()
        lp.run_once(0)
    finally:
        lp.close()


# ---------------------------------------------------------------- interest

def test_known_channels_are_never_asked(poller_name, pairs):
    counting = CountingPoller(poller_name)
    lp = netloop.Loop(poller=counting)
    n = 400 if poller_name == "select" else 1000  # select stops at fd 1024
    try:
        chans = []
        for a, _ in pairs(n):
            d = Echo(a, map=lp.map)
            asked = {"readable": 0, "writable": 0}

            def count(kind: str, asked: dict = asked) -> Any:
                def predicate() -> bool:
                    asked[kind] += 1
                    return True
                return predicate

            # Instance attributes: the class still uses netloop's own predicates ("known").
            d.readable = count("readable")  # type: ignore[assignment]
            d.writable = count("writable")  # type: ignore[assignment]
            chans.append((d, asked))
        lp.run_once(0)
        before = counting.interest_calls()
        for _ in range(20):
            lp.run_once(0)
        assert counting.interest_calls() == before
        assert all(asked == {"readable": 0, "writable": 0} for _, asked in chans)
        # An echo on one of them changes no registration either (everything is sent at once).
        (a0, b0) = pairs()[0]
        Echo(a0, map=lp.map)
        lp.run_once(0)
        before = counting.interest_calls()
        b0.send(b"ping")
        b0.setblocking(False)
        got = bytearray()
        run_until(lp, lambda: recv_some(b0, got) or got == b"ping")
        assert counting.interest_calls() == before
    finally:
        for obj in list(lp.map.values()):
            obj.close()
        lp.close()


class Asked(netloop.Dispatcher):
    def __init__(self, sock: Any, map: Any) -> None:
        super().__init__(sock, map=map)
        self.asked = 0
        self.reads = 0

    def readable(self) -> bool:
        self.asked += 1
        return True

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        self.reads += 1
        self.recv(100)


@pytest.mark.parametrize("scan", [True, False])
def test_overriding_channels_are_asked(poller_name, pairs, scan):
    (a, b), = pairs()
    lp = netloop.Loop(poller=poller_name, scan=scan)
    try:
        ch = Asked(a, lp.map)
        assert not type(ch)._nl_known
        lp.run_once(0)
        start = ch.asked
        assert start >= 1  # asked at registration
        for _ in range(10):
            lp.run_once(0)
        if scan:
            assert ch.asked == start + 10
        else:
            assert ch.asked == start
            b.send(b"x")
            run_until(lp, lambda: ch.reads == 1)
            assert ch.asked == start + 1  # after its own event only
    finally:
        lp.close()
        ch.close()


def test_asked_interest_change_reaches_poller(poller_name, pairs):
    (a, b), = pairs()
    lp = netloop.Loop(poller=poller_name)
    try:
        ch = Asked(a, lp.map)
        on = {"read": False}
        ch.readable = lambda: on["read"]  # type: ignore[assignment]
        b.send(b"x")
        for _ in range(3):
            lp.run_once(0.01)
        assert ch.reads == 0
        on["read"] = True
        run_until(lp, lambda: ch.reads == 1)
    finally:
        lp.close()
        ch.close()


# ---------------------------------------------------------------- hang-ups

class HupRecorder(netloop.asyncore.dispatcher):
    def __init__(self, sock: Any, map: Any) -> None:
        super().__init__(sock, map=map)
        self.events: List[str] = []

    def handle_read(self) -> None:
        self.events.append("read")

    def handle_write(self) -> None:
        pass

    def handle_close(self) -> None:
        self.events.append("close")
        self.close()


@pytest.mark.parametrize("use_poll", [False, True])
def test_hangup_closes_only_with_use_poll(poller_name, pairs, use_poll):
    if poller_name == "select":
        pytest.skip("select() reports a hang-up as readable only")
    (a, b), = pairs()
    m: dict = {}
    h = HupRecorder(a, m)
    b.close()
    try:
        netloop.asyncore.loop(timeout=1, use_poll=use_poll, map=m, count=1, poller=poller_name)
        if use_poll:
            assert h.events == ["read", "close"]
        else:
            assert h.events == ["read"]
    finally:
        h.close()


def test_use_poll_picks_the_poll_backend(monkeypatch, pairs):
    monkeypatch.delenv(pollers.ENV_VAR, raising=False)
    (a, b), = pairs()
    m: dict = {}
    w = Writer(a, m)
    try:
        netloop.asyncore.loop(timeout=1, use_poll=True, map=m, count=1)
        assert netloop.get_loop(m).poller.name == "poll"
    finally:
        w.close()


def test_write_interest_follows_send_queue(loop):
    server = EchoServer(loop.map)
    client = socket.create_connection(server.address[:2])
    try:
        run_until(loop, lambda: server.channels)
        ch = server.channels[0]
        fd = ch._fileno
        assert not loop._masks[fd] & WRITE
        ch.send(b"x" * (8 << 20))  # more than the kernel buffers take
        assert ch._outq and loop._masks[fd] & WRITE
        got = bytearray()
        client.setblocking(False)
        run_until(loop, lambda: recv_some(client, got) or len(got) == 8 << 20, timeout=20)
        assert not ch._outq and not loop._masks[fd] & WRITE
    finally:
        client.close()


def test_loop_repr_and_double_loop(pairs):
    m: dict = {}
    lp = netloop.Loop(m, poller="select")
    try:
        assert "select" in repr(lp) and "idle" in repr(lp)
        with pytest.raises(ValueError):
            netloop.Loop(m)
        assert netloop.get_loop(m) is lp
    finally:
        lp.close()
    assert "closed" in repr(lp)
    with pytest.raises(RuntimeError):
        lp.run_once(0)


def test_implicit_loop_gives_back_kernel_objects(pairs):
    (a, b), = pairs()
    m: dict = {}
    before = set(os.listdir("/proc/self/fd"))
    log: List[Any] = []
    r = Reader(a, m, log, "r")
    r.on_read = lambda self: self.close()
    b.send(b"x")
    netloop.loop(timeout=1, map=m)
    assert log == [("read", "r")]
    assert not netloop.get_loop(m)._acquired
    after = set(os.listdir("/proc/self/fd"))
    assert len(after - before) == 0


def test_select_loop_reports_fd_too_large(pairs, caplog):
    """select cannot watch fd >= FD_SETSIZE: that channel is closed with a clear log line,
    the others keep being served (the refusal must not escape from the pass)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = pollers.FD_SETSIZE + 6
    raised = False
    if soft <= target:
        if hard != resource.RLIM_INFINITY and hard <= target:
            pytest.skip("RLIMIT_NOFILE hard limit too low")
        resource.setrlimit(resource.RLIMIT_NOFILE, (target + 1, hard))
        raised = True
    (a, b), (c, d) = pairs(2)
    lp = netloop.Loop(poller="select")
    big = None
    try:
        os.dup2(a.fileno(), target)
        big = socket.socket(fileno=target)
        log: List[Any] = []
        good = Echo(c, map=lp.map)
        lp.run_once(0)
        with caplog.at_level("WARNING", logger="netloop"):
            huge = Reader(big, lp.map, log, "huge")  # the loop is running: registered at once
            run_until(lp, lambda: ("close", "huge") in log)
        assert "FD_SETSIZE" in caplog.text and "epoll" in caplog.text
        assert huge._fileno is None and target not in lp.map
        d.send(b"still")
        d.setblocking(False)
        got = bytearray()
        run_until(lp, lambda: recv_some(d, got) or got == b"still")
        assert good.connected
        # Added before the loop took its poller: found while reconciling, same outcome.
        log.clear()
        a2, b2 = pairs()[0]
        os.dup2(a2.fileno(), target)
        lp2 = netloop.Loop(poller="select")
        try:
            Reader(socket.socket(fileno=target), lp2.map, log, "late")
            run_until(lp2, lambda: ("close", "late") in log)
        finally:
            lp2.close()
    finally:
        lp.close()
        for obj in list(lp.map.values()):
            obj.close()
        if raised:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_pause_and_resume_reading(loop, pairs):
    (a, b), = pairs()
    log: List[Any] = []
    r = Reader(a, loop.map, log, "r")
    loop.run_once(0)
    loop.pause_reading(r)
    b.send(b"x")
    for _ in range(3):
        loop.run_once(0.01)
    assert log == []
    loop.resume_reading(r)
    run_until(loop, lambda: log == [("read", "r")])
    # With a delay the channel comes back by itself.
    loop.pause_reading(r, 0.01)
    b.send(b"y")
    loop.run_once(0)
    assert log == [("read", "r")]
    run_until(loop, lambda: len(log) == 2)


def test_out_of_band_data_reaches_handle_expt(loop):
    client, server = tcp_pair()
    got: List[str] = []

    class Oob(netloop.BufferedDispatcher):
        def handle_expt(self) -> None:
            got.append(self.socket.recv(1, socket.MSG_OOB).decode())

        def handle_read(self) -> None:
            self.recv(100)

    d = Oob(server, map=loop.map)
    try:
        client.send(b"!", socket.MSG_OOB)
        run_until(loop, lambda: got == ["!"])
    finally:
        d.close()
        client.close()


def test_set_poller_switches_backend(pairs):
    (a, b), = pairs()
    lp = netloop.Loop(poller="select")
    try:
        log: List[Any] = []
        Reader(a, lp.map, log, "r")
        lp.run_once(0)
        other = pollers.available()[0]
        lp.set_poller(other)
        b.send(b"x")
        run_until(lp, lambda: log == [("read", "r")])
        assert lp.poller.name == other
    finally:
        for obj in list(lp.map.values()):
            obj.close()
        lp.close()


def test_loop_registry_is_weak_and_keeps_the_current_loop() -> None:
    import gc
    import weakref

    from netloop import reactor

    channels: dict = {}
    first = netloop.get_loop(channels)
    assert netloop.get_loop(channels) is first and reactor._lookup(channels) is first
    gone = weakref.ref(first)
    del first
    gc.collect()
    assert gone() is None  # nobody held it and it served nothing: it went away
    assert id(channels) not in reactor._loops

    old = netloop.Loop(channels)
    old.close()
    new = netloop.Loop(channels)  # a closed loop's map may be served again
    assert reactor._lookup(channels) is new
    del old
    gc.collect()  # the old loop's death must not drop the new loop's entry
    assert reactor._lookup(channels) is new and netloop.get_loop(channels) is new
    new.close()
    assert reactor._lookup(channels) is None
