"""Timers on a manual clock: order, cancellation, the poll timeout they ask for, idle timeouts."""

from __future__ import annotations

import socket
import time
from typing import Any, List

import pytest

import netloop
from netloop.timers import TimerQueue
from coresupport import FakePoller
from support import ManualClock, run_until


def noop() -> None:
    pass


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake() -> FakePoller:
    return FakePoller()


@pytest.fixture
def lp(clock, fake):
    """A loop on a manual clock and a poller that never blocks (it records the timeouts)."""
    loop = netloop.Loop(poller=fake, clock=clock)
    yield loop
    loop.close()


def test_order_of_call_later_call_at_call_every(lp, clock):
    log: List[Any] = []
    lp.call_later(3, log.append, "later3")
    lp.call_at(clock.now + 1, log.append, "at1")
    every = lp.call_every(2, lambda: log.append(("every", clock.now)))
    lp.call_later(1, log.append, "later1")  # same deadline as at1: scheduled after it
    for _ in range(6):
        clock.advance(1)
        lp.run_once(0)
    every.cancel()
    start = 1000.0
    assert log == ["at1", "later1", ("every", start + 2), "later3", ("every", start + 4),
                   ("every", start + 6)]


def test_nothing_runs_early(lp, clock):
    log: List[str] = []
    lp.call_later(5, log.append, "x")
    clock.advance(4.999)
    lp.run_once(0)
    assert log == []
    clock.advance(0.001)
    lp.run_once(0)
    assert log == ["x"]


def test_call_every_skips_missed_beats(lp, clock):
    log: List[float] = []
    h = lp.call_every(1, lambda: log.append(clock.now))
    clock.advance(10.5)  # a long pass
    lp.run_once(0)
    assert log == [1010.5]  # one call, not ten
    clock.advance(1)
    lp.run_once(0)
    assert log == [1010.5, 1011.5]
    h.cancel()


def test_call_every_rejects_nonpositive(lp):
    with pytest.raises(ValueError):
        lp.call_every(0, print)


def test_every_cancelling_itself(lp, clock):
    log: List[int] = []

    def tick() -> None:
        log.append(1)
        if len(log) == 3:
            h.cancel()

    h = lp.call_every(1, tick)
    for _ in range(6):
        clock.advance(1)
        lp.run_once(0)
    assert log == [1, 1, 1]
    assert lp.run_once(0) is None


def test_cancel_does_not_keep_run_alive(lp, clock):
    h = lp.call_later(100, print, "never")
    h.cancel()
    h.cancel()  # twice is harmless
    start = time.monotonic()
    lp.run()  # nothing pending: returns at once
    assert time.monotonic() - start < 1
    assert not h.active and h.cancelled


def test_cancelled_timer_does_not_shorten_sleep(lp, clock, fake):
    lp.call_later(10, print, "ten")
    soon = lp.call_later(1, print, "one")
    soon.cancel()
    fake.timeouts.clear()
    assert lp.run_once(None) == pytest.approx(10)
    assert fake.timeouts == [pytest.approx(10)]
    # A caller's cap still wins when it is shorter.
    fake.timeouts.clear()
    lp.run_once(2)
    assert fake.timeouts == [2]


def test_cancel_is_constant_time_and_compacts(lp, clock):
    q = lp._timers
    n = 100_000
    handles = [lp.call_later(1 + i * 0.001, print) for i in range(n)]
    assert len(q._heap) == n and len(q) == n
    start = time.process_time()
    for h in handles[: n - 10]:
        h.cancel()
    elapsed = time.process_time() - start
    assert len(q) == 10
    # Compaction keeps the heap within twice the live timers (plus a rebuild threshold).
    assert len(q._heap) < n // 10, len(q._heap)
    assert elapsed < 2.0  # O(1) amortised: a quadratic cancel would take minutes
    # The survivors still fire, in order.
    log: List[float] = []
    for h in handles[n - 10:]:
        h.callback = log.append
        h.args = (h.when,)
    clock.advance(1000)
    lp.run_once(0)
    assert log == sorted(h.when for h in handles[n - 10:])
    assert len(q._heap) == 0


