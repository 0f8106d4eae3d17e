"""A long run with a timeout (asyncore's ``loop(timeout=30.0)``) of a map that holds a listener
bounds its waits with one periodic timer (Linux timerfd: the os module's on 3.13+, the C
library's through ctypes before) instead of a timeout on every poll, which arms and cancels a
kernel timer each time the loop sleeps. What the timeout promised still holds: no pass waits
longer than it, so changes made behind the loop's back (a signal handler or another thread
emptying the map) are seen within it. Where the timer cannot be had (other systems, no
descriptor left), and in a run of a map without a listener (a loop per connection), every poll
keeps the timeout, as before."""

from __future__ import annotations

import fcntl
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from typing import Any, List, Optional

import pytest

import netloop
import netloop.asyncore as asyncore
from netloop import _timerfd, driver
from coresupport import CountingPoller

pytestmark = pytest.mark.timeout(20)

TICKS = _timerfd.AVAILABLE
KERNEL_POLLERS = [name for name in netloop.pollers.available() if name != "kqueue"]


class Idle(asyncore.dispatcher):
    """A connected channel that never gets an event (its peer stays silent)."""

    def __init__(self, sock: socket.socket, map: Any) -> None:
        asyncore.dispatcher.__init__(self, sock, map=map)

    def handle_read(self) -> None:
        self.recv(100)

    def writable(self) -> bool:
        return False


class Asked(Idle):
    """Counts the passes: an overriding readable() is asked before every poll. It closes
    itself (and the map's listener, if it has one) after ``stop_after`` passes."""

    def __init__(self, sock: socket.socket, map: Any, stop_after: int) -> None:
        Idle.__init__(self, sock, map)
        self.asked = 0
        self.stop_after = stop_after
        self.seen: List[Any] = []
        self.listeners = [ch for ch in map.values() if ch.accepting]

    def readable(self) -> bool:
        self.asked += 1
        if self.asked >= self.stop_after:
            self.close()
            for ch in self.listeners:
                ch.close()
        return True


def ticks_seen(lp: Any, ch: Any) -> List[int]:
    """The loop's timer descriptor at each pass (-1: none), as ``ch.readable()`` is asked."""
    seen: List[int] = []
    orig = ch.readable

    def readable() -> bool:
        seen.append(lp._tick_fd)
        return orig()

    ch.readable = readable
    return seen


def listen(map: Any) -> Any:
    """A listener in ``map`` that nobody connects to: a server's run."""
    ch = asyncore.dispatcher(map=map)
    ch.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    ch.bind(("127.0.0.1", 0))
    ch.listen(5)
    return ch


def idle_pair(map: Any, cls: Any = Idle, **kw: Any) -> Any:
    a, b = socket.socketpair()
    return cls(a, map, **kw), b


def acquired_loop(poller_name: str) -> Any:
    poller = CountingPoller(poller_name)
    map: dict = {}
    lp = netloop.Loop(map, poller=poller)
    lp.run_once(0)  # takes the kernel objects now: the poller is the one recorded
    return lp, map, poller


def open_fds() -> set:
    return {fd for fd in os.listdir("/proc/self/fd") if os.path.exists("/proc/self/fd/" + fd)}


@pytest.mark.parametrize("listener", [True, False], ids=["server", "loop-per-connection"])
@pytest.mark.parametrize("poller_name", KERNEL_POLLERS)
def test_polls_of_a_long_run_wait_on_the_timer_not_a_timeout(poller_name, listener):
    # A server's run (a listener in the map) waits on the timer. A loop per connection
    # (emailproxy runs one in a thread for each) does not take one, which would cost each of
    # them a descriptor: its polls wait with the timeout, as asyncore's did.
    lp, map, poller = acquired_loop(poller_name)
    if listener:
        listen(map)
    ch, peer = idle_pair(map, Asked, stop_after=4)
    seen = ticks_seen(lp, ch)
    try:
        # Each of the passes waits for the timer (timeout 0.02 s): 4 passes, then the channel
        # closes itself and the run ends.
        poller.timeouts.clear()
        asyncore.loop(timeout=0.02, map=map)
        assert ch.asked >= 4
        if TICKS and listener:
            assert all(fd >= 0 for fd in seen), seen
            assert poller.timeouts and all(t is None for t in poller.timeouts), poller.timeouts
        else:
            assert seen == [-1] * len(seen)
            assert poller.timeouts and all(t == 0.02 for t in poller.timeouts), poller.timeouts
        assert lp._tick_fd == -1 and lp._tick_period is None  # closed when the run ends
    finally:
        peer.close()
        lp.close()


