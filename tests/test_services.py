"""Services of the loop: thread-safe wake-up, signals, embedding, fileno(), fork."""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
import warnings
from typing import Any, List

import pytest

import netloop
from coresupport import Echo, recv_some, wait_for
from support import run_until


def _in_thread(target: Any) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def test_stop_from_thread_wakes_blocked_loop(loop):
    stamps: dict = {}

    def stopper() -> None:
        wait_for(lambda: loop.running)
        time.sleep(0.1)  # give the loop time to block (the result is right either way)
        stamps["stop"] = time.perf_counter()
        loop.stop()

    t = _in_thread(stopper)
    loop.run_forever()  # timeout=None: only the wake-up can end the wait
    latency = time.perf_counter() - stamps["stop"]
    t.join(5)
    print("\n%s: stop() from another thread -> run_forever() returned in %.1f us"
          % (loop.poller.name, latency * 1e6))
    assert latency < 2.0


def test_call_soon_threadsafe_wakes_blocked_loop(loop):
    done: List[float] = []
    stamps: dict = {}

    def caller() -> None:
        wait_for(lambda: loop.running)
        time.sleep(0.1)
        stamps["call"] = time.perf_counter()
        loop.call_soon_threadsafe(lambda: (done.append(time.perf_counter()), loop.stop()))

    t = _in_thread(caller)
    start = time.monotonic()
    loop.run_forever()
    t.join(5)
    assert done and time.monotonic() - start < 5
    latency = done[0] - stamps["call"]
    print("\n%s: call_soon_threadsafe -> callback ran in %.1f us"
          % (loop.poller.name, latency * 1e6))
    assert latency < 2.0


def test_stop_before_run_returns_after_one_pass(loop):
    passes: List[int] = []
    loop.call_every(0.001, passes.append, 1)
    loop.stop()
    loop.run_forever(timeout=0)
    assert len(passes) <= 1
    loop.call_soon(loop.stop)
    loop.run_forever()


def _spin(lp: netloop.Loop, seconds: float) -> None:
    """Take ``seconds`` of the loop's clock, as a slow callback does (no sleep: it orders
    nothing, it only makes time pass)."""
    end = lp.time() + seconds
    while lp.time() < end:
        pass


def test_one_pass_runs_due_timers_once(loop):
    # A repeating timer already due when a one-pass run starts, whose callback outlasts its
    # interval: a pass runs the due timers once, so it fires once, on every poller. (The
    # asyncio host once ran them in its timer and service callbacks and again when the
    # driven poll returned: two firings when the first took longer than the interval.)
    fired: List[float] = []

    def slow() -> None:
        fired.append(loop.time())
        _spin(loop, 0.0015)

    handle = loop.call_every(0.001, slow)
    _spin(loop, handle.when - loop.time() + 0.0001)
    loop.stop()
    loop.run_forever(timeout=0)
    assert len(fired) == 1
    handle.cancel()


def test_stop_from_handler_ends_run_after_pass(loop):
    a, b = socket.socketpair()
    try:
        class Stopper(netloop.Dispatcher):
            def handle_read(self) -> None:
                self.recv(10)
                loop.stop()

            def handle_write(self) -> None:
                pass

        d = Stopper(a, map=loop.map)
        b.send(b"x")
        loop.run(timeout=5)
        assert d.connected  # the channel is still there: stop() ended run()
    finally:
        b.close()


@pytest.mark.parametrize("signame", ["SIGHUP", "SIGTERM"])
def test_signal_handler_runs_on_loop(loop, signame):
    signum = getattr(signal, signame)
    if loop.poller.name == "uvloop":
        pytest.skip("uvloop watches signals only while it runs; here they come between passes "
                    "(tests/test_aio.py checks signals on a running uvloop)")
    before = signal.getsignal(signum)
    got: List[Any] = []
    loop.add_signal_handler(signum, lambda *a: got.append((a, threading.get_ident())), "arg")
    try:
        os.kill(os.getpid(), signum)
        run_until(loop, lambda: got)
        assert got == [(("arg",), threading.get_ident())]
        # A signal also wakes a loop blocked without a timeout.
        got.clear()
        loop.call_later(0, os.kill, os.getpid(), signum)
        start = time.monotonic()
        while not got and time.monotonic() - start < 5:
            loop.run_once(None)
        assert got
    finally:
        assert loop.remove_signal_handler(signum)
    assert not loop.remove_signal_handler(signum)
    assert signal.getsignal(signum) == signal.SIG_DFL
    if before == signal.SIG_DFL:
        assert signal.set_wakeup_fd(-1) == -1  # the wake-up fd was given back too


