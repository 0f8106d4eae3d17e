"""Fault scenarios against servers in their own process (issue 12, items 1, 2, 3 and 7).

A loop that dies in a subprocess is a failed test, not a crashed test run. Each test starts a
server, provokes one fault from outside (a handler that raises, a client that resets before it
is accepted, a flood past the descriptor limit or a connection limit), then checks that the
server is alive, serves a new client, logged the fault, and dropped only what it had to.
"""

from __future__ import annotations

import os
import resource
import socket
import struct
import subprocess
import sys
import time
from typing import Any, List, Optional, Tuple

import pytest

import netloop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")

SERVER = r"""
import logging, os, resource, socket, sys
sys.path.insert(0, SRC)
import netloop

if LOGGING:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="LOG %(levelname)s %(message)s")

accepted = 0


class Echo(netloop.BufferedDispatcher):
    def handle_read(self):
        data = self.recv(65536)
        if not data:
            return
        if data == b"count\n":
            self.send(b"%d\n" % len(lp.map))
            return
        if data.startswith(b"boom"):
            raise RuntimeError("boom in handle_read")
        self.send(data)

    def handle_error(self):
        if SCENARIO in ("handle_error", "close_too"):
            raise RuntimeError("boom in handle_error")
        super().handle_error()

    def handle_close(self):
        if SCENARIO == "handle_close":
            raise RuntimeError("boom in handle_close")
        self.close()

    def close(self):
        if SCENARIO == "close_too":
            raise RuntimeError("boom in close")
        super().close()


class Server(netloop.Dispatcher):
    def handle_accepted(self, sock, addr):
        global accepted
        accepted += 1
        if SCENARIO == "getpeername":
            sock.getpeername()  # legacy servers often ask; a reset client has none
        if SCENARIO == "handle_accepted" and accepted == 1:
            Echo(sock, map=self._map)  # half made: registered, then the handler fails
            raise RuntimeError("boom in handle_accepted")
        Echo(sock, map=self._map)


lp = netloop.Loop(poller=POLLER)
server = Server(map=lp.map)
server.create_socket()
server.set_reuse_addr()
server.bind(("127.0.0.1", 0))
server.listen(64)
if LIMITS:
    server.set_connection_limits(*LIMITS)
print(server.socket.getsockname()[1], flush=True)
sys.stdin.readline()  # the test may queue connections before the loop runs
lp.run_forever()
"""


class Child:
    """A server subprocess: its port, and its stderr once it has been stopped."""

    def __init__(self, args: List[str], preexec: Any = None) -> None:
        env = dict(os.environ, PYTHONPATH=SRC)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, text=True,
                                     preexec_fn=preexec)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the server did not start: %s" % self.stop()
        self.port = int(line.split()[-1].rsplit(":", 1)[-1])

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err

    def cpu_seconds(self) -> float:
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(scenario: str, poller: str, logging: bool = True,
          limits: Optional[Tuple[Optional[int], Optional[int]]] = None) -> Child:
    code = (SERVER.replace("SRC", repr(SRC)).replace("SCENARIO", repr(scenario))
            .replace("POLLER", repr(poller)).replace("LOGGING", repr(logging))
            .replace("LIMITS", repr(limits)))
    return Child([sys.executable, "-c", code])