@pytest.mark.parametrize("poller_name", KERNEL_POLLERS)
def test_run_leaves_no_descriptor_and_the_next_run_ticks_again(poller_name):
    lp, map, poller = acquired_loop(poller_name)
    before = open_fds()
    try:
        for _ in range(3):
            listen(map)
            ch, peer = idle_pair(map, Asked, stop_after=3)
            seen = ticks_seen(lp, ch)
            asyncore.loop(timeout=0.01, map=map)
            peer.close()
            assert lp._tick_fd == -1
            assert all(fd >= 0 for fd in seen) if TICKS else seen == [-1] * len(seen), seen
        # The loop gave its kernel objects back when the map emptied; the timer went with it.
        assert open_fds() <= before
    finally:
        lp.close()


@pytest.mark.parametrize("poller_name", KERNEL_POLLERS)
def test_signal_handler_that_empties_the_map_ends_the_run(poller_name):
    # asyncore's promise: loop() sees an empty map after at most its timeout, even when the
    # map was emptied by a signal handler (Python resumes the interrupted poll by itself).
    # SIGUSR1, sent to the main thread (pytest-timeout's own alarm is SIGALRM).
    map: dict = {}
    lp = netloop.Loop(map, poller=poller_name)
    ch, peer = idle_pair(map)
    fired: List[int] = []

    def handler(signum: int, frame: Any) -> None:
        fired.append(signum)
        map.clear()  # a plain dict edit: the loop is not told

    old = signal.signal(signal.SIGUSR1, handler)
    sender = threading.Timer(0.05, signal.pthread_kill,
                             (threading.main_thread().ident, signal.SIGUSR1))
    try:
        sender.start()
        asyncore.loop(timeout=0.2, map=map)  # hangs if no pass ends after the handler
        assert fired == [signal.SIGUSR1]
        assert not map
    finally:
        sender.cancel()
        sender.join(5)
        signal.signal(signal.SIGUSR1, old)
        ch.close()
        peer.close()
        lp.close()


class PollSignal(CountingPoller):
    """Sets ``polling`` as each poll starts."""

    def __init__(self, name: str) -> None:
        CountingPoller.__init__(self, name)
        self.polling = threading.Event()
        if hasattr(self.inner, "find_bad"):  # (select: the loop asks it after an EBADF)
            self.find_bad = self.inner.find_bad

    def poll(self, timeout: Optional[float]) -> Any:
        self.polling.set()
        return CountingPoller.poll(self, timeout)


class Quiet(asyncore.dispatcher_with_send):
    """A connected channel of netloop's own interest (no predicates asked): it waits to read."""

    def handle_read(self) -> None:
        self.recv(100)


@pytest.mark.parametrize("how, timeout", [("map.clear", 0.05), ("close", 30.0)])
@pytest.mark.parametrize("poller_name", KERNEL_POLLERS)
def test_another_thread_that_empties_the_map_ends_the_run(poller_name, how, timeout):
    # While the loop waits in its poll, another thread empties the map: with a plain dict
    # edit, which nothing the loop waits on says (seen within the timeout), or by closing the
    # last channel (ZEO's StorageServer.close(), emailproxy's restart: the loop is woken, and
    # returns at once, long before its 30 s timeout). The poll is one of a run that has been
    # going: its first pass read, and ran a timer that was due, so the pass that polls now
    # had no set-up (the pass a wake-up ended had then polled again, for 30 s, holding the
    # loop's descriptors: emailproxy's loops of its connections).
    poller = PollSignal(poller_name)
    map: dict = {}
    lp = netloop.Loop(map, poller=poller)
    fired = threading.Event()

    def due() -> None:  # run after that pass's reads: the next poll is the one to end
        poller.polling.clear()
        fired.set()

    class Reader(Quiet):
        def handle_read(self) -> None:
            Quiet.handle_read(self)
            lp.call_later(0, due)

    a, peer = socket.socketpair()
    ch = Reader(a, map=map)
    peer.send(b"x")  # read in the run's first pass
    t = threading.Thread(target=asyncore.loop, kwargs={"timeout": timeout, "map": map})
    t.start()
    try:
        assert fired.wait(5) and poller.polling.wait(5)
        if how == "close":
            ch.close()  # from this thread
        else:
            map.clear()  # a plain dict edit: the loop is not told
        t.join(10)
        assert not t.is_alive(), "loop() did not see the emptied map"
    finally:
        if t.is_alive():
            lp.stop()
        t.join(5)
        ch.close()
        peer.close()
        lp.close()


