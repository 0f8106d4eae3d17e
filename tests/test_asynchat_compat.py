"""``netloop.asynchat`` as a drop-in: CPython 3.11's own test suite, the module's public names,
and the same calls to ``collect_incoming_data``/``found_terminator`` and the same bytes sent as
the standard library's ``asynchat`` for any input split and any send sizes."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import warnings
from typing import Any, Dict, Iterator, List, Optional
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netloop
import netloop.asynchat as nl_asynchat
import netloop.asyncore as nl_asyncore
from netloop import pollers
from coresupport import recv_some
from support import run_until

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "cpython_suite.py")
SRC = os.path.join(os.path.dirname(HERE), "src")
PY313 = "/root/.pyenv/versions/3.13.0/bin/python"

sys.path.insert(0, HERE)
try:
    from cpython_suite import cpython311_lib
finally:
    sys.path.remove(HERE)


def _load_311(name: str, asyncore: Any = None) -> Any:
    """Python 3.11's module ``name`` executed from its file (its deprecation call silenced:
    on 3.12+ it raises), or None without a 3.11 install."""
    lib = cpython311_lib()
    path = os.path.join(lib, name + ".py") if lib else ""
    if not os.path.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location(name + "_311", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"asyncore": asyncore} if asyncore else {}), \
            mock.patch.object(warnings, "_deprecated", lambda *a, **k: None, create=True), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        spec.loader.exec_module(module)
    return module


def _reference_asynchat() -> Any:
    """The standard library's asynchat where there is one, else 3.11's run from its files."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import asynchat
            import asyncore
        if asyncore is not nl_asyncore and "netloop" not in (asynchat.__file__ or ""):
            return asynchat
    except ImportError:
        pass
    asyncore_311 = _load_311("asyncore")
    return _load_311("asynchat", asyncore_311) if asyncore_311 is not None else None


STDLIB = _reference_asynchat()
needs_stdlib = pytest.mark.skipif(STDLIB is None, reason="no Python 3.11 asynchat to compare with")


# ---------------------------------------------------------------- CPython's own suite
def _interpreters() -> List[str]:
    found = [sys.executable]
    if os.path.exists(PY313) and sys.version_info[:2] != (3, 13):
        found.append(PY313)
    return found