def roundtrip(port: int, data: bytes = b"ping\n", timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def channels(port: int) -> int:
    """How many channels the server's map holds (the listener and this query included)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"count\n")
        got = b""
        while not got.endswith(b"\n"):
            chunk = c.recv(100)
            assert chunk, "no answer"
            got += chunk
    return int(got)


def settles_at(port: int, expected: int) -> bool:
    """The server's map comes down to ``expected`` channels (closed clients take a pass)."""
    deadline = time.monotonic() + 10
    while True:
        count = channels(port)
        if count == expected or time.monotonic() > deadline:
            return count == expected


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def rst_close(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


POLLERS = netloop.available_pollers()


# ---------------------------------------------------------------- 12.2: handlers that raise
@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("scenario", ["handle_read", "handle_error", "close_too"])
def test_exception_in_a_handler_and_in_handle_error(scenario: str, poller: str) -> None:
    """handle_read raises; then handle_error raises too; then close() as well."""
    child = start(scenario, poller)
    try:
        child.go()
        assert roundtrip(child.port) == b"ping\n"
        with socket.create_connection(("127.0.0.1", child.port), timeout=10) as victim:
            victim.sendall(b"boom\n")
            assert victim.recv(100) == b""  # the server closed that connection
        assert child.alive()
        assert roundtrip(child.port) == b"ping\n"
        assert settles_at(child.port, 2)  # the listener and this query: the victim is gone
    finally:
        err = child.stop()
    assert "boom in handle_read" in err
    if scenario != "handle_read":
        assert "exception in handle_close()/handle_error()" in err, err
        assert "Traceback" in err and "boom in handle_error" in err
    if scenario == "close_too":
        assert "close() failed too" in err and "boom in close" in err


@pytest.mark.parametrize("poller", POLLERS)
def test_exception_in_handle_close(poller: str) -> None:
    child = start("handle_close", poller)
    try:
        child.go()
        with socket.create_connection(("127.0.0.1", child.port), timeout=10) as victim:
            victim.sendall(b"hi\n")
            assert victim.recv(100) == b"hi\n"
            victim.shutdown(socket.SHUT_WR)  # end of input: handle_close() raises
            assert victim.recv(100) == b""
        assert child.alive()
        assert roundtrip(child.port) == b"ping\n"
        assert settles_at(child.port, 2)
    finally:
        err = child.stop()
    assert "exception in handle_close()/handle_error()" in err, err
    assert "boom in handle_close" in err


# ---------------------------------------------------------------- 12.3: accept set-up faults
@pytest.mark.parametrize("poller", POLLERS)
def test_exception_in_handle_accepted_closes_that_connection_only(poller: str) -> None:
    child = start("handle_accepted", poller)
    try:
        child.go()
        with socket.create_connection(("127.0.0.1", child.port), timeout=10) as victim:
            assert victim.recv(100) == b""  # closed: its set-up failed
        assert child.alive()
        assert roundtrip(child.port) == b"ping\n"  # the listener still listens
        assert settles_at(child.port, 2)  # the half-made channel was removed
    finally:
        err = child.stop()
    assert "exception while setting up the connection" in err, err
    assert "boom in handle_accepted" in err


@pytest.mark.parametrize("poller", POLLERS)
def test_client_reset_before_accept_does_not_close_the_listener(poller: str) -> None:
    child = start("getpeername", poller)
    try:
        victims = [socket.create_connection(("127.0.0.1", child.port)) for _ in range(3)]
        for v in victims:
            rst_close(v)  # reset while still in the listener's backlog
        child.go()
        assert roundtrip(child.port) == b"ping\n"
        assert child.alive()
    finally:
        err = child.stop()
    assert "went away while being set up" in err, err


# ---------------------------------------------------------------- 12.7: connection limits
@pytest.mark.parametrize("poller", POLLERS)
def test_connection_limits_refuse_beyond_and_serve_again(poller: str) -> None:
    child = start("limits", poller, limits=(4, 2))
    held: List[socket.socket] = []
    try:
        child.go()
        for _ in range(2):
            c = socket.create_connection(("127.0.0.1", child.port), timeout=10)
            c.sendall(b"hi\n")
            assert c.recv(10) == b"hi\n"
            held.append(c)
        # A third from the same address is refused (accepted and closed at once).
        refused = [socket.create_connection(("127.0.0.1", child.port), timeout=10)
                   for _ in range(3)]
        for r in refused:
            try:
                assert r.recv(10) == b""
            except ConnectionResetError:
                pass
            r.close()
        # From another address (127.0.0.2 is loopback too): room for two more in all.
        for _ in range(2):
            c = socket.socket()
            c.settimeout(10)
            c.bind(("127.0.0.2", 0))
            c.connect(("127.0.0.1", child.port))
            c.sendall(b"hi\n")
            assert c.recv(10) == b"hi\n"
            held.append(c)
        # Four held: a fifth from a third address is refused by the overall limit.
        with socket.socket() as c:
            c.settimeout(10)
            c.bind(("127.0.0.3", 0))
            c.connect(("127.0.0.1", child.port))
            try:
                assert c.recv(10) == b""
            except ConnectionResetError:
                pass
        # One closes: a new one is served again.
        held.pop(0).close()
        deadline = time.monotonic() + 10
        while True:  # until the server has seen that close (the next tries may be refused)
            try:
                got = roundtrip(child.port)
            except ConnectionResetError:
                got = b""
            if got == b"ping\n" or time.monotonic() > deadline:
                break
        assert got == b"ping\n"
        assert child.alive()
    finally:
        for c in held:
            c.close()
        err = child.stop()
    refusals = [line for line in err.splitlines() if "connection limit reached" in line]
    assert len(refusals) == 2, err  # two episodes (per address, then overall): a line each


def test_set_connection_limits_checks_its_arguments() -> None:
    d = netloop.Dispatcher(map={})
    with pytest.raises(ValueError):
        d.set_connection_limits(max_connections=0)
    d.set_connection_limits(max_per_address=3)
    assert (d.max_connections, d.max_per_address) == (None, 3)
    assert d.connection_count == 0


# ---------------------------------------------------------------- 12.1: out of descriptors
LOW_LIMIT = 40


def low_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_LIMIT, hard))