def test_reset(lp, clock):
    log: List[float] = []
    h = lp.call_later(5, lambda: log.append(clock.now))
    clock.advance(4)
    h.reset()  # no interval: fires "now"
    lp.run_once(0)
    assert log == [1004]
    h.reset(3)  # a fired timer can be re-armed
    assert h.active
    clock.advance(2)
    lp.run_once(0)
    assert log == [1004]
    h.reset(3)  # pending: moved later, the old deadline is forgotten
    clock.advance(2)
    lp.run_once(0)
    assert log == [1004]
    clock.advance(1)
    lp.run_once(0)
    assert log == [1004, 1009]
    h.cancel()
    h.reset(1)  # a cancelled timer comes back too
    clock.advance(1)
    lp.run_once(0)
    assert log == [1004, 1009, 1010]
    assert lp.run_once(0) is None  # stale heap entries count for nothing


def test_reset_every_uses_interval(lp, clock):
    log: List[float] = []
    h = lp.call_every(5, lambda: log.append(clock.now))
    clock.advance(3)
    h.reset()
    clock.advance(4)
    lp.run_once(0)
    assert log == []
    clock.advance(1)
    lp.run_once(0)
    assert log == [1008]
    h.cancel()


def test_raising_timer_is_logged_and_loop_continues(lp, clock, caplog):
    log: List[str] = []

    def bad() -> None:
        raise RuntimeError("timer went wrong")

    lp.call_later(1, bad)
    lp.call_later(1, log.append, "after")
    lp.call_soon(lambda: 1 / 0)
    clock.advance(1)
    with caplog.at_level("ERROR", logger="netloop"):
        lp.run_once(0)
    assert log == ["after"]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2
    assert errors[0].exc_info is not None
    assert "RuntimeError: timer went wrong" in caplog.text
    assert "Traceback" in caplog.text and "ZeroDivisionError" in caplog.text


def test_run_once_return_value(lp, clock):
    assert lp.run_once(0) is None
    h = lp.call_later(7, print)
    assert lp.run_once(0) == pytest.approx(7)
    clock.advance(2)
    assert lp.run_once(0) == pytest.approx(5)
    lp.call_soon(lambda: lp.call_soon(noop))  # queues another call as it runs
    assert lp.run_once(0) == 0
    assert lp.run_once(0) == pytest.approx(5)
    h.cancel()
    assert lp.run_once(0) is None


def test_timeout_zero_is_not_none(lp, clock, fake):
    fake.timeouts.clear()
    lp.run_once(None)  # nothing pending: wait forever
    lp.run_once(0)
    assert fake.timeouts == [None, 0]
    fake.timeouts.clear()
    h = lp.call_later(0, noop)  # due now: poll now, never "forever"
    lp.run_once(None)
    assert fake.timeouts == [0]
    assert not h.active
    fake.timeouts.clear()
    h = lp.call_later(5, print)
    lp.run_once(0)  # the caller asked not to block: the timer does not lengthen it
    lp.run_once(None)
    assert fake.timeouts == [0, pytest.approx(5)]
    clock.advance(10)  # overdue: a negative delay becomes 0, not None
    fake.timeouts.clear()
    lp.run_once(None)
    assert fake.timeouts == [0]
    lp.call_soon(noop)
    fake.timeouts.clear()
    lp.run_once(None)  # queued calls: do not block
    assert fake.timeouts == [0]


def test_module_loop_returns_with_only_timers():
    m: dict = {}
    lp = netloop.Loop(m)
    log: List[str] = []
    try:
        lp.call_later(0.01, log.append, "timer")
        start = time.monotonic()
        netloop.loop(timeout=5, map=m)  # asyncore semantics: only channels keep it going
        assert time.monotonic() - start < 1 and log == []
        lp.run(timeout=5)  # Loop.run serves timers until none is left
        assert log == ["timer"]
        lp.call_later(0.01, log.append, "a")
        lp.call_later(0.02, lambda: lp.call_later(0.01, log.append, "c"))
        lp.run()
        assert log == ["timer", "a", "c"]
    finally:
        lp.close()