def _run_suite(python: str, poller: Optional[str]) -> Any:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NETLOOP_POLLER", None)
    if poller:
        env["NETLOOP_POLLER"] = poller
    proc = subprocess.run([python, RUNNER, "test_asynchat", "--json"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, "no report from the runner:\n%s\n%s" % (proc.stdout, proc.stderr)
    return json.loads(lines[-1])


def _version(python: str) -> tuple:
    code = "import sys; print(*sys.version_info[:2])"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True)
    return tuple(int(x) for x in out.stdout.split())


@pytest.mark.parametrize("python", _interpreters())
@pytest.mark.parametrize("poller", [None] + pollers.available())
def test_cpython_test_asynchat_passes(python: str, poller: Optional[str]) -> None:
    if _version(python) < (3, 10):
        pytest.skip("test.support of Python < 3.10 lacks what test_asynchat imports")
    report = _run_suite(python, poller)
    if "skipped" in report and "outcomes" not in report:
        pytest.skip(report["skipped"])
    bad = {name: outcome for name, outcome in report["outcomes"].items() if outcome != "pass"}
    assert not bad, "\n".join(report.get("details", [])) or bad
    assert report["run"] >= 25 and report["failures"] == report["errors"] == 0


# ---------------------------------------------------------------- public names
def test_every_public_name_of_311_asynchat() -> None:
    reference = _load_311("asynchat", STDLIB and sys.modules.get("asyncore") or nl_asyncore)
    if reference is None:
        pytest.skip("no Python 3.11 install to compare with")
    public = {name for name in dir(reference) if not name.startswith("_")}
    missing = public - set(dir(nl_asynchat))
    assert not missing
    assert set(nl_asynchat.__all__) == {"async_chat", "simple_producer", "find_prefix_at_end"}
    ref_chat = {name for name in dir(reference.async_chat) if not name.startswith("__")}
    # (connected, accepting, addr: instance attributes, see test_asyncore_compat; on 3.12+
    # the reference's asyncore is netloop's, without them too)
    assert ref_chat - set(dir(nl_asynchat.async_chat)) <= {"accepting", "addr", "connected"}
    attrs = {"ac_in_buffer", "incoming", "producer_fifo", "accepting", "addr", "connected"}
    chat = nl_asynchat.async_chat()
    assert attrs <= set(dir(chat))


def test_facade_classes_and_defaults() -> None:
    chat = nl_asynchat.async_chat
    assert chat.__mro__[1:4] == (netloop.chat.ChatChannel, nl_asyncore.dispatcher,
                                 netloop.Dispatcher)
    assert chat._nl_known
    assert chat.max_buffer is None
    assert (chat.ac_in_buffer_size, chat.ac_out_buffer_size) == (65536, 65536)
    assert (chat.use_encoding, chat.encoding) == (0, "latin-1")
    c = chat()
    assert isinstance(c.producer_fifo, nl_asynchat.deque) and c.incoming == []
    assert c._map is nl_asyncore.socket_map
    assert repr(c).startswith("<asynchat.async_chat at ")
    with pytest.raises(NotImplementedError):
        c.collect_incoming_data(b"x")
    with pytest.raises(NotImplementedError):
        c.found_terminator()
    assert issubclass(nl_asynchat.simple_producer, netloop.chat.SimpleProducer)
    assert nl_asynchat.find_prefix_at_end("qwerty\r", "\r\n") == 1


def test_log_info_prints_like_asyncore(capsys: pytest.CaptureFixture) -> None:
    nl_asynchat.async_chat().log_info("hello")
    assert capsys.readouterr().out == "info: hello\n"


def test_ac_in_buffer_reads_and_sets_pending_input() -> None:
    c = Recorder(nl_asynchat.async_chat)
    c.set_terminator(b"\r\n")
    c.feed(b"abc\r")
    assert c.ac_in_buffer == b"\r" and c.events == [("c", b"abc")]
    c.ac_in_buffer = b"x\r\n"
    assert c.ac_in_buffer == b"x\r\n"
    c.feed(b"y\r\n")
    assert c.events[1:] == [("c", b"x"), ("f",), ("c", b"y"), ("f",)]


def test_no_input_limit_in_the_facade() -> None:
    c = Recorder(nl_asynchat.async_chat)
    c.set_terminator(b"\n")
    line = b"x" * (3 << 20)
    for i in range(0, len(line), 65536):
        c.feed(line[i:i + 65536])
    c.feed(b"\n")
    assert c.events[-1] == ("f",) and sum(len(e[1]) for e in c.events if e[0] == "c") == len(line)


def test_a_limit_can_be_set_on_a_subclass() -> None:
    class Bounded(nl_asynchat.async_chat):
        max_buffer = 8

        def collect_incoming_data(self, data: bytes) -> None:
            self._collect_incoming_data(data)

        def found_terminator(self) -> None:
            pass

    c = Bounded()
    c.connected = True
    closes = []
    c.handle_close = lambda: closes.append(1)  # type: ignore[method-assign]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        c.set_terminator(b"\n")
        c.socket = FakeSocket([b"123456789"], [])
        c.handle_read()
    c.socket = None
    assert closes == [1] and "without a terminator" in out.getvalue()


def test_legacy_subclass_overriding_readable_is_asked() -> None:
    class Legacy(nl_asynchat.async_chat):
        def readable(self) -> bool:
            return False

    assert not Legacy._nl_known


# ---------------------------------------------------------------- same behaviour as asynchat
class FakeSocket:
    """Gives queued chunks to recv(); send() takes at most the next allowance."""

    def __init__(self, chunks: List[bytes], allowances: List[int]) -> None:
        self.chunks = list(chunks)
        self.allowances = list(allowances) or [1 << 30]
        self.sent = bytearray()
        self.i = 0

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0)

    def send(self, data: Any) -> int:
        take = min(len(data), self.allowances[self.i % len(self.allowances)])
        self.i += 1
        if take == 0:
            raise BlockingIOError(11, "would block")
        self.sent += bytes(data[:take])
        return take

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def Recorder(base: type, script: Any = None) -> Any:
    """An instance of a subclass of ``base`` that records its calls; ``script`` maps a frame to
    the terminator to set next (a protocol that changes terminators as it goes)."""

    class R(base):  # type: ignore[misc, valid-type]
        def collect_incoming_data(self, data: bytes) -> None:
            self.events.append(("c", bytes(data)))

        def found_terminator(self) -> None:
            self.events.append(("f",))
            if script is not None:
                nxt = script(len(self.events))
                if nxt is not None:
                    self.set_terminator(nxt)

        def feed(self, data: bytes) -> None:
            self.socket = FakeSocket([data], [])
            self.handle_read()

    r = R(map={})
    r.events = []
    r.connected = True
    return r