def test_signal_handler_only_from_main_thread(loop):
    errors: List[BaseException] = []

    def worker() -> None:
        try:
            loop.add_signal_handler(signal.SIGHUP, print)
        except RuntimeError as e:
            errors.append(e)

    t = _in_thread(worker)
    t.join(5)
    assert errors


def test_epoll_fileno_readable_when_channel_has_data(loop):
    a, b = socket.socketpair()
    try:
        d = Echo(a, map=loop.map)
        if loop.poller.name in ("select", "poll", "asyncio", "uvloop"):  # hosted
            with pytest.raises(ValueError):
                loop.fileno()
            return
        fd = loop.fileno()
        loop.run_once(0)
        assert select.select([fd], [], [], 0)[0] == []
        b.send(b"ping")
        assert select.select([fd], [], [], 5)[0] == [fd]
        loop.run_once(0)
        b.settimeout(5)
        assert b.recv(10) == b"ping"
        assert select.select([fd], [], [], 0)[0] == []
        d.close()
    finally:
        b.close()


def test_embedding_host_loop(loop):
    """A host program runs its own loop and gives netloop a non-blocking pass each turn."""
    a, b = socket.socketpair()
    b.setblocking(False)
    try:
        Echo(a, map=loop.map)
        host_work = 0
        got = bytearray()
        to_send = [b"one", b"two", b"three"]
        deadline = time.monotonic() + 5
        while (to_send or len(got) < 11) and time.monotonic() < deadline:
            host_work += 1  # the host's own work
            if to_send and host_work % 3 == 0:
                b.send(to_send.pop(0))
            delay = loop.run_once(0)
            assert delay is None  # no timers: the host may sleep as it likes
            recv_some(b, got)
        assert got == b"onetwothree"
        assert host_work >= 9
        # run_once tells the host how long it may sleep before the next timer.
        h = loop.call_later(30, print)
        assert 29 < loop.run_once(0) <= 30
        h.cancel()
    finally:
        b.close()


def test_wake_pipe_is_not_in_the_map(loop):
    loop.run_once(0)
    assert loop._wake_fd >= 0
    assert loop._wake_fd not in loop.map and not loop.map
    m: dict = {}
    a, b = socket.socketpair()
    try:
        class CloseOnRead(netloop.Dispatcher):
            def handle_read(self) -> None:
                self.close()

            def handle_write(self) -> None:
                pass

        CloseOnRead(a, map=m)
        b.send(b"x")
        lp = netloop.get_loop(m)
        lp.call_soon_threadsafe(lambda: None)  # the wake-up pipe now has a byte in it
        start = time.monotonic()
        netloop.loop(timeout=5, map=m)  # returns once the only channel closed
        assert time.monotonic() - start < 2
        assert not m
        assert lp._wake_fd not in m
    finally:
        b.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_fork_child_runs_own_pass(loop):
    a, b = socket.socketpair()
    c, d = socket.socketpair()  # the child reports through this one
    try:
        got: List[bytes] = []

        class Reader(netloop.Dispatcher):
            def handle_read(self) -> None:
                got.append(self.recv(100))

            def handle_write(self) -> None:
                pass

        Reader(a, map=loop.map)
        loop.run_once(0)  # the parent's poller exists before the fork
        b.send(b"for the child")
        with warnings.catch_warnings():
            # 3.12+ warns about fork() with threads alive (pytest's may be); this child only
            # runs netloop code and os._exit()s.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                deadline = time.monotonic() + 5
                while not got and time.monotonic() < deadline:
                    loop.run_once(0.05)
                if got == [b"for the child"]:
                    code = 0
                    c.send(b"child ok")
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        d.settimeout(5)
        assert d.recv(100) == b"child ok"
        # The parent's loop is undisturbed: its poller still works on the same channel.
        assert got == []  # the child took the bytes
        b.send(b"for the parent")
        run_until(loop, lambda: got == [b"for the parent"])
        loop.call_soon_threadsafe(loop.stop)
        loop.run_forever()
    finally:
        for s in (b, c, d):
            s.close()