README_SERVER = r"""
import socket, sys
import netloop

class Echo(netloop.BufferedDispatcher):
    def handle_read(self):
        data = self.recv(65536)
        if data:
            self.send(data)

class Server(netloop.Dispatcher):
    def __init__(self, loop):
        super().__init__(map=loop.map)
        self.create_socket(socket.AF_INET)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(128)

    def handle_accepted(self, sock, addr):
        Echo(sock, map=self._map).set_idle_timeout(60)

loop = netloop.Loop(poller=POLLER)
server = Server(loop)
print("listening on", server.socket.getsockname()[1], flush=True)
loop.call_every(10, print, "still serving")
loop.run_forever()
"""

LOGGING_SET_UP = "import logging; logging.basicConfig(level=logging.INFO)\n"


def exhaust(child: Child, count: int) -> List[socket.socket]:
    """Open ``count`` connections (more than the server has descriptors for)."""
    clients = []
    for _ in range(count):
        clients.append(socket.create_connection(("127.0.0.1", child.port), timeout=10))
    return clients


@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("kind", ["cli", "readme", "readme+logging"])
def test_out_of_descriptors_server_lives_and_serves_again(kind: str, poller: str) -> None:
    """`python -m netloop echo` and the README's server, no logging set up (and with)."""
    if kind == "cli":
        args = [sys.executable, "-m", "netloop", "echo", "--backend", poller]
    else:
        code = README_SERVER.replace("POLLER", repr(poller))
        if kind.endswith("+logging"):
            code = LOGGING_SET_UP + code
        args = [sys.executable, "-c", code]
    child = Child(args, preexec=low_nofile)
    clients: List[socket.socket] = []
    try:
        clients = exhaust(child, LOW_LIMIT + 10)
        # Those the server could take are served; it stays alive while the others wait.
        assert any(roundtrip_on(c) for c in clients[:5])
        cpu0 = child.cpu_seconds()
        time.sleep(0.5)  # a measuring window, not an ordering: a spinning server burns it all
        spent = child.cpu_seconds() - cpu0
        assert child.alive()
        assert spent < 0.3, "the starved server spins: %.2fs CPU in 0.5s" % spent
        for c in clients:
            c.close()
        clients = []
        deadline = time.monotonic() + 10
        while True:
            try:
                if roundtrip(child.port, timeout=2) == b"ping\n":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "not serving again"
        assert child.alive()
    finally:
        for c in clients:
            c.close()
        err = child.stop()
    lines = [line for line in err.splitlines() if "accept() failed" in line]
    assert len(lines) == 1, err  # one line for the episode, whatever the logging set-up
    assert "Too many open files" in lines[0]
    assert "Traceback" not in err, err


