"""netloop.aio: channel maps served by a running asyncio loop (and uvloop), the embedding
wake-up, and CPython's asynchat/socketserver suites on a hosted loop.

The core suites (dispatcher, buffered, chat, services, files) also run hosted: their ``loop``
fixture has "asyncio" and "uvloop" variants (see conftest.HOSTED_MODULES).
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
from typing import Any, List

import pytest
from support import run_until

import netloop
import netloop.aio
import netloop.asynchat as asynchat
import netloop.asyncore as asyncore
import netloop.socketserver as ss
from netloop import pollers

# The asyncio hosts of tests/conftest.py (not imported from there: benchmarks/tests has a
# conftest module too, and whichever is imported first owns the name).
# "asyncio-each": every channel's descriptor registered with asyncio (attach(nested=False));
# the others watch the loop's own epoll/kqueue through asyncio.
HOSTS = (["asyncio", "asyncio-each", "uvloop"] if importlib.util.find_spec("uvloop")
         else ["asyncio", "asyncio-each"])

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC = os.path.join(ROOT, "src")


def factory(host: str) -> Any:
    if host == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


@pytest.fixture(params=HOSTS)
def host(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def nested(host: str) -> Any:
    return False if host == "asyncio-each" else None


def run(host: str, coro: Any, **kwargs: Any) -> Any:
    return netloop.aio.run(coro, loop_factory=factory(host), nested=nested(host), **kwargs)


# ---------------------------------------------------------------- legacy channels
class Echo(asyncore.dispatcher_with_send):
    def handle_read(self) -> None:
        data = self.recv(8192)
        if data:
            self.send(data)


class Listener(asyncore.dispatcher):
    def __init__(self, map: Any, handler: Any = Echo) -> None:
        asyncore.dispatcher.__init__(self, map=map)
        self.handler = handler
        self.accepted: List[Any] = []
        self.create_socket()
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(16)
        self.port = self.socket.getsockname()[1]

    def handle_accepted(self, sock: Any, addr: Any) -> None:
        self.accepted.append(self.handler(sock, map=self._map))


class LineEcho(asynchat.async_chat):
    def __init__(self, sock: Any, map: Any) -> None:
        asynchat.async_chat.__init__(self, sock, map=map)
        self.set_terminator(b"\n")
        self.parts: List[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self.parts.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.parts)
        self.parts = []
        self.push(line.upper() + b"\n")


def close_map(m: Any) -> None:
    for obj in list(m.values()):
        obj.close()


def test_run_main_serves_dispatchers_and_chat(host):
    m: dict = {}
    echo = Listener(m)
    chat = Listener(m, LineEcho)

    async def main() -> Any:
        r, w = await asyncio.open_connection("127.0.0.1", echo.port)
        w.write(b"ping")
        got = await r.readexactly(4)
        r2, w2 = await asyncio.open_connection("127.0.0.1", chat.port)
        w2.write(b"one\ntw")
        first = await r2.readline()
        w2.write(b"o\n")
        second = await r2.readline()
        lp = netloop.get_loop(m)
        assert lp.poller.name == host.split("-")[0]
        for writer in (w, w2):
            writer.close()
            await writer.wait_closed()
        close_map(m)
        return got, first, second

    assert run(host, main(), map=m) == (b"ping", b"ONE\n", b"TWO\n")
    assert not netloop.get_loop(m)._acquired  # detached: no poller, no wake-up pipe


def test_run_defaults_to_the_global_socket_map(host):
    echo = Listener(None)  # asyncore's socket_map

    async def main() -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", echo.port)
        w.write(b"global")
        data = await r.readexactly(6)
        w.close()
        await w.wait_closed()
        asyncore.close_all()
        return data

    assert run(host, main()) == b"global"


def test_run_forever_until_stop(host):
    m: dict = {}
    lp = netloop.get_loop(m)
    echo = Listener(m)
    seen: List[Any] = []

    def client() -> None:  # a real client in a thread; the loop stops when it is done
        with socket.create_connection(("127.0.0.1", echo.port), timeout=10) as c:
            c.sendall(b"abc")
            seen.append(c.recv(3))
        lp.call_soon_threadsafe(lp.stop)

    lp.call_soon(threading.Thread(target=client).start)
    assert run(host, None, map=m) is None
    assert seen == [b"abc"]
    close_map(m)


def test_run_forever_ends_on_sigterm(host):
    m: dict = {}
    lp = netloop.get_loop(m)
    Listener(m)
    lp.call_later(0.01, os.kill, os.getpid(), signal.SIGTERM)
    before = signal.getsignal(signal.SIGTERM)
    assert run(host, None, map=m) is None
    assert signal.getsignal(signal.SIGTERM) == before
    close_map(m)


class Relay(asyncore.dispatcher):
    """Legacy style: overrides readable()/writable(); its peer fills its buffer."""

    def __init__(self, sock: Any, map: Any) -> None:
        self.buffer = b""
        self.peer: Any = None
        asyncore.dispatcher.__init__(self, sock, map=map)

    def readable(self) -> bool:
        return self.peer is not None

    def writable(self) -> bool:
        return bool(self.buffer)

    def handle_read(self) -> None:
        data = self.recv(8192)
        if data:
            self.peer.buffer += data  # nothing tells the loop: the peer is asked again

    def handle_write(self) -> None:
        sent = self.send(self.buffer)
        self.buffer = self.buffer[sent:]

    def handle_close(self) -> None:
        self.close()


def test_asked_channels_and_channels_made_later(host):
    m: dict = {}
    server = Listener(m, Relay)

    async def main() -> Any:
        r1, w1 = await asyncio.open_connection("127.0.0.1", server.port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
        lp = netloop.get_loop(m)
        while len(server.accepted) < 2:
            await asyncio.sleep(0.001)
        a, b = server.accepted
        a.peer, b.peer = b, a
        lp.call_soon(lambda: None)  # tells the loop to ask the channels again (see aio doc)
        w1.write(b"from one")
        got2 = await r2.readexactly(8)
        w2.write(b"from two")
        got1 = await r1.readexactly(8)
        w1.close()
        await w1.wait_closed()
        while a._fileno is not None:  # closed on EOF, as on netloop's own pollers
            await asyncio.sleep(0.001)
        w2.close()
        await w2.wait_closed()
        poller = lp.poller
        close_map(m)
        return got1, got2, poller

    got1, got2, poller = run(host, main(), map=m)
    assert (got1, got2) == (b"from two", b"from one")
    assert not poller._masks


def test_timers_idle_timeout_and_channel_timers(host):
    m: dict = {}
    events: List[str] = []

    class Idle(Echo):
        def __init__(self, sock: Any, map: Any) -> None:
            Echo.__init__(self, sock, map=map)
            self.call_later(0.01, events.append, "channel timer")
            self.call_later(60, events.append, "cancelled on close")

        def handle_read(self) -> None:
            Echo.handle_read(self)
            # Armed once the byte is echoed, not at accept: a loaded machine may take longer
            # than the timeout between accept and the client's first byte.
            if self._nl_idle is None:
                self.set_idle_timeout(0.05)

        def handle_idle_timeout(self) -> None:
            events.append("idle")
            self.close()

    server = Listener(m, Idle)

    async def main() -> bytes:
        lp = netloop.get_loop(m)
        ticks: List[int] = []
        every = lp.call_every(0.005, ticks.append, 1)
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(b"x")
        assert await r.readexactly(1) == b"x"
        rest = await r.read()  # the idle timeout closes the connection
        every.cancel()
        assert len(ticks) >= 2
        w.close()
        await w.wait_closed()
        assert not lp._timers  # the 60 s timer went with the channel
        close_map(m)
        return rest

    assert run(host, main(), map=m) == b""
    assert events == ["channel timer", "idle"]


def test_calls_from_asyncio_code_and_from_threads(host):
    m: dict = {}

    async def main() -> List[str]:
        lp = netloop.get_loop(m)
        ev = asyncio.get_running_loop()
        got: List[str] = []
        done = ev.create_future()

        def note(what: str) -> None:
            got.append(what)
            if len(got) == 4:
                done.set_result(None)

        lp.call_soon(note, "soon")                       # from a coroutine: runs at once
        handle = lp.call_later(3600, note, "later")
        await asyncio.sleep(0)
        handle.reset(0.001)                              # an earlier deadline, from outside
        lp.call_at(lp.time() + 0.002, note, "at")
        thread = threading.Thread(target=lp.call_soon_threadsafe, args=(note, "thread"))
        thread.start()
        await asyncio.wait_for(done, 10)
        thread.join(10)  # (under load it may still be finishing: the leak check counts it)
        return sorted(got)

    assert run(host, main(), map=m) == ["at", "later", "soon", "thread"]


def test_signal_handler_added_while_attached(host):
    m: dict = {}

    async def main() -> Any:
        lp = netloop.get_loop(m)
        done = asyncio.get_running_loop().create_future()
        lp.add_signal_handler(signal.SIGUSR1, done.set_result, "usr1")
        os.kill(os.getpid(), signal.SIGUSR1)
        result = await asyncio.wait_for(done, 10)
        assert lp.remove_signal_handler(signal.SIGUSR1)
        return result

    assert run(host, main(), map=m) == "usr1"
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_running_it_from_inside_or_twice_is_refused(host):
    m: dict = {}
    Listener(m)

    async def main() -> None:
        lp = netloop.get_loop(m)
        with pytest.raises(RuntimeError, match="attached"):
            lp.run_once(0)
        with pytest.raises(RuntimeError, match="attached"):
            asyncore.loop(map=m, count=1)
        with pytest.raises(RuntimeError, match="attached already"):
            netloop.aio.attach(m)
        close_map(m)

    run(host, main(), map=m)


def test_detach_releases_every_registration(host):
    ev = factory(host)()
    m: dict = {}
    server = Listener(m)
    lp = netloop.get_loop(m)
    native = netloop.Loop()  # a loop with a timer and a signal handler, moved to asyncio
    native.run_once(0)
    native.add_signal_handler(signal.SIGUSR2, lambda: None)
    native.call_later(3600, lambda: None)
    try:
        selector = getattr(ev, "_selector", None)
        before = len(selector.get_map()) if selector is not None else 0
        with netloop.aio.attach(m, event_loop=ev, nested=nested(host)) as handle:
            h2 = netloop.aio.attach(native, event_loop=ev, nested=nested(host))
            assert handle.attached and lp.poller.name == host.split("-")[0]
            assert handle.poller.nested is (host != "asyncio-each")
            c = socket.create_connection(("127.0.0.1", server.port))
            run_until(lp, lambda: len(server.accepted) == 1)  # run_once drives asyncio
            assert set(handle.poller._masks) >= {server._fileno, server.accepted[0]._fileno}
            c.close()
            run_until(lp, lambda: server.accepted[0]._fileno is None)
            h2.detach()
            assert not h2.poller._masks and h2.poller._timer is None
            assert native.poller.name not in HOSTS  # back on its own poller, handler too
            assert signal.SIGUSR2 in native._signal_handlers
        assert not handle.attached
        assert not handle.poller._masks and handle.poller._timer is None
        if selector is not None:
            assert len(selector.get_map()) == before
        handle.detach()  # idempotent
        assert not asyncio.all_tasks(ev)
    finally:
        native.close()
        close_map(m)
        ev.close()
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL


def test_nested_watches_one_descriptor_and_delivers_out_of_band_data(host):
    # Nested (the default here), asyncio watches the loop's own epoll: one registration for
    # all channels, and out-of-band data reaches handle_expt() as on netloop's own loop.
    # One by one, each channel's descriptor is asyncio's, and OOB data has no readiness there.
    ev = factory(host)()
    m: dict = {}
    got: List[bytes] = []

    class Oob(netloop.BufferedDispatcher):
        def handle_expt(self) -> None:
            got.append(self.socket.recv(1, socket.MSG_OOB))

        def handle_read(self) -> None:
            data = self.recv(100)
            if data:
                got.append(data)

    srv = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    srv.close()
    d = Oob(conn, map=m)
    selector = getattr(ev, "_selector", None)
    try:
        with netloop.aio.attach(m, event_loop=ev, nested=nested(host)) as handle:
            lp = handle.loop
            assert handle.poller.nested is (host != "asyncio-each")
            if selector is not None:
                watched = {key.fd for key in selector.get_map().values()}
                assert (d._fileno in watched) is (host == "asyncio-each")
            client.send(b"in band")
            run_until(lp, lambda: got == [b"in band"])
            if host == "asyncio-each":
                return
            client.send(b"!", socket.MSG_OOB)
            run_until(lp, lambda: got == [b"in band", b"!"])
    finally:
        d.close()
        client.close()
        ev.close()


def test_socketserver_on_an_attached_map(host):
    m: dict = {}

    class Upper(ss.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.readline().upper())

    server = ss.ThreadingTCPServer(("127.0.0.1", 0), Upper, map=m)

    async def main() -> List[bytes]:
        replies = []
        for i in range(3):
            r, w = await asyncio.open_connection(*server.server_address)
            w.write(b"line %d\n" % i)
            replies.append(await r.readline())
            w.close()
            await w.wait_closed()
        return replies

    try:
        assert run(host, main(), map=m) == [b"LINE 0\n", b"LINE 1\n", b"LINE 2\n"]
    finally:
        server.server_close()


def test_udp_listener_asks_for_no_write_readiness(poller_name):
    """A UDP socket is always writable: a listener registered for writing spins the loop."""
    lp = netloop.Loop(poller=poller_name)
    server = ss.UDPServer(("127.0.0.1", 0), ss.DatagramRequestHandler, loop=lp)
    try:
        lp.run_once(0)
        assert lp._masks[server.fileno()] & pollers.WRITE == 0
    finally:
        server.server_close()
        lp.close()


# ---------------------------------------------------------------- the embedding path
FILENO_POLLERS = [name for name in pollers.available() if name in ("epoll", "kqueue")]


@pytest.mark.parametrize("poller_name", FILENO_POLLERS)
def test_fileno_wakes_the_host_for_work_scheduled_outside_a_pass(poller_name):
    lp = netloop.Loop(poller=poller_name)
    got: List[str] = []
    with selectors.DefaultSelector() as host:
        host.register(lp.fileno(), selectors.EVENT_READ)
        try:
            assert lp.run_once(0) is None
            assert host.select(0) == []
            handle = lp.call_later(3600, got.append, "timer")
            assert host.select(5), "a new timer must wake the host"
            assert 3500 < lp.run_once(0) <= 3600  # the host learns the new delay
            assert host.select(0) == []
            handle.reset(0)  # an earlier deadline, from the host's code
            assert host.select(5)
            lp.run_once(0)
            assert got == ["timer"]
            lp.call_soon(got.append, "soon")
            assert host.select(5)
            assert lp.run_once(0) is None and got == ["timer", "soon"]
            lp.stop()
            assert host.select(5)
            lp.run_once(0)
        finally:
            lp.close()


# ---------------------------------------------------------------- the example
def test_migration_example_serves_real_clients():
    env = dict(os.environ, PYTHONPATH=SRC)
    script = os.path.join(ROOT, "examples", "asyncio_migration.py")
    proc = subprocess.Popen([sys.executable, script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        ports = json.loads(proc.stdout.readline())
        chat = socket.create_connection(("127.0.0.1", ports["chat"]), timeout=10)
        watch = socket.create_connection(("127.0.0.1", ports["watch"]), timeout=10)
        chat_file = chat.makefile("rb")
        watch_file = watch.makefile("rb")
        assert watch_file.readline() == b"watching\n"
        chat.sendall(b"hello from the legacy side\n")
        assert chat_file.readline() == b"<chat> hello from the legacy side\n"
        # the async_chat handler scheduled a coroutine, which told the asyncio client
        assert watch_file.readline() == b"chat: hello from the legacy side\n"
        watch.sendall(b"hello from asyncio\n")
        # a coroutine pushed it through the legacy channel
        assert chat_file.readline() == b"<asyncio> hello from asyncio\n"
        conn = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=10)
        conn.request("GET", "/stats")
        reply = conn.getresponse()
        assert reply.status == 200
        assert json.loads(reply.read()) == {"chat_lines": 1, "watch_lines": 1,
                                            "chat_clients": 1, "watchers": 1}
        conn.close()
        for f in (chat_file, watch_file, chat, watch):
            f.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ---------------------------------------------------------------- CPython's suites, hosted
def _hosted_env(host: str) -> dict:
    if host == "asyncio-each":
        pytest.skip("NETLOOP_POLLER=asyncio watches the loop's own epoll/kqueue; the suites "
                    "ran on per-descriptor registrations before nesting was the default")
    env = dict(os.environ, NETLOOP_POLLER=host)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.timeout(300)
def test_cpython_test_asynchat_hosted(host):
    if sys.version_info < (3, 10):
        pytest.skip("test.support of Python < 3.10 lacks what test_asynchat imports")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "cpython_suite.py"),
                           "test_asynchat", "--json"], env=_hosted_env(host),
                          capture_output=True, text=True, timeout=280)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    report = json.loads(lines[-1])
    if "skipped" in report and "outcomes" not in report:
        pytest.skip(report["skipped"])
    bad = {name: outcome for name, outcome in report["outcomes"].items() if outcome != "pass"}
    assert not bad, "\n".join(report.get("details", [])) or bad
    assert report["run"] >= 25


@pytest.mark.timeout(300)
def test_cpython_test_socketserver_hosted(host):
    test_file = os.path.join(sysconfig.get_paths()["stdlib"], "test", "test_socketserver.py")
    if not os.path.isfile(test_file):
        pytest.skip("this Python has no test_socketserver.py")
    from test_socketserver_compat import KNOWN_DIFFERENCES
    proc = subprocess.run([sys.executable, os.path.join(HERE, "test_socketserver_compat.py"),
                           "--cpython-suite", test_file], env=_hosted_env(host),
                          capture_output=True, text=True, timeout=280)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    report = json.loads(lines[-1])
    bad = {name.rsplit(".", 1)[-1] for name, outcome in report["outcomes"].items()
           if outcome in ("fail", "error")}
    assert bad <= set(KNOWN_DIFFERENCES), (bad, report.get("details"))
    assert report["passed"] >= report["run"] - report["skipped"] - len(KNOWN_DIFFERENCES)


@pytest.mark.timeout(120)
def test_migration_example_stops_on_sigterm_with_a_watcher_that_stopped_reading():
    # A watcher that never reads: each line's tell_watchers() task waited on its drain(), and
    # at SIGTERM writer.close() waited for its queue to be sent, so wait_closed() (3.12+)
    # never returned and the program never stopped.
    env = dict(os.environ, PYTHONPATH=SRC)
    script = os.path.join(ROOT, "examples", "asyncio_migration.py")
    proc = subprocess.Popen([sys.executable, script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    socks = []
    try:
        assert proc.stdout is not None
        ports = json.loads(proc.stdout.readline())
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        socks.append(stalled)
        stalled.connect(("127.0.0.1", ports["watch"]))
        assert stalled.recv(9) == b"watching\n"  # it has joined the watchers
        chat = socket.create_connection(("127.0.0.1", ports["chat"]), timeout=30)
        socks.append(chat)
        lines = 3000  # 12 MB: more than the kernel's buffers hold for the stalled watcher
        line = b"y" * 4000 + b"\n"
        echoed = [0]

        def drain_chat() -> None:  # the room echoes each line to its sender too
            want = lines * len(b"<chat> " + line)
            while echoed[0] < want:
                data = chat.recv(1 << 16)
                if not data:
                    break
                echoed[0] += len(data)

        reader = threading.Thread(target=drain_chat, daemon=True)
        reader.start()
        for _ in range(lines):
            chat.sendall(line)
        reader.join(60)
        assert echoed[0] == lines * len(b"<chat> " + line)  # every line was handled
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    finally:
        for s in reversed(socks):
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