terminators = st.one_of(st.sampled_from([b"\n", b"\r\n", b"ab", b"aab", b"abab", None]),
                        st.integers(min_value=0, max_value=9))


@needs_stdlib
@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=120).map(lambda b: bytes(b"ab\r\n"[x % 4] for x in b)),
       cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=25),
       first=terminators, later=st.lists(terminators, max_size=10))
def test_same_calls_as_stdlib_asynchat(stream: bytes, cuts: List[int], first: Any,
                                       later: List[Any]) -> None:
    def script(n: int) -> Any:
        return later[n % len(later)] if later else None

    points = sorted({c for c in cuts if 0 < c < len(stream)})
    chunks = [stream[a:b] for a, b in zip([0] + points, points + [len(stream)])]
    results = []
    for base in (STDLIB.async_chat, nl_asynchat.async_chat):
        r = Recorder(base, script)
        r.set_terminator(first)
        for chunk in chunks:
            if chunk:
                r.feed(chunk)
        results.append((r.events, r.get_terminator(), r.ac_in_buffer))
    assert results[0] == results[1]


entries = st.lists(st.one_of(st.binary(min_size=1, max_size=30),
                             st.tuples(st.just("producer"), st.binary(max_size=30),
                                       st.integers(min_value=1, max_value=8))),
                   max_size=10)


@needs_stdlib
@settings(max_examples=200, deadline=None)
@given(items=entries, allowances=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
       obs=st.integers(min_value=1, max_value=50))
def test_same_bytes_sent_as_stdlib_asynchat(items: List[Any], allowances: List[int],
                                            obs: int) -> None:
    if allowances and not any(allowances):
        allowances.append(1)
    outputs = []
    for module in (STDLIB, nl_asynchat):
        class C(module.async_chat):  # type: ignore[name-defined, misc]
            ac_out_buffer_size = obs
            closed_by_marker = False

            def handle_close(self) -> None:
                self.closed_by_marker = True

        c = C(map={})
        c.socket = FakeSocket([], allowances)
        c.connected = True
        for item in items:
            if isinstance(item, tuple):
                c.push_with_producer(module.simple_producer(item[1], item[2]))
            else:
                c.push(item)
        c.close_when_done()
        for _ in range(10000):
            if c.closed_by_marker or not c.producer_fifo:
                break
            c.handle_write()
        outputs.append((bytes(c.socket.sent), c.closed_by_marker))
        c.socket = None
    assert outputs[0] == outputs[1]
    assert outputs[0][1]


