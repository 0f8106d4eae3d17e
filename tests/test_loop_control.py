"""Loop control that cannot hang (issue 11, items 4-6): stop() before a run, re-entrant and
concurrent runs, a Loop wherever a map is taken, and an unknown poller name."""

from __future__ import annotations

import os
import signal
import socket
import threading
from typing import Any, List

import pytest

import netloop
import netloop.asyncore as asyncore
from netloop import reactor
from coresupport import CountingPoller, Echo, recv_some
from support import run_until

pytestmark = pytest.mark.timeout(20)


def counting_loop(poller_name: str) -> Any:
    poller = CountingPoller(poller_name)
    return netloop.Loop(poller=poller), poller


def shut(lp: netloop.Loop, *socks: Any) -> None:
    """A test's clean-up: close the map's channels, the loop and the test's own sockets."""
    for obj in list(lp.map.values()):
        obj.close()
    lp.close()
    for s in socks:
        s.close()


def socket_numbered(fd: int, peers: List[socket.socket]) -> socket.socket:
    """A new connected socket under the number ``fd`` (just closed); its peer goes to the end
    of ``peers``."""
    x, y = socket.socketpair()
    peers.append(y)
    if x.fileno() != fd:
        os.dup2(x.fileno(), fd)
        x.close()
        x = socket.socket(fileno=fd)
    return x


# ---------------------------------------------------------------- 11.4: stop() before a run

@pytest.mark.parametrize("how", ["run_forever", "run", "loop"])
def test_stop_before_run_returns_after_one_non_blocking_pass(poller_name, how):
    lp, poller = counting_loop(poller_name)
    a, b = socket.socketpair()
    try:
        Echo(a, map=lp.map)  # something to serve, so that run() and loop() do not return early
        guard = lp.call_later(3.0, lp.stop)  # before the fix: the pass waited for this
        lp.stop()
        if how == "run_forever":
            lp.run_forever()
        elif how == "run":
            lp.run()
        else:
            netloop.loop(map=lp.map, timeout=None)
        assert poller.timeouts == [0]
        assert guard.active
        guard.cancel()
        # The request was consumed: the next run blocks again (here until the guard fires).
        lp.call_later(0.01, lp.stop)
        lp.run_forever()
        assert len(poller.timeouts) >= 2 and poller.timeouts[1] != 0
    finally:
        for obj in list(lp.map.values()):
            obj.close()
        lp.close()
        b.close()


def test_stop_before_run_on_an_empty_loop(poller_name):
    lp, poller = counting_loop(poller_name)
    try:
        lp.stop()
        lp.run_forever()  # used to block forever: nothing registered, no timer
        assert poller.timeouts == [0]
    finally:
        lp.close()


@pytest.mark.skipif(not hasattr(signal, "raise_signal"), reason="needs signal.raise_signal")
@pytest.mark.parametrize("installed_by", ["python", "loop"])
def test_sigterm_during_startup_is_not_lost(poller_name, installed_by):
    lp, poller = counting_loop(poller_name)
    old = signal.getsignal(signal.SIGTERM)
    try:
        if installed_by == "python":
            signal.signal(signal.SIGTERM, lambda signum, frame: lp.stop())
        else:
            lp.add_signal_handler(signal.SIGTERM, lp.stop)
        guard = lp.call_later(5.0, lp.stop)
        signal.raise_signal(signal.SIGTERM)  # start-up is not over: no run yet
        lp.run_forever()
        assert guard.active, "the SIGTERM was lost; the guard timer ended the run"
        guard.cancel()
    finally:
        if installed_by == "loop":
            lp.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, old)
        lp.close()


# ---------------------------------------------------------------- 11.5: re-entrant runs

