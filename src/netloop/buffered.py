"""Buffered output for dispatchers: send what the kernel takes now, queue only the rest.

The queue is a deque of byte chunks (memoryviews into the caller's bytes where that is safe, so
nothing is copied), flushed with one ``sendmsg()`` of several chunks where the socket has it.
Sending is O(bytes) however slowly the peer reads: asyncore's ``out_buffer = out_buffer + data``
copied the whole backlog on every ``send()``. Write interest is registered only while the queue
holds something.

Flow control: the queue has high/low watermarks (``write_high_water``, 256 KiB, and
``write_low_water``, 64 KiB, by default; see ``outqueue``): over the high mark the channel stops
reading from its peer (``pause_writing()``), at the low mark it reads again
(``resume_writing()``). ``netloop.asyncore.dispatcher_with_send`` has no limit, as asyncore.

End of input (``handle_read_eof()``): what is queued is sent first, then ``handle_close()`` is
called; asyncore's ``dispatcher_with_send`` closed at once and dropped it.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from .dispatcher import Dispatcher, known_interest
from .outqueue import FlowControl, consume, flat, tail
from .pollers import READ_MASK, WRITE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Deque, Optional

    from .reactor import ChannelMap

__all__ = ["BufferedDispatcher", "SEND_CHUNKS"]

#: Chunks handed to one sendmsg() call (Linux allows 1024; more rarely helps).
SEND_CHUNKS = 64

# Dispatcher.__init__ as a module global: read from the class it is an attribute lookup on a
# type, which 3.11 never specializes (~190 instructions per channel made; 3.13 saves ~270).
_dispatcher_init = Dispatcher.__init__


class BufferedDispatcher(Dispatcher, FlowControl):
    """``asyncore.dispatcher_with_send``: ``send()`` never blocks and never loses bytes."""

    # An instance attribute only (see Dispatcher's class body on shadowing), set by __init__:
    # empty, and replaced by a deque on first use through _queue().
    _outq: Any
    _nl_sendmsg = True   # cleared for a socket whose sendmsg() refuses (TLS) or is missing
    _nl_close_when_sent = False  # end of input seen with output queued: close once it is sent

    def __init__(self, sock: Optional[Any] = None, map: Optional[ChannelMap] = None) -> None:
        # No deque until a send leaves bytes behind: an empty one is ~600 bytes, and most
        # connections never need one (memory per idle connection matters at 10k+).
        self._outq = None  # (None, not (): its truth is one specialized instruction on 3.12+)
        # _out_pending (bytes queued) is set with the deque (_queue()) and read only while it
        # holds something: not stored for channels that never queue (8 bytes each).
        _dispatcher_init(self, sock, map)

    def _queue(self) -> Deque[Any]:
        q = getattr(self, "_outq", None)  # a subclass may touch out_buffer before __init__
        if type(q) is not deque:
            q = self._outq = deque()
            self._out_pending = 0
        return q

    @property
    def out_buffer(self) -> bytes:
        """The bytes not yet sent (a copy: read it for inspection, not in a hot loop)."""
        return b"".join(getattr(self, "_outq", None) or ())

    @out_buffer.setter
    def out_buffer(self, value: Any) -> None:
        q = self._queue()
        q.clear()
        self._out_pending = 0
        if value:
            q.append(bytes(value))
            self._out_pending = len(value)
        self._update_interest()
        if self.writing_paused:
            self._nl_queued_less(self._out_pending)
        else:
            self._nl_queued_more(self._out_pending)

    @property
    def send_backlog(self) -> int:
        """How many bytes are queued, waiting for the socket to take them."""
        return self._out_pending if self._outq else 0

    def get_write_buffer_size(self) -> int:
        """Bytes queued for the peer (``send_backlog``)."""
        return self._out_pending if self._outq else 0

    def _nl_mask(self) -> int:
        read = 0 if self._nl_paused else READ_MASK
        if (not self.connected or self._outq) and not self.accepting:
            return read | WRITE
        return read

    @known_interest
    def writable(self) -> bool:
        """True while output is queued (or the connection is still being made): the loop watches
        for writability only then.
        """
        return (not self.connected) or bool(self._outq)

    def send(self, data: Any) -> None:  # type: ignore[override]
        """Send ``data`` now if nothing is queued, and queue whatever the socket does not take, to
        go out when it can (``initiate_send()``). Never blocks and never loses bytes; returns
        None (asyncore's ``dispatcher_with_send.send`` returned nothing useful either). Crossing
        the high-water mark pauses reading (see ``set_write_buffer_limits()``).
        """
        if self.debug:
            self.log_info("sending %s" % repr(data))
        if type(data) is not bytes:
            data = flat(data)  # (counted in bytes, as the socket counts what it took)
        # (The length's truth, not the data's: an int's is specialized on 3.12+, bytes' not.)
        size = len(data)
        if self._outq:
            if size:
                self._outq.append(bytes(data) if type(data) is not bytes else data)
                self._out_pending += size
                self._nl_queued_more(self._out_pending)
            return
        if not size:
            self._nl_send_nothing()
            return
        try:
            sent = self.socket.send(data)
        except OSError as why:
            if self._nl_send_failed(why):
                return
            sent = 0
        if self._nl_idle is not None and sent:
            self._nl_last = self._nl_idle._queue.clock()
        if sent < size:
            self._nl_queue_rest(data, sent, size)

    def _nl_queue_rest(self, data: Any, sent: int, size: int) -> None:
        # The socket took ``sent`` of the ``size`` bytes of ``data`` with nothing queued
        # before: queue the rest (a copy where ``data`` may change) and watch for writability.
        q = self._queue()
        q.append(tail(data, sent))
        self._out_pending = size - sent
        self._update_interest()
        self._nl_queued_more(size - sent)

    def _nl_send_nothing(self) -> None:
        # A send with nothing to send (send(b"") with nothing queued, or a write event with an
        # empty queue: the first one after a connect): nothing here. The asyncore facade's
        # dispatcher_with_send sends b"" on the socket, as asyncore did.
        pass

    def initiate_send(self) -> None:
        """Send as much of the queue as the socket takes now."""
        q = self._outq
        if not q:
            self._nl_send_nothing()
            return
        sock = self.socket
        try:
            if len(q) > 1 and self._nl_sendmsg:
                try:
                    sent = sock.sendmsg(list(islice(q, SEND_CHUNKS)))
                except (NotImplementedError, AttributeError):
                    # ssl.SSLSocket has a sendmsg that refuses; file wrappers have none.
                    self._nl_sendmsg = False
                    sent = sock.send(q[0])
            else:
                sent = sock.send(q[0])
        except OSError as why:
            self._nl_send_failed(why)
            return
        self._out_pending -= sent
        if self._nl_idle is not None and sent:
            self._nl_last = self._nl_idle._queue.clock()
        consume(q, sent)
        if not q:
            self._out_pending = 0
            self._update_interest()
            if self.writing_paused:
                self._nl_queued_less(0)
            if self._nl_close_when_sent:
                self._nl_close_when_sent = False
                self.handle_close()
        elif self.writing_paused:
            self._nl_queued_less(self._out_pending)

    def handle_read_eof(self) -> None:
        """The peer closed its side: send what is queued, then call ``handle_close()``."""
        if self._outq and self.connected:
            self._nl_close_when_sent = True
        else:
            self.handle_close()

    def handle_write(self) -> None:
        """The socket can take more: send from the queue (``initiate_send()``)."""
        self.initiate_send()

    def _nl_before_tls(self) -> bytes:
        # What is queued was sent before start_tls(): it goes out in the clear, first.
        self.initiate_send()
        q = self._outq
        if not q:
            return b""
        plain = b"".join(q)
        q.clear()
        self._out_pending = 0
        self._update_interest()
        return plain