def roundtrip_on(c: socket.socket) -> bool:
    try:
        c.sendall(b"x")
        return c.recv(1) == b"x"
    except OSError:
        return False


@pytest.mark.parametrize("poller", POLLERS)
def test_out_of_descriptors_sheds_through_the_reserve(poller: str) -> None:
    """With shed_when_exhausted, waiting clients are closed at once, not left hanging."""
    code = (SERVER.replace("SRC", repr(SRC)).replace("SCENARIO", repr("shed"))
            .replace("POLLER", repr(poller)).replace("LOGGING", "True")
            .replace("LIMITS", "None")
            .replace("server.listen(64)", "server.listen(64); server.shed_when_exhausted = True"))
    child = Child([sys.executable, "-c", code], preexec=low_nofile)
    clients: List[socket.socket] = []
    try:
        child.go()
        clients = exhaust(child, LOW_LIMIT + 10)
        # The last ones could not get a descriptor: they are closed, not left waiting.
        last = clients[-1]
        last.settimeout(10)
        try:
            assert last.recv(10) == b""
        except ConnectionResetError:
            pass
        assert child.alive()
        for c in clients:
            c.close()
        clients = []
        deadline = time.monotonic() + 10
        while True:
            try:
                if roundtrip(child.port, timeout=2) == b"ping\n":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "not serving again"
    finally:
        for c in clients:
            c.close()
        err = child.stop()
    assert "shedding pending connections" in err, err


def test_loop_holds_a_reserved_descriptor(loop: netloop.Loop) -> None:
    loop.run_once(0)
    reserve = loop._reserve
    assert reserve >= 0 and os.readlink("/proc/self/fd/%d" % reserve) == os.devnull
    with loop.spare_descriptor() as freed:
        assert freed and loop._reserve == -1
        with pytest.raises(OSError):
            os.fstat(reserve)  # really given back to the process
    assert loop._reserve >= 0
    loop.release()
    assert loop._reserve == -1  # released with the poller (the leak check agrees)


def test_loops_of_a_process_share_one_reserved_descriptor() -> None:
    # One free descriptor is what a process out of them needs: one per loop cost a program
    # that runs a loop per connection, each in its own thread (emailproxy), one per connection.
    from netloop.reactor import _Reserve
    holders = _Reserve.holders
    a, b = netloop.Loop(), netloop.Loop()
    try:
        a.run_once(0)
        b.run_once(0)
        fd = a._reserve
        assert fd >= 0 and b._reserve == fd and os.readlink("/proc/self/fd/%d" % fd) == os.devnull
        with b.spare_descriptor() as freed:
            assert freed and a._reserve == -1  # the process's one: freed for either loop
            with a.spare_descriptor() as freed_again:
                assert not freed_again
        assert a._reserve == b._reserve >= 0
        a.release()
        assert a._reserve == -1 and b._reserve >= 0  # b still holds it
        os.fstat(b._reserve)
        b.release()
        assert _Reserve.holders == holders
        assert (_Reserve.fd >= 0) == (holders > 0)  # closed with its last holder
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(30)
def test_a_loop_per_connection_costs_three_descriptors_at_most() -> None:
    # emailproxy's shape: a thread per connection, each running asyncore.loop() on a map of
    # its own. Each loop holds its poller (epoll: one descriptor) and its wake-up eventfd (a
    # pipe's two before Python 3.10 or off Linux); the reserve is the process's, and no run
    # timer without a listener (5 each before 2026-11-30, 3 before its seventeenth session).
    import threading

    import netloop.asyncore as asyncore

    polling = threading.Barrier(5)

    class Conn(asyncore.dispatcher):
        asked = False

        def readable(self) -> bool:
            if not self.asked:
                self.asked = True
                polling.wait(10)  # every loop is in its run, about to poll
            return True

        def writable(self) -> bool:
            return False

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    pairs = [socket.socketpair() for _ in range(4)]
    before = fds()
    chans = [Conn(a, map={}) for a, _ in pairs]
    threads = [threading.Thread(target=asyncore.loop, kwargs={"map": ch._map, "poller": "epoll"})
               for ch in chans]
    for t in threads:
        t.start()
    try:
        polling.wait(10)
        extra = fds() - before
        # the process's reserve, and per loop three, or two where its wake-up is an eventfd
        assert extra <= 1 + 4 * (2 if EVENTFD else 3), extra
    finally:
        for ch in chans:
            ch.close()  # from this thread: each loop is woken, sees its empty map, returns
        for t in threads:
            t.join(10)
        for a, b in pairs:
            b.close()
    assert not any(t.is_alive() for t in threads)