@pytest.mark.parametrize("poller_name", KERNEL_POLLERS)
def test_a_map_emptied_while_its_run_takes_its_kernel_objects_ends_the_run(poller_name):
    # emailproxy makes each connection's channels in its accepting thread, starts a thread
    # whose loop() serves them, and may close them from the accepting thread (its restart)
    # before that loop holds a wake-up pipe to be woken by: the loop found the map empty
    # only after the 30 s of the poll that followed, holding its descriptors meanwhile.
    closed = threading.Event()
    taking = threading.Event()

    class Slow(CountingPoller):
        def register(self, fd: int, mask: int) -> None:
            taking.set()  # the loop takes its kernel objects: its wake-up pipe comes first
            closed.wait(5)
            CountingPoller.register(self, fd, mask)

    map: dict = {}
    lp = netloop.Loop(map, poller=Slow(poller_name))
    a, peer = socket.socketpair()
    ch = Quiet(a, map=map)
    t = threading.Thread(target=asyncore.loop, kwargs={"timeout": 30.0, "map": map})
    t.start()
    try:
        assert taking.wait(5)
        ch.close()  # from this thread, while the loop is not yet told of anything
        closed.set()
        t.join(10)
        assert not t.is_alive(), "loop() did not see the emptied map"
    finally:
        closed.set()
        if t.is_alive():
            lp.stop()
        t.join(5)
        peer.close()
        lp.close()


@pytest.mark.skipif(not TICKS, reason="no timerfd on this system (Linux only)")
@pytest.mark.parametrize("poller_name", KERNEL_POLLERS)
def test_out_of_descriptors_the_run_keeps_its_timeouts(poller_name):
    lp, map, poller = acquired_loop(poller_name)
    listen(map)
    ch, peer = idle_pair(map, Asked, stop_after=4)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = max(int(fd) for fd in open_fds())
    fillers: List[int] = []
    poller.timeouts.clear()
    try:
        # No free descriptor: the timer cannot be made, the passes wait with the timeout.
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
        with pytest.raises(OSError):
            for _ in range(top + 1):
                fillers.append(os.dup(0))
        asyncore.loop(timeout=0.01, map=map)
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        peer.close()
        lp.close()
    assert ch.asked >= 4
    assert poller.timeouts and all(t == 0.01 for t in poller.timeouts), poller.timeouts


@pytest.mark.parametrize("poller_name", KERNEL_POLLERS)
def test_a_nested_legacy_run_waits_with_its_own_timeout(poller_name):
    lp, map, poller = acquired_loop(poller_name)
    inner_timeouts: List[Optional[float]] = []

    class Nester(Asked):
        def readable(self) -> bool:
            if self.asked == 2:
                n = len(poller.timeouts)
                asyncore.loop(timeout=0.01, map=map, count=2)
                inner_timeouts.extend(poller.timeouts[n:])
            return Asked.readable(self)

    listen(map)
    ch, peer = idle_pair(map, Nester, stop_after=5)
    try:
        poller.timeouts.clear()
        asyncore.loop(timeout=0.03, map=map)
        assert inner_timeouts and all(t == 0.01 for t in inner_timeouts), inner_timeouts
        outer = [t for t in poller.timeouts if t != 0.01]
        assert outer and all(t == (None if TICKS else 0.03) for t in outer), poller.timeouts
    finally:
        peer.close()
        lp.close()