@pytest.mark.parametrize("inner", ["run", "run_forever", "run_once"])
def test_run_from_a_callback_raises_and_outer_stop_works(poller_name, inner):
    lp, poller = counting_loop(poller_name)
    errors: List[BaseException] = []

    def callback() -> None:
        try:
            if inner == "run_once":
                lp.run_once(0)
            else:
                getattr(lp, inner)()
        except RuntimeError as err:
            errors.append(err)
        lp.stop()

    try:
        guard = lp.call_later(5.0, lp.stop)
        lp.call_soon(callback)
        lp.run_forever()
        assert guard.active, "the outer run_forever() did not see its stop()"
        guard.cancel()
        assert len(errors) == 1 and "already running" in str(errors[0])
        assert lp.thread_id is None and not lp.running
    finally:
        lp.close()


def test_run_from_another_thread_raises(poller_name):
    lp, poller = counting_loop(poller_name)
    started = threading.Event()
    errors: List[BaseException] = []
    lp.call_soon(started.set)
    runner = threading.Thread(target=lp.run_forever)
    runner.start()
    try:
        assert started.wait(5)
        for call in (lambda: lp.run_once(0), lambda: lp.run(count=1), lp.run_forever):
            try:
                call()
            except RuntimeError as err:
                errors.append(err)
        assert len(errors) == 3
        assert all("another thread" in str(err) for err in errors)
        assert lp.running
    finally:
        lp.stop()
        runner.join(5)
        lp.close()
    assert not runner.is_alive()