EVENTFD = sys.platform.startswith("linux") and hasattr(os, "eventfd")


def _fds() -> set:
    return set(os.listdir("/proc/self/fd"))


def _run_in_thread(lp: netloop.Loop) -> Any:
    import threading

    # (no timeout: only a wake-up ends a wait; a daemon: a failed test must not hang the exit)
    t = threading.Thread(target=lp.run_forever, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not (lp.running and lp._acquired) and time.monotonic() < deadline:
        time.sleep(0.001)  # until its run has taken its kernel objects
    assert lp.running and lp._acquired
    return t


@pytest.mark.skipif(not EVENTFD, reason="no eventfd here (Linux, Python 3.10+)")
@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.timeout(30)
def test_a_loop_taken_in_another_thread_is_woken_through_an_eventfd(poller: str) -> None:
    before = _fds()
    lp = netloop.Loop(poller=poller)
    t = _run_in_thread(lp)
    done: List[int] = []
    try:
        waker = lp._waker
        assert waker is not None and waker.rfd == waker.wfd  # one descriptor, not a pipe
        assert "eventfd" in os.readlink("/proc/self/fd/%d" % waker.rfd)
        for n in range(3):  # and again: each wake-up drained the count
            lp.call_soon_threadsafe(done.append, n)
            deadline = time.monotonic() + 10
            while len(done) <= n and time.monotonic() < deadline:
                time.sleep(0.001)
        assert done == [0, 1, 2]
        lp.stop()
        t.join(10)
        assert not t.is_alive()
    finally:
        lp.stop()
        t.join(10)
        lp.close()
    assert _fds() <= before


@pytest.mark.skipif(not EVENTFD, reason="no eventfd here (Linux, Python 3.10+)")
@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.timeout(30)
def test_a_signal_handler_reaches_a_loop_running_in_another_thread(poller: str) -> None:
    # The handler is added from the main thread while the loop polls in its own: its eventfd
    # is swapped for a pipe (signal.set_wakeup_fd writes single bytes), in the middle of a
    # poll that watches the old one (select, poll); the old one is closed with the loop.
    import signal
    import threading

    before = _fds()
    lp = netloop.Loop(poller=poller)
    t = _run_in_thread(lp)
    ran: List[int] = []
    try:
        old = lp._waker
        assert old is not None and not old.signals
        lp.add_signal_handler(signal.SIGUSR1,
                              lambda: (ran.append(threading.get_ident()), lp.stop()))
        assert lp._waker is not old and lp._waker.signals
        os.kill(os.getpid(), signal.SIGUSR1)
        t.join(10)
        assert ran == [t.ident] and not t.is_alive()
    finally:
        lp.remove_signal_handler(signal.SIGUSR1)
        lp.stop()
        t.join(10)
        lp.close()
    assert _fds() <= before



@pytest.mark.parametrize("how", ["release", "set_poller"])
@pytest.mark.timeout(30)
def test_a_signal_handler_outlives_a_release_of_the_kernel_objects(how: str) -> None:
    # signal.set_wakeup_fd() names the wake-up pipe of a loop with a signal handler. A release
    # (release(), set_poller(), asyncore's loop() switching to select when select.select is
    # replaced) closed it, and the loop, taken again (in another thread: an eventfd), was
    # never told of a signal: "OSError: [Errno 9] Bad file descriptor" at each one.
    import signal
    import threading

    before = _fds()
    lp = netloop.Loop()
    ran: List[int] = []
    t: Optional[threading.Thread] = None
    try:
        lp.add_signal_handler(signal.SIGUSR1,
                              lambda: (ran.append(threading.get_ident()), lp.stop()))
        if how == "release":
            lp.release()
        else:
            lp.set_poller("poll" if "poll" in POLLERS else "select")
        t = _run_in_thread(lp)
        os.kill(os.getpid(), signal.SIGUSR1)
        t.join(10)
        assert ran == [t.ident] and not t.is_alive()
    finally:
        lp.remove_signal_handler(signal.SIGUSR1)
        lp.stop()
        if t is not None:
            t.join(10)
        lp.close()
    assert _fds() <= before

# emailproxy's shape at the descriptor limit: a thread that starts asyncore.loop() on a map of
# its own when not one descriptor is free. asyncore's loop needed none and served; this one
# polls with poll() (no epoll instance) and goes without its wake-up object until one is free.
NO_FREE_DESCRIPTOR = r"""
import os, resource, socket, sys, threading, time
sys.path.insert(0, SRC)
import netloop
import netloop.asyncore as asyncore

class Echo(asyncore.dispatcher_with_send):
    def handle_read(self):
        data = self.recv(100)
        if data:
            self.send(data)

def fds():
    return len(os.listdir("/proc/self/fd"))

a, b = socket.socketpair()
before = fds()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
hog = []
try:
    while True:
        hog.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
m = {}
echo = Echo(a, map=m)
failed = []

def run():
    try:
        asyncore.loop(map=m, poller=POLLER)  # asyncore's timeout: 30 s
    except BaseException as err:
        failed.append(repr(err))

t = threading.Thread(target=run)
t.start()
b.settimeout(10)
b.sendall(b"ping")
print("echo", b.recv(10) == b"ping", flush=True)
for fd in hog:
    os.close(fd)
lp = netloop.reactor.get_loop(m)
deadline = time.monotonic() + 10
while lp._waker is None and time.monotonic() < deadline:
    time.sleep(0.01)  # its next pass comes within a second, and takes one
print("waker", lp._waker is not None, flush=True)
started = time.monotonic()
echo.close()  # from this thread: the loop is woken, sees its map empty, returns
t.join(10)
print("returned", not t.is_alive() and time.monotonic() - started < 5, failed, flush=True)
b.close()
a.close()
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print("left", fds() - before + 2, flush=True)  # (a and b were counted in before)
"""


@pytest.mark.parametrize("poller", ["auto", "epoll"] if "epoll" in POLLERS else ["auto"])
@pytest.mark.timeout(60)
def test_a_loop_started_with_no_descriptor_free_serves(poller: str) -> None:
    code = NO_FREE_DESCRIPTOR.replace("SRC", repr(SRC)).replace("POLLER", repr(poller))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=50)
    lines = out.stdout.splitlines()
    assert lines == ["echo True", "waker True", "returned True []", "left 0"], (out.stdout,
                                                                              out.stderr)
    assert "found no descriptor for its poller" in out.stderr  # said once, clearly
    assert "no descriptor for its wake-up object" in out.stderr
    assert "Traceback" not in out.stderr, out.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
@pytest.mark.timeout(30)
def test_a_child_forked_after_a_release_lets_go_of_the_kept_wake_up_pipe() -> None:
    # The released loop keeps its pipe for set_wakeup_fd(); a child forked then must not keep
    # naming the pipe it shares with its parent (its signals would wake the parent's loop).
    import signal

    lp = netloop.Loop()
    try:
        lp.add_signal_handler(signal.SIGUSR1, lp.stop)
        lp.release()
        assert lp._waker is not None and lp._waker.signals
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, and leave without running the parent's cleanup
            try:
                named = signal.set_wakeup_fd(-1)
                os.write(w, b"%d %d" % (named, lp._waker is None))
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            report = f.read()
        os.waitpid(pid, 0)
        assert report == b"-1 1", report
        assert lp._waker is not None  # the parent's is untouched
    finally:
        lp.remove_signal_handler(signal.SIGUSR1)
        lp.close()