@pytest.mark.skipif(not TICKS, reason="no timerfd on this system (Linux only)")
def test_forked_child_closes_its_copy_and_leaves_the_parents_timer():
    map: dict = {}
    lp = netloop.Loop(map, poller="epoll")
    r, w = os.pipe()
    pids: List[int] = []

    class Forker(Asked):
        def readable(self) -> bool:
            if self.asked == 1:
                pid = os.fork()
                if pid == 0:  # the child: the parent's timer is not its own
                    try:
                        ok = lp._tick_fd == -1 and lp._tick_period is not None
                        os.write(w, b"1" if ok else b"0")
                    finally:
                        os._exit(0)
                pids.append(pid)
            return Asked.readable(self)

    listen(map)
    ch, peer = idle_pair(map, Forker, stop_after=5)
    try:
        # The parent goes on waking on its timer after the child closed its copy.
        asyncore.loop(timeout=0.02, map=map)
        _, status = os.waitpid(pids[0], 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.read(r, 1) == b"1"
        assert ch.asked >= 5
    finally:
        os.close(r)
        os.close(w)
        peer.close()
        lp.close()


def test_no_timer_without_timerfd(monkeypatch):
    # Where the os module has no timerfd (before 3.13): the run does not ask for one.
    monkeypatch.setattr(driver, "_NO_TICK", True)
    lp, map, poller = acquired_loop("epoll" if "epoll" in KERNEL_POLLERS else "poll")
    listen(map)
    ch, peer = idle_pair(map, Asked, stop_after=3)
    try:
        poller.timeouts.clear()
        asyncore.loop(timeout=0.01, map=map)
        assert all(t == 0.01 for t in poller.timeouts), poller.timeouts
    finally:
        peer.close()
        lp.close()


@pytest.mark.skipif(not TICKS, reason="no timerfd on this system (Linux only)")
@pytest.mark.parametrize("source", ["os", "libc"])
def test_periodic_timer_expires_repeatedly(source, monkeypatch):
    if source == "libc":
        # The ctypes path of 3.9-3.12, also where the os module has timerfd (3.13+).
        monkeypatch.delattr(os, "timerfd_create", raising=False)
        if _timerfd._libc is None:
            monkeypatch.setattr(_timerfd, "_libc", _timerfd._load_libc())
    elif not hasattr(os, "timerfd_create"):
        pytest.skip("this Python's os module has no timerfd_create (3.13+)")
    fd = _timerfd.periodic(0.01)
    try:
        assert os.get_blocking(fd) is False
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        with pytest.raises(BlockingIOError):
            os.read(fd, 8)  # not expired yet
        for _ in range(3):  # periodic: it expires again after each read
            r, _, _ = select.select([fd], [], [], 5)
            assert r == [fd]
            (count,) = struct.unpack("=Q", os.read(fd, 8))
            assert count >= 1
    finally:
        os.close(fd)


@pytest.mark.skipif(not TICKS, reason="no timerfd on this system (Linux only)")
def test_periodic_timer_rejects_periods_it_cannot_hold():
    for bad in (0, -1.0, 2.0 ** 31):
        with pytest.raises(ValueError):
            _timerfd.periodic(bad)


@pytest.mark.parametrize("poller_name", KERNEL_POLLERS)
def test_serve_forever_waits_on_the_timer_and_still_runs_service_actions(poller_name):
    # socketserver's serve_forever(poll_interval): service_actions() after every pass, and no
    # pass longer than poll_interval; here with no request at all, so only the timer (or, without
    # one, the timeout) ends each wait. It hangs if neither does.
    import netloop.socketserver as socketserver

    poller = CountingPoller(poller_name)
    lp = netloop.Loop(poller=poller)

    class Server(socketserver.TCPServer):
        actions = 0
        seen: List[int] = []
        # (A server on a loop passed in also runs service_actions() from a 0.5 s loop timer,
        # whose deadline would time the polls: not wanted here.)
        service_interval = None

        def service_actions(self) -> None:
            self.actions += 1
            self.seen.append(lp._tick_fd)
            if self.actions >= 4:
                self.shutdown()  # on the loop's thread: serve_forever() returns after this pass

    server = Server(("127.0.0.1", 0), socketserver.BaseRequestHandler, loop=lp)
    try:
        server.serve_forever(poll_interval=0.02)
        assert server.actions == 4
        if TICKS:
            assert all(fd >= 0 for fd in server.seen), server.seen
            assert poller.timeouts and all(t is None for t in poller.timeouts), poller.timeouts
        else:
            assert all(t == 0.02 for t in poller.timeouts), poller.timeouts
        assert lp._tick_fd == -1 and lp._tick_period is None
    finally:
        server.server_close()
        lp.close()


def test_no_module_is_imported_when_a_run_starts():
    # A signal that arrives while the loop starts (systemd's SIGTERM just after "listening")
    # must not land in an import: Python ignores a KeyboardInterrupt raised in importlib's
    # callbacks, and the server then ran on. The timer's ctypes is imported with netloop.
    code = """if 1:
        import socket, sys
        import netloop.asyncore as asyncore
        import netloop.socketserver as socketserver

        class Once(asyncore.dispatcher):
            def readable(self):
                self.close()
                return True
            def writable(self):
                return False

        a, b = socket.socketpair()
        Once(a)
        before = set(sys.modules)
        asyncore.loop(timeout=0.05)

        class Server(socketserver.TCPServer):
            service_interval = None
            def service_actions(self):
                self.shutdown()

        server = Server(("127.0.0.1", 0), socketserver.BaseRequestHandler)
        server.serve_forever(poll_interval=0.05)
        server.server_close()
        b.close()
        print(sorted(set(sys.modules) - before))
    """
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "src"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