def test_closed_loop_timers(lp):
    h = lp.call_later(1, print)
    lp.close()
    assert lp.run_once is not None
    with pytest.raises(RuntimeError):
        h.reset()


def test_timer_queue_unit():
    now = [0.0]
    q = TimerQueue(lambda: now[0])
    a = q.schedule(2, None, print, ())
    b = q.schedule(1, None, print, ())
    assert q.next_deadline() == 1 and len(q) == 2
    b.cancel()
    assert q.next_deadline() == 2 and len(q) == 1
    assert q.pop_due(1.5) == []
    assert q.pop_due(2) == [a]
    assert q.next_deadline() is None and len(q) == 0
    assert "once" in repr(a)
    q.close()


# ---------------------------------------------------------------- channel timers

@pytest.fixture
def net(poller_name, clock):
    """A real poller on a manual clock: sockets work, time moves when told."""
    loop = netloop.Loop(poller=poller_name, clock=clock)
    yield loop
    for obj in list(loop.map.values()):
        obj.close()
    loop.close()


def test_channel_timers_cancelled_on_close(net, clock):
    a, b = socket.socketpair()
    try:
        d = netloop.Dispatcher(a, map=net.map)
        log: List[str] = []
        h1 = d.call_later(5, log.append, "once")
        h2 = d.call_every(1, log.append, "every")
        assert len(net._timers) == 2
        d.close()
        assert not h1.active and not h2.active
        assert len(net._timers) == 0
        clock.advance(10)
        net.run_once(0)
        assert log == []
    finally:
        b.close()


class Idle(netloop.BufferedDispatcher):
    timeouts = 0

    def handle_read(self) -> None:
        self.recv(100)

    def handle_idle_timeout(self) -> None:
        self.timeouts += 1
        super().handle_idle_timeout()


def test_idle_timeout_closes(net, clock, caplog):
    a, b = socket.socketpair()
    try:
        d = Idle(a, map=net.map)
        d.set_idle_timeout(10)
        clock.advance(9.9)
        net.run_once(0)
        assert d.connected
        clock.advance(0.1)
        with caplog.at_level("INFO", logger="netloop"):
            net.run_once(0)
        assert d.timeouts == 1 and not d.connected and d._fileno is None
        assert "idle for 10s" in caplog.text
        b.settimeout(5)
        assert b.recv(10) == b""
    finally:
        b.close()


@pytest.mark.parametrize("direction", ["in", "out"])
def test_idle_timeout_postponed_by_activity(net, clock, direction):
    a, b = socket.socketpair()
    try:
        d = Idle(a, map=net.map)
        d.set_idle_timeout(10)
        clock.advance(6)
        if direction == "in":
            b.send(b"ping")
            before = d.timeouts
            run_until(net, lambda: not _readable(a), timeout=5)
            assert d.timeouts == before
        else:
            d.send(b"pong")
        clock.advance(6)  # 12 s since the start, 6 since the activity
        net.run_once(0)
        assert d.connected and d.timeouts == 0
        assert len(net._timers) == 1  # re-armed once, not per byte
        clock.advance(4)  # 10 s since the activity
        net.run_once(0)
        assert d.timeouts == 1 and not d.connected
    finally:
        b.close()


def _readable(sock: socket.socket) -> bool:
    import select
    return bool(select.select([sock], [], [], 0)[0])


def test_idle_timeout_off_and_absent(net, clock):
    a, b = socket.socketpair()
    try:
        plain = Idle(a, map=net.map)
        assert len(net._timers) == 0  # no timer for channels without an idle timeout
        plain.set_idle_timeout(5)
        assert len(net._timers) == 1
        plain.set_idle_timeout(None)
        assert len(net._timers) == 0
        clock.advance(100)
        net.run_once(0)
        assert plain.connected and plain.timeouts == 0
        with pytest.raises(ValueError):
            plain.set_idle_timeout(0)
    finally:
        b.close()


def test_reset_many_times_keeps_heap_small(lp, clock):
    h = lp.call_later(60, print)
    for _ in range(10_000):
        clock.advance(0.001)
        h.reset(60)
    assert len(lp._timers) == 1
    assert len(lp._timers._heap) < 200, len(lp._timers._heap)
    h.cancel()