def test_legacy_loop_nested_in_a_handler_keeps_outer_stop(poller_name):
    """asyncore.loop()/poll() from a handler run nested passes, as asyncore did, and leave
    the outer run's stop() and thread in place."""
    lp, poller = counting_loop(poller_name)
    a, b = socket.socketpair()
    seen: List[Any] = []

    class Nester(netloop.Dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            self.recv(10)
            lp.stop()
            asyncore.poll(0, map=lp.map)
            netloop.loop(timeout=0, map=lp.map, count=2)
            seen.append(lp.thread_id)

    try:
        Nester(a, map=lp.map)
        guard = lp.call_later(5.0, lp.stop)
        b.send(b"x")
        lp.run_forever()
        assert guard.active, "a nested legacy pass consumed the outer stop()"
        guard.cancel()
        assert seen == [threading.get_ident()]
    finally:
        for obj in list(lp.map.values()):
            obj.close()
        lp.close()
        b.close()


def test_stop_from_another_thread_between_passes_is_not_lost(poller_name):
    """Replays the interleaving: stop() runs in another thread after one pass has ended and
    before the next one polls (the loop is not "in a pass", so nothing wakes it)."""
    lp, poller = counting_loop(poller_name)
    calls = [0]
    real_pass = lp._pass

    def pass_with_stop_between(timeout: Any, go_on: bool = False) -> None:
        calls[0] += 1
        if calls[0] == 2:
            lp._running -= 1  # as between two passes of _run
            stopper = threading.Thread(target=lp.stop)
            stopper.start()
            stopper.join()
            lp._running += 1
        real_pass(timeout, go_on)

    lp._pass = pass_with_stop_between  # type: ignore[method-assign]
    try:
        guard = lp.call_later(5.0, lp.stop)
        lp.call_soon(lambda: None)  # first pass: does not block
        lp.run_forever()
        assert guard.active, "the stop() between two passes was lost"
        guard.cancel()
        assert calls[0] == 2 and poller.timeouts[-1] == 0
    finally:
        lp.close()


def test_run_forever_in_thread_stopped_from_outside(poller_name):
    """The plain case, many times: no stop() is lost whatever the timing."""
    lp, poller = counting_loop(poller_name)
    try:
        for _ in range(50):
            runner = threading.Thread(target=lp.run_forever)
            runner.start()
            lp.stop()
            runner.join(5)
            assert not runner.is_alive()
    finally:
        lp.close()


# ---------------------------------------------------------------- 11.6: a Loop where a map goes

def test_dispatcher_accepts_a_loop_as_map(loop):
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        echo = Echo(a, map=loop)
        legacy = asyncore.dispatcher_with_send(c, map=loop)
        assert loop.map[echo._fileno] is echo and echo._map is loop.map
        assert loop.map[legacy._fileno] is legacy
        assert reactor.get_loop(loop) is loop
        b.send(b"hi")
        b.setblocking(False)
        got = bytearray()
        run_until(loop, lambda: recv_some(b, got) or got == b"hi")
        netloop.loop(map=loop, count=1, timeout=0)
        asyncore.poll(0, map=loop)
        legacy.del_channel(map=loop)
        assert legacy._fileno is None and c.fileno() not in loop.map
        asyncore.close_all(map=loop)
        assert not loop.map
    finally:
        for s in (b, c, d):
            s.close()


@pytest.mark.parametrize("bad", [42, "socket_map", [1, 2]])
def test_bad_map_fails_with_what_to_pass(bad):
    with pytest.raises(TypeError) as info:
        netloop.Dispatcher(map=bad)
    assert "netloop.Loop" in str(info.value) and "dict" in str(info.value)
    with pytest.raises(TypeError):
        netloop.loop(map=bad, count=1)
    with pytest.raises(TypeError):
        netloop.Loop(bad)


def test_unknown_poller_fails_when_the_loop_is_made():
    with pytest.raises(ValueError) as info:
        netloop.Loop(poller="epol")
    message = str(info.value)
    assert "epol" in message
    for name in netloop.available_pollers():
        assert name in message
    lp = netloop.Loop()
    try:
        with pytest.raises(ValueError):
            lp.set_poller("nope")
        a, b = socket.socketpair()
        try:
            Echo(a, map=lp.map)
            with pytest.raises(ValueError):
                netloop.loop(map=lp.map, count=1, poller="nope")
        finally:
            for obj in list(lp.map.values()):
                obj.close()
            b.close()
    finally:
        lp.close()



def test_release_and_set_poller_refused_between_passes(poller_name):
    """A run is running between its passes too: another thread cannot pull the poller away."""
    lp, poller = counting_loop(poller_name)
    started = threading.Event()
    lp.call_soon(started.set)
    runner = threading.Thread(target=lp.run_forever)
    runner.start()
    try:
        assert started.wait(5)
        with pytest.raises(RuntimeError):
            lp.release()
        with pytest.raises(RuntimeError):
            lp.set_poller("select")
    finally:
        lp.stop()
        runner.join(5)
        lp.close()
    assert not runner.is_alive()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("how", ["run_once", "run", "asyncore.loop", "asyncore.poll2"])
def test_a_negative_timeout_polls_without_blocking(poller_name, how):
    # poll(2)/epoll take a negative timeout as "wait for ever": the loop's entry points make it
    # 0 (once per run, not in each pass). A channel that never becomes ready is registered, so
    # each pass really polls; nothing else would end a blocked poll (the test's timeout would).
    a, b = socket.socketpair()
    lp = netloop.Loop(poller=poller_name)
    try:
        d = netloop.BufferedDispatcher(a, map=lp.map)  # (watched for reading only)
        if how == "run_once":
            lp.run_once(-1)
        elif how == "run":
            lp.run(timeout=-5, count=2)
        elif how == "asyncore.loop":
            asyncore.loop(timeout=-1, map=lp.map, count=2)
        else:
            asyncore.poll2(-1, map=lp.map)
        assert d.connected and a.fileno() in lp.map
    finally:
        lp.map.clear()
        lp.close()
        a.close()
        b.close()


# ------------------------------------------------- passes run inside _dispatch (run_forever, loop)
# A run that only stop() or an empty map ends polls and dispatches again inside _dispatch for
# as long as no pass needs more; these check that it leaves that inner loop whenever it must.

class StopGuard:
    """Stops ``lp`` from another thread after ``seconds`` (a run that hangs fails at once,
    and the guard uses no timer, which would itself end the inner loop)."""

    def __init__(self, lp: netloop.Loop, seconds: float = 5.0) -> None:
        self.fired = False

        def fire() -> None:
            self.fired = True
            lp.stop()

        self.timer = threading.Timer(seconds, fire)

    def __enter__(self) -> "StopGuard":
        self.timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.timer.cancel()
        self.timer.join()


class Reader(netloop.Dispatcher):
    """Calls ``on_read(self, data)`` for each read; closes when the peer is gone."""

    def __init__(self, sock: socket.socket, map: Any, on_read: Any) -> None:
        super().__init__(sock, map=map)
        self.on_read = on_read

    def handle_read(self) -> None:
        data = self.recv(4096)
        if data:
            self.on_read(self, data)

    def handle_close(self) -> None:
        self.close()


def test_polls_after_a_cancelled_timer_wait_for_the_run_cap(poller_name):
    """A pass cut short for a due timer that a handler then cancels: the passes after it wait
    for the run's cap (None here), not the timer's 0 (which spun the CPU)."""
    lp, poller = counting_loop(poller_name)
    a, b = socket.socketpair()
    seen: List[bytes] = []
    try:
        timer = lp.call_later(0, lambda: seen.append(b"timer"))

        def on_read(ch: Any, data: bytes) -> None:
            seen.append(data)
            if data == b"1":
                timer.cancel()
                b.send(b"2")
            else:
                lp.stop()

        Reader(a, lp.map, on_read)
        b.send(b"1")
        with StopGuard(lp) as guard:
            lp.run_forever()
        assert not guard.fired
        assert seen == [b"1", b"2"]
        assert poller.timeouts[0] == 0  # the timer was due
        assert poller.timeouts[1:] and all(t is None for t in poller.timeouts[1:]), \
            poller.timeouts
    finally:
        shut(lp, b)


def test_loop_returns_when_a_handler_closes_the_last_channel(poller_name):
    lp, poller = counting_loop(poller_name)
    a, b = socket.socketpair()
    try:
        reads: List[bytes] = []

        def on_read(ch: Any, data: bytes) -> None:
            reads.append(data)
            if len(reads) == 2:
                ch.close()
            else:
                b.send(b"again")

        Reader(a, lp.map, on_read)
        b.send(b"first")
        netloop.loop(map=lp.map, timeout=None)  # blocked for ever if the empty map went unseen
        assert reads == [b"first", b"again"] and not lp.map
    finally:
        shut(lp, b)


def test_channel_put_in_the_map_by_hand_during_a_pass_is_served(poller_name):
    """A handler puts a channel in the map with ``map[fd] = obj`` (no add_channel): the next
    pass registers it and delivers its event."""
    lp, poller = counting_loop(poller_name)
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    got: List[bytes] = []
    try:
        def on_second(ch: Any, data: bytes) -> None:
            got.append(data)
            lp.stop()

        def on_first(ch: Any, data: bytes) -> None:
            got.append(data)
            second = Reader(c, {}, on_second)  # in another map: then moved here by hand
            del second._map[c.fileno()]
            second._map = lp.map
            lp.map[c.fileno()] = second
            d.send(b"second")

        Reader(a, lp.map, on_first)
        b.send(b"first")
        with StopGuard(lp) as guard:
            lp.run_forever()
        assert got == [b"first", b"second"] and not guard.fired
    finally:
        shut(lp, b, d)


def test_calls_and_timers_from_a_handler_run_between_passes(poller_name):
    """call_soon() from a handler runs before the next poll; call_later() from a handler fires
    though the run has no cap (timeout None)."""
    lp, poller = counting_loop(poller_name)
    a, b = socket.socketpair()
    events: List[Any] = []
    try:
        def soon() -> None:
            events.append(("soon", len(poller.timeouts)))
            lp.call_later(0.01, lambda: (events.append("timer"), lp.stop()))

        def on_read(ch: Any, data: bytes) -> None:
            events.append(("read", len(poller.timeouts)))
            lp.call_soon(soon)

        Reader(a, lp.map, on_read)
        b.send(b"x")
        with StopGuard(lp) as guard:
            lp.run_forever()
        assert not guard.fired
        assert events[:2] == [("read", 1), ("soon", 1)]  # no poll between the two
        assert events[2:] == ["timer"]
    finally:
        shut(lp, b)


# Each test below makes its second read come in a pass that polls again (the first pass,
# after set-up, always does its end-of-pass work): the work that read's handler makes must be
# seen there (Loop._pass_work). Each fails with the setter it checks removed.

@pytest.mark.parametrize("how", ["call_soon", "call_later", "call_every", "reset"])
def test_work_a_handler_makes_in_a_later_pass_is_done(poller_name, how):
    lp, poller = counting_loop(poller_name)
    a, b = socket.socketpair()
    done: List[str] = []
    spare = lp.call_later(3600, done.append, "never")  # for "reset", re-armed below
    spare.cancel()
    try:
        def finish() -> None:
            done.append(how)
            lp.stop()

        def on_read(ch: Any, data: bytes) -> None:
            if data == b"1":
                b.send(b"2")  # an event for the next poll, and no work for this pass
            elif how == "call_soon":
                lp.call_soon(finish)
            elif how == "call_later":
                lp.call_later(0.001, finish)
            elif how == "call_every":
                lp.call_every(0.001, finish).cancel()
                lp.call_every(0.002, finish)
            else:
                spare.callback, spare.args = finish, ()
                spare.reset(0.001)

        Reader(a, lp.map, on_read)
        b.send(b"1")
        with StopGuard(lp) as guard:
            lp.run_forever()
        assert not guard.fired and done[:1] == [how]
    finally:
        shut(lp, b)


def test_call_from_another_thread_reaches_a_loop_polling_again(poller_name):
    """The other thread's call lands (most likely) while the loop waits in the poll after a
    pass that had nothing to do: its wake-up must end that wait with a pass that runs it."""
    lp, poller = counting_loop(poller_name)
    a, b = socket.socketpair()
    read = threading.Event()
    done: List[bool] = []

    def finish() -> None:
        done.append(True)
        lp.stop()

    def other() -> None:
        if read.wait(5):
            lp.call_soon_threadsafe(finish)

    t = threading.Thread(target=other, daemon=True)
    try:
        Reader(a, lp.map, lambda ch, data: read.set())
        t.start()
        b.send(b"1")
        with StopGuard(lp) as guard:
            lp.run_forever()
        t.join()
        assert not guard.fired and done == [True]
    finally:
        shut(lp, b)


def test_asked_channels_are_asked_after_each_pass_with_scan_off(poller_name):
    """scan=False: a channel with predicates of its own is asked again after each pass with
    its events, also in passes that would poll again with nothing else to do. One that stops
    reading must not be given the next data."""
    lp = netloop.Loop(poller=poller_name, scan=False)
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    got: List[bytes] = []

    class Full(Reader):
        full = False

        def readable(self) -> bool:
            return not self.full

        def writable(self) -> bool:
            return False

    def on_read(ch: Any, data: bytes) -> None:
        got.append(data)
        if data == b"1":
            b.send(b"2")
        else:
            ch.full = True  # asked after this pass: no more reads
            b.send(b"3")
            d.send(b"x")  # both readable at the next poll; only the stopper is watched

    try:
        Full(a, lp.map, on_read)
        Reader(c, lp.map, lambda ch, data: lp.stop())
        b.send(b"1")
        with StopGuard(lp) as guard:
            lp.run_forever()
        assert not guard.fired and got == [b"1", b"2"]
    finally:
        shut(lp, b, d)


def test_descriptor_closed_and_reused_in_a_later_pass_is_served_after_it(poller_name):
    """A handler closes its channel and a new channel takes the same number in that pass. The
    number's events are ignored for the rest of that pass only (they were the old channel's):
    the new channel's data is read after it."""
    lp, poller = counting_loop(poller_name)
    a, b = socket.socketpair()
    got: List[bytes] = []
    held: List[socket.socket] = []
    reused: List[bool] = []

    def on_new(ch: Any, data: bytes) -> None:
        got.append(data)
        lp.stop()

    def on_read(ch: Any, data: bytes) -> None:
        if data == b"1":
            b.send(b"2")
            return
        fd = ch._fileno
        ch.close()
        x = socket_numbered(fd, held)  # the new channel takes the number just closed
        reused.append(x.fileno() == fd)
        Reader(x, lp.map, on_new)
        held[-1].send(b"new")

    try:
        Reader(a, lp.map, on_read)
        b.send(b"1")
        with StopGuard(lp) as guard:
            lp.run_forever()
        assert reused == [True]
        assert not guard.fired and got == [b"new"]
    finally:
        shut(lp, b, *held)


class Newcomer(Reader):
    calls: List[str]

    def handle_read(self) -> None:
        self.calls.append("handle_read")
        super().handle_read()


def test_a_nested_loop_leaves_the_outer_passes_guarding_reused_numbers(poller_name):
    """Legacy code may run loop() from a handler. After it returns, the outer run's later
    passes still know which numbers their handlers closed: a channel closed by another's
    handler, its number reused at once, does not get the closed one's event of that pass."""
    lp, poller = counting_loop(poller_name)
    n, n_peer = socket.socketpair()
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    spares: List[socket.socket] = []
    stale: List[str] = []
    channels: dict = {}
    try:
        def nest(ch: Any, data: bytes) -> None:
            netloop.loop(map=lp.map, timeout=0, count=1)  # a nested legacy pass
            a_peer.send(b"a")  # both ready for the same outer pass
            b_peer.send(b"b")

        def first(ch: Any, data: bytes) -> None:
            if spares:
                return
            other = channels["b" if ch is channels["a"] else "a"]
            fd = other._fileno
            other.close()
            x = socket_numbered(fd, spares)
            Newcomer(x, lp.map, lambda c, d: None).calls = stale
            lp.call_soon(lp.stop)

        Reader(n, lp.map, nest)
        channels["a"] = Reader(a, lp.map, first)
        channels["b"] = Reader(b, lp.map, first)
        n_peer.send(b"n")
        with StopGuard(lp) as guard:
            lp.run_forever()
        assert not guard.fired and spares
        newcomer = lp.map.get(channels["a"]._fileno if channels["a"]._fileno is not None
                              else channels["b"]._fileno)
        assert stale == [] and newcomer is not None and newcomer.connected
    finally:
        shut(lp, n_peer, a_peer, b_peer, *spares)


class QuietReader(Reader, netloop.BufferedDispatcher):
    """Reader, watching for writability only while output is queued: its read events are
    reads alone, which the loop delivers straight to handle_read()."""


class Recording(QuietReader):
    """Records every handle_read() call with what it read (b'' for a read that found none)."""
    log: List[Any]
    phase: List[str]

    def handle_read(self) -> None:
        self.log.append((self.phase[0], self.recv(4096)))


def _reuse_in_one_pass(lp: netloop.Loop, spares: List[socket.socket], then: Any) -> None:
    """Two readers of ``lp`` read directly, then both ready in one pass: the first one read
    closes the other, a new socket takes its number (its peer, last in ``spares``, has sent
    it b"for the new one"), and ``then(fd, sock)`` runs, still in that handler."""
    pairs = [socket.socketpair(), socket.socketpair()]
    spares.extend(peer for _, peer in pairs)
    readers: List[Any] = []

    def first(ch: Any, data: bytes) -> None:
        if len(spares) > 2 or data != b"go":
            return
        other = readers[1] if ch is readers[0] else readers[0]
        fd = other._fileno
        other.close()
        x = socket_numbered(fd, spares)
        spares[-1].send(b"for the new one")
        then(fd, x)

    readers.extend(QuietReader(sock, lp.map, first) for sock, _ in pairs)
    for _, peer in pairs:
        peer.send(b"w")
    run_until(lp, lambda: all(r._nl_direct for r in readers))
    for _, peer in pairs:
        peer.send(b"go")  # both ready for the same pass
    run_until(lp, lambda: len(spares) > 2)


def test_a_nested_loop_on_the_same_map_keeps_the_outer_guard(poller_name):
    """A handler closes another channel, a new one takes its number, and the handler runs
    loop() on the same map (legacy code waiting synchronously). The nested pass polls afresh
    and serves the new channel's own data; the rest of the outer pass still skips the closed
    channel's event of that pass (it used to reach the new channel, whose read found nothing:
    a drop-in channel's handle_error() closed it)."""
    lp, poller = counting_loop(poller_name)
    spares: List[socket.socket] = []
    log: List[Any] = []
    phase = ["outer"]
    made: List[Any] = []
    try:
        def nest(fd: int, sock: socket.socket) -> None:
            made.append(QuietReader(sock, lp.map, lambda c, d: log.append((phase[0], d))))
            phase[0] = "nested"
            netloop.loop(map=lp.map, timeout=1, count=1)
            phase[0] = "rest of the outer pass"

        _reuse_in_one_pass(lp, spares, nest)
        lp.run_once(0)
        new = made[0]
        assert log == [("nested", b"for the new one")]
        assert new.connected and lp.map.get(new._fileno) is new
        # The nested run served it directly; after it the flag was cleared (the outer guard
        # held its number), and the next read sets it again.
        spares[-1].send(b"later")
        run_until(lp, lambda: len(log) == 2)
        assert log[1] == ("rest of the outer pass", b"later")
    finally:
        shut(lp, *spares)


def test_a_channel_in_two_maps_is_read_directly_only_by_the_loop_that_saw_it(poller_name):
    """A new channel under a number closed earlier in loop A's pass is also put in loop B's
    map, and B reads it from A's handler. B's direct flag does not hold in A: the rest of A's
    pass still skips the closed channel's event for that number."""
    lp_a, _ = counting_loop(poller_name)
    lp_b, _ = counting_loop(poller_name)
    spares: List[socket.socket] = []
    log: List[Any] = []
    phase = ["A"]
    made: List[Any] = []
    try:
        def also_in_b(fd: int, sock: socket.socket) -> None:
            new = Recording(sock, lp_a.map, None)
            new.log, new.phase = log, phase
            made.append(new)
            lp_b.map[fd] = new
            phase[0] = "B"
            lp_b.run_once(1)
            phase[0] = "rest of A's pass"

        _reuse_in_one_pass(lp_a, spares, also_in_b)
        new = made[0]
        # One read, B's: A's stale event would have called handle_read() for nothing.
        assert log == [("B", b"for the new one")] and new._nl_direct is lp_b
        assert new.connected and lp_a.map.get(new._fileno) is new
    finally:
        lp_b.map.clear()
        lp_b.close()
        shut(lp_a, *spares)


def test_a_number_closed_inside_a_nested_loop_is_guarded_in_the_outer_pass(poller_name):
    """A handler runs loop() on the same map; in that nested pass another channel's handler
    closes a channel that also has an event in the outer pass, and a new channel takes its
    number. The rest of the outer pass skips that event: the nested pass's guard goes into the
    outer one's when it ends."""
    lp, poller = counting_loop(poller_name)
    pairs = [socket.socketpair() for _ in range(3)]
    spares: List[socket.socket] = [peer for _, peer in pairs]
    log: List[Any] = []
    phase = ["outer"]
    readers: List[Any] = []
    try:
        def trigger(ch: Any, data: bytes) -> None:  # runs in the nested pass
            victim = readers[1] if phase[1] is readers[0] else readers[0]
            fd = victim._fileno
            victim.close()
            new = Recording(socket_numbered(fd, spares), lp.map, None)
            new.log, new.phase = log, phase

        def first(ch: Any, data: bytes) -> None:
            if data != b"go" or len(phase) > 1:
                return
            phase.append(ch)
            pairs[2][1].send(b"t")
            phase[0] = "nested"
            netloop.loop(map=lp.map, timeout=1, count=1)
            phase[0] = "rest of the outer pass"

        readers.extend(QuietReader(sock, lp.map, first) for sock, _ in pairs[:2])
        QuietReader(pairs[2][0], lp.map, trigger)
        for _, peer in pairs[:2]:
            peer.send(b"w")
        run_until(lp, lambda: all(r._nl_direct for r in readers))
        for _, peer in pairs[:2]:
            peer.send(b"go")  # both ready for the same outer pass
        run_until(lp, lambda: phase[0] == "rest of the outer pass")
        lp.run_once(0)
        assert log == []  # the new channel has nothing to read: any call was the stale event
    finally:
        shut(lp, *spares)
