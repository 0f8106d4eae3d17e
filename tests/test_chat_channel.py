"""The chat channel on real sockets (socketpairs, loopback TCP), one in-process loop per test,
on every poller."""

from __future__ import annotations

import logging
import socket
from collections import deque
from typing import Any, Iterator, List, Optional, Tuple
from unittest import mock

import pytest
from coresupport import has_ipv6, recv_some, tcp_pair
from support import run_until

import netloop
from netloop.chat import ChatChannel, SimpleProducer
from netloop.pollers import READ_MASK, WRITE


class Lines(ChatChannel):
    """Collects frames; answers nothing unless told to echo."""

    echo = False

    def __init__(self, sock: Any = None, map: Any = None, terminator: Any = b"\n") -> None:
        super().__init__(sock, map)
        self.set_terminator(terminator)
        self.frames: List[bytes] = []
        self.closes = 0

    def found_terminator(self) -> None:
        data = self._get_data()
        self.frames.append(data)
        if self.echo:
            self.push(data + b"\n")

    def handle_close(self) -> None:
        self.closes += 1
        self.close()


@pytest.fixture
def peers() -> Iterator[List[socket.socket]]:
    socks: List[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def make_pair(loop: netloop.Loop, peers: List[socket.socket], cls: type = Lines,
              **kw: Any) -> Tuple[Any, socket.socket]:
    a, b = socket.socketpair()
    peers.append(b)
    b.setblocking(False)
    return cls(a, map=loop.map, **kw), b


def read_from(loop: netloop.Loop, peer: socket.socket, size: int,
              timeout: float = 10.0) -> bytes:
    got = bytearray()
    run_until(loop, lambda: (recv_some(peer, got), len(got) >= size)[1], timeout=timeout,
              step=0.01)
    return bytes(got)


def mask_of(loop: netloop.Loop, ch: Any) -> int:
    loop.run_once(0)
    return loop._masks.get(ch._fileno, 0)


# ---------------------------------------------------------------- input
def test_line_echo(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers)
    ch.echo = True
    peer.send(b"hello\nworld\n\npartial")
    run_until(loop, lambda: len(ch.frames) == 3)
    assert ch.frames == [b"hello", b"world", b""]
    assert read_from(loop, peer, 13) == b"hello\nworld\n\n"
    peer.send(b" line\n")
    run_until(loop, lambda: len(ch.frames) == 4)
    assert ch.frames[-1] == b"partial line"


def test_input_one_byte_at_a_time(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    class Counted(Lines):
        reads = 0

        def handle_read(self) -> None:
            self.reads += 1
            super().handle_read()

    ch, peer = make_pair(loop, peers, cls=Counted, terminator=b"\r\n.\r\n")
    stream = b"one\r\n.\r\ntwo\r\n\r\n.\r\r\n.\r\n"
    for i in range(len(stream)):
        peer.send(stream[i:i + 1])
        run_until(loop, lambda i=i: ch.reads == i + 1)  # each byte is a read of its own
    assert ch.frames == [b"one", b"two\r\n\r\n.\r"]


def test_many_frames_in_one_read(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers)
    lines = [b"%d" % i for i in range(5000)]
    peer.setblocking(True)
    peer.sendall(b"".join(line + b"\n" for line in lines))
    peer.setblocking(False)
    run_until(loop, lambda: len(ch.frames) == len(lines))
    assert ch.frames == lines


def test_count_and_none_terminators(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    class Http(Lines):
        # A header line gives the length of the body that follows; then the rest is raw.
        def found_terminator(self) -> None:
            data = self._get_data()
            self.frames.append(data)
            if data.startswith(b"LEN "):
                self.set_terminator(int(data[4:]))
            elif self.get_terminator() == 0:
                self.set_terminator(None)

    ch, peer = make_pair(loop, peers, cls=Http)
    peer.send(b"LEN 5\nab")
    run_until(loop, lambda: ch.get_terminator() == 3)
    peer.send(b"cdeREST")
    run_until(loop, lambda: b"".join(ch.incoming) == b"REST")
    assert ch.frames == [b"LEN 5", b"abcde"]
    assert ch.get_terminator() is None


def test_terminator_defaults_to_none(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    class Plain(ChatChannel):
        pass

    ch, peer = make_pair(loop, peers, cls=Plain)
    assert ch.get_terminator() is None
    peer.send(b"anything\n")
    run_until(loop, lambda: ch.incoming)
    assert ch._get_data() == b"anything\n" and ch.incoming == []


def test_use_encoding(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    class Enc(Lines):
        use_encoding = 1

    ch, peer = make_pair(loop, peers, cls=Enc, terminator="\r\n")
    assert ch.get_terminator() == b"\r\n"
    peer.send(b"caf\xe9\r\n")
    run_until(loop, lambda: ch.frames)
    ch.push_with_producer(SimpleProducer("\xe9t\xe9", buffer_size=1))
    assert read_from(loop, peer, 3) == b"\xe9t\xe9"


def test_negative_count_is_refused() -> None:
    ch = Lines(map={})
    with pytest.raises(ValueError):
        ch.set_terminator(-1)


def test_discard_buffers_drops_the_rest_of_the_read(loop: netloop.Loop,
                                                   peers: List[socket.socket]) -> None:
    class Quit(Lines):
        def found_terminator(self) -> None:
            super().found_terminator()
            if self.frames[-1] == b"QUIT":
                self.discard_buffers()

    ch, peer = make_pair(loop, peers, cls=Quit)
    peer.send(b"a\nQUIT\nb\nc\n")
    run_until(loop, lambda: ch.frames)
    loop.run_once(0)
    assert ch.frames == [b"a", b"QUIT"]


def test_peer_closing_calls_handle_close(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers)
    peer.send(b"last\n")
    peer.close()
    run_until(loop, lambda: ch.closes)
    assert ch.frames == [b"last"] and ch.closes == 1 and not loop.map


def test_recv_and_send_overrides_are_used(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    class Upper(Lines):
        echo = True

        def recv(self, size: int) -> bytes:
            return super().recv(size).upper()

        def send(self, data: Any) -> int:
            self.sent_sizes.append(len(data))
            return super().send(data)

    ch, peer = make_pair(loop, peers, cls=Upper)
    ch.sent_sizes = []
    peer.send(b"abc\n")
    run_until(loop, lambda: ch.frames)
    assert ch.frames == [b"ABC"]
    assert read_from(loop, peer, 4) == b"ABC\n"
    assert ch.sent_sizes == [4]


def test_idle_timeout_keeps_working(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers)
    ch.echo = True
    ch.set_idle_timeout(60)
    peer.send(b"ping\n")
    assert read_from(loop, peer, 5) == b"ping\n"


# ---------------------------------------------------------------- the input limit
def test_overflow_logs_and_closes_by_default(loop: netloop.Loop, peers: List[socket.socket],
                                            caplog: pytest.LogCaptureFixture) -> None:
    class Small(Lines):
        max_buffer = 10

    ch, peer = make_pair(loop, peers, cls=Small)
    peer.send(b"short\n" + b"x" * 11)
    with caplog.at_level(logging.ERROR, logger="netloop"):
        run_until(loop, lambda: ch.closes)
    assert ch.frames == [b"short"]
    assert "without a terminator" in caplog.text
    assert not loop.map


def test_overflow_a_line_in_pieces(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    class Small(Lines):
        max_buffer = 1000
    ch, peer = make_pair(loop, peers, cls=Small)
    for _ in range(20):
        peer.send(b"y" * 100)
        loop.run_once(0.01)
        if ch.closes:
            break
    run_until(loop, lambda: ch.closes)
    assert sum(map(len, ch.incoming)) <= 1000


def test_overflow_hook_may_keep_the_channel(loop: netloop.Loop,
                                           peers: List[socket.socket]) -> None:
    class Lenient(Lines):
        max_buffer = 4
        overflows = 0

        def handle_overflow(self) -> None:
            self.overflows += 1
            self.push(b"too long\n")

    ch, peer = make_pair(loop, peers, cls=Lenient)
    peer.send(b"ok\nway too long\nfine\n")
    run_until(loop, lambda: len(ch.frames) == 3)
    assert ch.frames == [b"ok", b"way too long", b"fine"]
    assert ch.overflows == 1
    assert read_from(loop, peer, 9) == b"too long\n"


def test_default_limit_is_a_mebibyte() -> None:
    assert ChatChannel.max_buffer == netloop.chat.DEFAULT_MAX_BUFFER == 1 << 20


# ---------------------------------------------------------------- output and interest
def test_push_sends_at_once_and_asks_no_write_interest(loop: netloop.Loop,
                                                      peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers)
    assert mask_of(loop, ch) == READ_MASK
    ch.push(b"now\n")
    assert not ch.producer_fifo
    assert mask_of(loop, ch) == READ_MASK
    assert read_from(loop, peer, 4) == b"now\n"


def test_backlog_registers_write_then_drops_it(loop: netloop.Loop,
                                              peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers)
    big = b"z" * (8 << 20)
    ch.push(big)
    assert ch.producer_fifo
    head = ch.producer_fifo[0]
    assert isinstance(head, memoryview) and head.obj is big  # the rest, not a copy
    # Over the high watermark: writing, and reading paused until the queue drains.
    assert mask_of(loop, ch) == WRITE
    got = read_from(loop, peer, len(big), timeout=30)
    assert got == big
    run_until(loop, lambda: not ch.producer_fifo)
    assert mask_of(loop, ch) == READ_MASK


def test_idle_channels_are_not_asked(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    chans = [make_pair(loop, peers)[0] for _ in range(5)]
    loop.run_once(0)
    assert type(chans[0])._nl_known
    assert not loop._asked
    with mock.patch.object(Lines, "writable", side_effect=AssertionError("asked")), \
            mock.patch.object(Lines, "readable", side_effect=AssertionError("asked")):
        loop.run_once(0)


def test_legacy_writable_override_is_asked(loop: netloop.Loop,
                                          peers: List[socket.socket]) -> None:
    class Gated(Lines):
        gate = False

        def writable(self) -> bool:
            return self.gate and bool(self.producer_fifo)

        def initiate_send(self) -> None:
            if self.gate:
                super().initiate_send()

    assert not Gated._nl_known
    ch, peer = make_pair(loop, peers, cls=Gated)
    ch.push(b"held\n")
    loop.run_once(0)
    assert ch._fileno in loop._asked
    assert ch.producer_fifo
    ch.gate = True  # the outside world changed: the loop asks before every poll
    assert read_from(loop, peer, 5) == b"held\n"


def test_direct_append_to_producer_fifo_is_noticed(loop: netloop.Loop,
                                                  peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers)
    assert isinstance(ch.producer_fifo, deque)
    ch.producer_fifo.append(b"behind its back\n")  # no initiate_send()
    assert read_from(loop, peer, 16) == b"behind its back\n"
    assert mask_of(loop, ch) == READ_MASK


def test_replaced_fifo_works_after_initiate_send(loop: netloop.Loop,
                                                peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers)
    ch.producer_fifo = deque()
    ch.producer_fifo.append(b"replaced\n")
    ch.initiate_send()
    assert read_from(loop, peer, 9) == b"replaced\n"


def test_close_when_done_flushes_then_closes(loop: netloop.Loop,
                                            peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers)
    big = b"q" * (4 << 20)
    ch.push(big)
    ch.push_with_producer(SimpleProducer(b"tail", buffer_size=2))
    ch.close_when_done()
    ch.push(b"never sent")  # after the marker: dropped with the channel
    got = bytearray()

    def done() -> bool:
        recv_some(peer, got)
        return ch.closes == 1
    run_until(loop, done, timeout=30, step=0.01)
    peer.setblocking(True)
    peer.settimeout(10)
    while True:
        data = peer.recv(65536)
        if not data:
            break
        got.extend(data)
    assert bytes(got) == big + b"tail"
    assert not loop.map


def test_close_when_done_on_an_empty_queue(loop: netloop.Loop,
                                          peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers)
    ch.close_when_done()
    assert mask_of(loop, ch) == READ_MASK | WRITE or ch.closes
    run_until(loop, lambda: ch.closes)
    assert peer.recv(10) == b""


def test_producers_and_several_chunks_per_sendmsg(loop: netloop.Loop) -> None:
    if not hasattr(socket.socket, "sendmsg"):
        pytest.skip("no sendmsg on this platform")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        ch = Lines(map=loop.map)
        ch.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        ch.connect(listener.getsockname())
        # Queued while connecting: one sendmsg carries them all once connected.
        ch.push(b"one,")
        ch.push_with_producer(SimpleProducer(b"two,three,", buffer_size=4))
        ch.push(bytearray(b"four,"))
        ch.push(memoryview(b"five"))
        assert len(ch.producer_fifo) == 4
        real = ChatChannel._sendmsg
        with mock.patch.object(ChatChannel, "_sendmsg", autospec=True,
                               side_effect=real) as sendmsg:
            conn, _ = listener.accept()
            with conn:
                conn.setblocking(False)
                data = read_from(loop, conn, 23)
            assert data == b"one,two,three,four,five"
            assert sendmsg.call_count <= 3  # the producer is asked once per 4 bytes


def test_ac_out_buffer_size_caps_each_send(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    class Recorded(Lines):
        ac_out_buffer_size = 5

    ch, peer = make_pair(loop, peers, cls=Recorded)
    sizes: List[int] = []
    real_sendmsg = ChatChannel._sendmsg

    def sendmsg(self: Any, chunks: List[Any]) -> int:
        sizes.append(sum(memoryview(c).nbytes for c in chunks))
        return real_sendmsg(self, chunks)

    with mock.patch.object(ChatChannel, "_sendmsg", sendmsg):
        ch.push(b"0123456789abc")   # straight away, in chunks of 5
        ch.producer_fifo.extend([b"de", b"fgh", b"ijklmn"])
        ch.push_with_producer(SimpleProducer(b"opqrstuvw", buffer_size=3))
        want = b"0123456789abcdefghijklmnopqrstuvw"
        assert read_from(loop, peer, len(want)) == want
    assert sizes and max(sizes) <= 5


def test_ac_out_buffer_size_caps_each_send_override(loop: netloop.Loop,
                                                   peers: List[socket.socket]) -> None:
    class Recorded(Lines):
        ac_out_buffer_size = 5

        def send(self, data: Any) -> int:
            self.sizes.append(memoryview(data).nbytes)
            return super().send(data)

    ch, peer = make_pair(loop, peers, cls=Recorded)
    ch.sizes = []
    ch.push(b"0123456789abc")
    ch.producer_fifo.extend([b"de", b"fgh", b"ijklmn"])
    ch.push_with_producer(SimpleProducer(b"opqrstuvw", buffer_size=3))
    want = b"0123456789abcdefghijklmnopqrstuvw"
    assert read_from(loop, peer, len(want)) == want
    assert max(ch.sizes) <= 5 and sum(ch.sizes) == len(want)


def test_push_refuses_what_is_not_bytes() -> None:
    ch = Lines(map={})
    for bad in (10, "text", None, [b"x"]):
        with pytest.raises(TypeError):
            ch.push(bad)


def test_push_before_connect_is_sent_on_connect(loop: netloop.Loop) -> None:
    families = [socket.AF_INET] + ([socket.AF_INET6] if has_ipv6() else [])
    for family in families:
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        with socket.socket(family) as listener:
            listener.bind((host, 0))
            listener.listen(1)
            ch = Lines(map=loop.map)
            ch.create_socket(family, socket.SOCK_STREAM)
            ch.connect(listener.getsockname()[:2])
            ch.push(b"early\n")
            conn, _ = listener.accept()
            with conn:
                conn.setblocking(False)
                assert read_from(loop, conn, 6) == b"early\n"
                conn.send(b"reply\n")
                run_until(loop, lambda ch=ch: ch.frames)
            assert ch.frames == [b"reply"]
            ch.close()


def test_tcp_echo_of_many_lines(loop: netloop.Loop) -> None:
    client, server = tcp_pair()
    with client:
        ch = Lines(server, map=loop.map)
        ch.echo = True
        client.setblocking(False)
        payload = b"".join(b"line %d\n" % i for i in range(20000))
        sent = 0
        got = bytearray()

        def pump() -> bool:
            nonlocal sent
            if sent < len(payload):
                try:
                    sent += client.send(payload[sent:sent + 65536])
                except BlockingIOError:
                    pass
            recv_some(client, got)
            return len(got) >= len(payload)
        run_until(loop, pump, timeout=30, step=0.01)
        assert bytes(got) == payload
        assert len(ch.frames) == 20000


def test_send_error_goes_to_handle_close(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers)
    peer.close()
    ch.push(b"x" * 100000)
    run_until(loop, lambda: ch.closes)
    assert not loop.map


def test_discard_buffers_drops_output_and_write_interest(loop: netloop.Loop,
                                                        peers: List[socket.socket]) -> None:
    ch, _ = make_pair(loop, peers)
    ch.push(b"w" * (8 << 20))
    assert mask_of(loop, ch) & WRITE
    ch.discard_buffers()
    assert not ch.producer_fifo and mask_of(loop, ch) == READ_MASK


def test_writable_and_readable_answers() -> None:
    ch = Lines(map={})
    assert ch.readable() is True
    assert ch.writable() is True  # not connected yet
    ch.connected = True
    assert ch.writable() is False
    ch.producer_fifo.append(b"x")
    assert ch.writable() is True


def test_found_terminator_must_be_defined(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    class Bare(ChatChannel):
        errors: Optional[BaseException] = None

        def handle_error(self) -> None:
            import sys
            self.errors = sys.exc_info()[1]
            self.close()

    ch, peer = make_pair(loop, peers, cls=Bare)
    ch.set_terminator(b"\n")
    peer.send(b"x\n")
    run_until(loop, lambda: ch.errors is not None)
    assert isinstance(ch.errors, NotImplementedError)


# ---------------------------------------------------------------- pipelined input: batched replies
class Probe(Lines):
    """Echoes, and records after each push how many chunks wait in the queue."""

    echo = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.queued_after_push: List[int] = []

    def push(self, data: Any) -> None:
        super().push(data)
        self.queued_after_push.append(len(self.producer_fifo))


def test_pipelined_replies_leave_together_with_the_last(loop: netloop.Loop,
                                                          peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers, cls=Probe)
    peer.send(b"a\nb\nc\nd\n")
    run_until(loop, lambda: len(ch.frames) == 4)
    # Frames a-c were followed by more input in the same read: their replies were queued;
    # d's push sent all four in one call.
    assert ch.queued_after_push == [1, 2, 3, 0]
    assert read_from(loop, peer, 8) == b"a\nb\nc\nd\n"
    assert not ch.producer_fifo and not ch._nl_batch
    # A lone frame in a read pushes at once, as asynchat did.
    peer.send(b"e\n")
    run_until(loop, lambda: len(ch.frames) == 5)
    assert ch.queued_after_push[-1] == 0
    assert read_from(loop, peer, 2) == b"e\n"


def test_batch_ends_with_the_read_when_a_partial_frame_follows(
        loop: netloop.Loop, peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers, cls=Probe)
    peer.send(b"a\nb\npart")
    run_until(loop, lambda: len(ch.frames) == 2)
    assert ch.queued_after_push == [1, 2]  # b was not the last bytes of the read
    assert read_from(loop, peer, 4) == b"a\nb\n"  # sent when the read was done
    peer.send(b"ial\n")
    run_until(loop, lambda: len(ch.frames) == 3)
    assert ch.frames[-1] == b"partial"
    assert read_from(loop, peer, 8) == b"partial\n"


def test_close_in_a_batch_sends_what_was_pushed_first(loop: netloop.Loop,
                                                        peers: List[socket.socket]) -> None:
    class Quitter(Probe):
        def found_terminator(self) -> None:
            super().found_terminator()
            if self.frames[-1] == b"quit":
                self.push(b"bye\n")
                self.close()

    ch, peer = make_pair(loop, peers, cls=Quitter)
    peer.send(b"one\nquit\nnever\n")
    run_until(loop, lambda: not ch.connected)
    # As in asynchat, the rest of the read is still handed out; its reply goes nowhere.
    assert ch.frames == [b"one", b"quit", b"never"]
    peer.setblocking(True)
    peer.settimeout(10)
    got = b""
    while True:
        chunk = peer.recv(100)
        if not chunk:
            break
        got += chunk
    assert got == b"one\nquit\nbye\n"


def test_exception_in_a_batch_keeps_earlier_replies(loop: netloop.Loop,
                                                     peers: List[socket.socket]) -> None:
    class Failing(Probe):
        errors = 0

        def found_terminator(self) -> None:
            super().found_terminator()
            if self.frames[-1] == b"boom":
                raise RuntimeError("boom")

        def handle_error(self) -> None:
            self.errors += 1  # keeps the channel open

    ch, peer = make_pair(loop, peers, cls=Failing)
    peer.send(b"one\nboom\nthree\n")
    run_until(loop, lambda: ch.errors == 1)
    assert read_from(loop, peer, 9) == b"one\nboom\n"
    assert not ch._nl_batch
    # As in asynchat, the rest of that read waits for the next one; the channel works on.
    peer.send(b"four\n")
    run_until(loop, lambda: len(ch.frames) == 4)
    assert read_from(loop, peer, 11) == b"three\nfour\n"


def test_batched_replies_keep_order_with_producers(loop: netloop.Loop,
                                                   peers: List[socket.socket]) -> None:
    class Mixed(Probe):
        def found_terminator(self) -> None:
            data = self._get_data()
            self.frames.append(data)
            if data == b"p":
                self.push_with_producer(SimpleProducer(b"producer\n", 3))
            else:
                self.push(data + b"\n")

    ch, peer = make_pair(loop, peers, cls=Mixed)
    peer.send(b"x\np\ny\nz\n")
    run_until(loop, lambda: len(ch.frames) == 4)
    assert read_from(loop, peer, 15) == b"x\nproducer\ny\nz\n"


def test_batch_behind_a_backlog_keeps_order(loop: netloop.Loop,
                                            peers: List[socket.socket]) -> None:
    ch, peer = make_pair(loop, peers, cls=Probe)
    # No flow control: with it, the backlog would (rightly) stop the channel from reading the
    # frames until the peer reads; this test is about their replies' order behind a backlog.
    ch.set_write_buffer_limits(None)
    blob = bytes(range(256)) * 8192  # 2 MiB: more than the socket buffers take at once
    ch.push(blob)
    assert ch.producer_fifo  # a backlog waits for write readiness
    peer.send(b"a\n" + bytearray(b"b\n") + b"c\n")
    run_until(loop, lambda: len(ch.frames) == 3)
    got = read_from(loop, peer, len(blob) + 6, timeout=30)
    assert got == blob + b"a\nb\nc\n"
    run_until(loop, lambda: not ch.producer_fifo)


def test_batch_of_mixed_byte_types(loop: netloop.Loop, peers: List[socket.socket]) -> None:
    class Typed(Probe):
        def found_terminator(self) -> None:
            data = self._get_data()
            self.frames.append(data)
            kinds = {b"m": memoryview, b"a": bytearray}
            self.push(kinds.get(data, bytes)(data + b"\n"))

    ch, peer = make_pair(loop, peers, cls=Typed)
    peer.send(b"m\nb\na\nz\n")
    run_until(loop, lambda: len(ch.frames) == 4)
    assert read_from(loop, peer, 8) == b"m\nb\na\nz\n"


def test_batch_survives_found_terminator_rearranging_the_queue(
        loop: netloop.Loop, peers: List[socket.socket]) -> None:
    class Juggler(Probe):
        def found_terminator(self) -> None:
            super().found_terminator()
            if self.frames[-1] == b"b":
                # Legacy code may edit the queue itself: take a reply back, queue a producer.
                taken = self.producer_fifo.popleft()
                self.producer_fifo.append(SimpleProducer(b"[" + taken + b"]", 2))

    ch, peer = make_pair(loop, peers, cls=Juggler)
    peer.send(b"a\nb\nc\n")
    run_until(loop, lambda: len(ch.frames) == 3)
    assert read_from(loop, peer, 8) == b"b\n[a\n]c\n"