def _send_calls(module: Any) -> List[List[int]]:
    """What an async_chat whose class overrides send() (a throttle's way in, as pyftpdlib's
    ThrottledDTPHandler) hands to it: per push(), push_with_producer() and handle_write()."""
    import socket as _socket

    class C(module.async_chat):  # type: ignore[name-defined, misc]
        ac_out_buffer_size = 1024

        def __init__(self, sock: Any) -> None:
            module.async_chat.__init__(self, sock, map={})
            self.calls: List[int] = []

        def send(self, data: Any) -> int:
            n = module.async_chat.send(self, data)
            self.calls.append(n)
            return n

    a, b = _socket.socketpair()
    try:
        c = C(a)
        seen = []
        c.push(b"x" * 8192)
        seen.append(c.calls[:])
        c.calls.clear()
        c.push_with_producer(module.simple_producer(b"y" * 8192, 1024))
        seen.append(c.calls[:])
        for _ in range(3):
            c.calls.clear()
            c.handle_write()
            seen.append(c.calls[:])
        c.close()
        return seen
    finally:
        b.close()


def test_overridden_send_gets_one_call_per_initiate_send() -> None:
    """asynchat's contract for a class that overrides send(): one call, of at most
    ac_out_buffer_size bytes, per push() and per initiate_send(); the rest stays queued."""
    assert _send_calls(nl_asynchat) == [[1024]] * 5


@needs_stdlib
def test_overridden_send_calls_as_stdlib_asynchat() -> None:
    assert _send_calls(nl_asynchat) == _send_calls(STDLIB)


def test_throttle_that_stops_the_channel_inside_send(loop: Any) -> None:
    """pyftpdlib's throttle: send() takes the channel out of the map when over its budget
    and a timer puts it back. Nothing more may go out while it is out of the map."""
    import socket as _socket
    a, b = _socket.socketpair()
    b.setblocking(False)
    sends: List[int] = []

    class Throttled(nl_asynchat.async_chat):  # type: ignore[misc]
        ac_out_buffer_size = 4096

        def send(self, data: Any) -> int:
            n = nl_asynchat.async_chat.send(self, data)
            sends.append(n)
            self.del_channel()  # over budget after every send: wait for the timer
            loop.call_later(0.001, self.wake)
            return n

        def wake(self) -> None:  # pyftpdlib's ioloop registers the descriptor again
            self._fileno = self.socket.fileno()
            self.add_channel()

    c = Throttled(a, map=loop.map)
    try:
        c.push(b"z" * 40960)
        assert sends == [4096]  # one send, then out of the map
        got = bytearray()
        run_until(loop, lambda: recv_some(b, got) or len(got) == 40960)
        assert sends == [4096] * 10 and bytes(got) == b"z" * 40960
    finally:
        c.close()
        b.close()


@pytest.fixture(autouse=True)
def _clean_socket_map() -> Iterator[None]:
    yield
    nl_asyncore.socket_map.clear()


# ---------------------------------------------------------------- a real protocol, pipelined
def _smtpd_on_netloop() -> Any:
    """Python 3.11's smtpd (removed in 3.12) run from its file on netloop's asyncore/asynchat,
    on whatever Python runs the tests; None without a 3.11 install."""
    lib = cpython311_lib()
    path = os.path.join(lib, "smtpd.py") if lib else ""
    if not os.path.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location("smtpd_on_netloop", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"asyncore": nl_asyncore, "asynchat": nl_asynchat}), \
            mock.patch.object(warnings, "_deprecated", lambda *a, **k: None, create=True), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        spec.loader.exec_module(module)
    return module


def test_smtpd_answers_pipelined_commands_in_order() -> None:
    # A client that pipelines a whole transaction (RFC 2920) in two writes: the replies to
    # several commands of one read leave together, in order, across smtpd's change of
    # terminator for DATA; the message arrives intact.
    smtpd = _smtpd_on_netloop()
    if smtpd is None:
        pytest.skip("no Python 3.11 smtpd.py on this machine")
    import socket

    received: List[Any] = []

    class Server(smtpd.SMTPServer):  # type: ignore[misc, name-defined]
        def process_message(self, peer: Any, mailfrom: str, rcpttos: List[str], data: bytes,
                            **kw: Any) -> None:
            received.append((mailfrom, rcpttos, data))

    channels: dict = {}
    server = Server(("127.0.0.1", 0), None, map=channels, decode_data=False)
    lp = netloop.get_loop(channels)
    client = socket.create_connection(server.socket.getsockname())
    client.setblocking(False)
    got = bytearray()

    def pump_until(n_replies: int) -> None:
        for _ in range(2000):
            lp.run_once(0.005)
            try:
                got.extend(client.recv(65536))
            except BlockingIOError:
                pass
            if got.count(b"\r\n") >= n_replies:
                return
        raise AssertionError("replies so far: %r" % bytes(got))

    try:
        pump_until(1)  # the greeting
        client.sendall(b"HELO client\r\nMAIL FROM:<a@example.com>\r\n"
                       b"RCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
        pump_until(6)
        client.sendall(b"Subject: hi\r\n\r\nline one\r\n..dot line\r\n.\r\nNOOP\r\nQUIT\r\n")
        pump_until(9)
        codes = [line[:3] for line in bytes(got).split(b"\r\n") if line]
        assert codes == [b"220", b"250", b"250", b"250", b"250", b"354", b"250", b"250", b"221"]
        assert received == [("a@example.com", ["b@example.com", "c@example.com"],
                             b"Subject: hi\n\nline one\n.dot line")]  # smtpd's newlines
    finally:
        client.close()
        for ch in list(channels.values()):
            ch.close()
        lp.close()


# ---------------------------------------------------------------- lines of one read, both ways
def _drive_lines(asyncore: Any, asynchat: Any, data: bytes, on_line: Any, *, passes: int,
                 use_poll: bool = False, in_buffer: Optional[int] = None,
                 events: Optional[List[Any]] = None) -> bytes:
    """Send ``data`` to a line channel (terminator b"\\n") of ``asynchat`` on a map of its own,
    call ``on_line(channel, line)`` for each line, run ``passes`` passes of ``asyncore.loop()``
    and return what the peer received. ``in_buffer`` sets ``ac_in_buffer_size``; with
    ``events``, each ``handle_close()`` is recorded there before it closes."""
    import socket

    class Chan(asynchat.async_chat):  # type: ignore[misc, name-defined]
        def __init__(self, sock: Any, map: Any) -> None:
            super().__init__(sock, map=map)
            self.set_terminator(b"\n")
            self.parts: List[bytes] = []

        def collect_incoming_data(self, data: bytes) -> None:
            self.parts.append(data)

        def found_terminator(self) -> None:
            line = b"".join(self.parts)
            self.parts = []
            on_line(self, line)

    def handle_close(self: Any) -> None:
        assert events is not None
        events.append("handle_close")
        self.close()

    extra: Dict[str, Any] = {}
    if in_buffer is not None:
        extra["ac_in_buffer_size"] = in_buffer
    if events is not None:
        extra["handle_close"] = handle_close
    cls = type("Chan", (Chan,), extra) if extra else Chan
    a, b = socket.socketpair()
    m: dict = {}
    cls(a, m)
    try:
        b.sendall(data)
        for _ in range(passes):
            asyncore.loop(timeout=0.01, use_poll=use_poll, map=m, count=1)
        b.settimeout(5)
        return b.recv(100)
    finally:
        for ch in list(m.values()):
            ch.close()
        b.close()


# ---------------------------------------------------------------- close_when_done() in a batch
def _close_when_done_then_more_input(asyncore: Any, asynchat: Any, use_poll: bool) -> List[Any]:
    events: List[Any] = []

    def on_line(ch: Any, line: bytes) -> None:
        events.append(line)
        if line == b"a":  # not the last line of its read
            ch.push(b"bye\n")
            ch.close_when_done()

    # "a\nb\n" per read (ac_in_buffer_size 4): the rest waits in the kernel
    events.append(_drive_lines(asyncore, asynchat, b"a\nb\nc\nd\n", on_line, passes=6,
                               use_poll=use_poll, in_buffer=4, events=events))
    return events


@needs_stdlib
@pytest.mark.parametrize("use_poll", [False, True])
def test_close_when_done_in_a_batch_waits_for_the_write_event(use_poll: bool) -> None:
    # asynchat sent a push at once and left the close mark for the next write event, which
    # comes after that pass's read: input still waiting is read and handled first. Batching
    # the replies of one read must not move the close to the end of that read.
    nl = _close_when_done_then_more_input(nl_asyncore, nl_asynchat, use_poll)
    ref = _close_when_done_then_more_input(STDLIB.asyncore, STDLIB, use_poll)
    assert ref == [b"a", b"b", b"c", b"d", "handle_close", b"bye\n"]
    assert nl == ref


# ---------------------------------------------------------------- close marks in a batch
def _lines_with_close_marks(asyncore: Any, asynchat: Any, actions: Any) -> List[Any]:
    """Feed "a\\nb\\nc\\n" in one read; ``actions[line](channel)`` runs for each line."""
    events: List[Any] = []

    def on_line(ch: Any, line: bytes) -> None:
        events.append((line, ch.connected))
        action = actions.get(line)
        if action is not None:
            action(ch, asynchat)
            events.append(("after", ch.connected))

    events.append(_drive_lines(asyncore, asynchat, b"a\nb\nc\n", on_line, passes=4,
                               events=events))
    return events


def _mark_twice(ch: Any, asynchat: Any) -> None:
    ch.close_when_done()
    ch.close_when_done()


def _push_x_and_mark(ch: Any, asynchat: Any) -> None:
    ch.push(b"x\n")
    ch.close_when_done()


@needs_stdlib
@pytest.mark.parametrize("actions", [
    # a producer pushed after two marks: handle_close() once, not again from inside close()
    {b"a": _mark_twice, b"b": lambda ch, m: ch.push_with_producer(m.simple_producer(b"late"))},
    # a push after the mark meets it at once: closed there, and nothing after it is sent
    {b"a": _push_x_and_mark, b"b": lambda ch, m: ch.push(b"y\n")},
], ids=["producer-after-two-marks", "push-after-mark"])
def test_close_marks_met_in_a_batch_as_in_asynchat(actions: Any) -> None:
    nl = _lines_with_close_marks(nl_asyncore, nl_asynchat, actions)
    ref = _lines_with_close_marks(STDLIB.asyncore, STDLIB, actions)
    assert ref.count("handle_close") == 1
    assert nl == ref


# ---------------------------------------------------------------- discard_buffers() in a batch
def _discard_in_a_later_line(asyncore: Any, asynchat: Any) -> bytes:
    def on_line(ch: Any, line: bytes) -> None:
        if line == b"b":
            ch.discard_buffers()
        ch.push(b"reply-" + line + b"\n")

    # one read: the replies of a and b are batched
    return _drive_lines(asyncore, asynchat, b"a\nb\nc\n", on_line, passes=4)


@needs_stdlib
def test_discard_buffers_keeps_replies_asynchat_had_sent() -> None:
    # asynchat's push() sent at once: discard_buffers() in a later line of the same read
    # dropped only what the kernel had not taken, never the earlier lines' replies.
    ref = _discard_in_a_later_line(STDLIB.asyncore, STDLIB)
    assert ref == b"reply-a\nreply-b\n"  # (the unread "c" line is discarded too)
    assert _discard_in_a_later_line(nl_asyncore, nl_asynchat) == ref
