"""The chat channel: a dispatcher that cuts its input at a terminator and queues producers.

``ChatChannel`` has the methods, attributes and behaviour of Python 3.11's
``asynchat.async_chat``, joined to the pure ``Framer`` and output queue of this package, with
these differences, each deliberate:

- Input is walked with an offset and handed out as soon as it cannot be part of a terminator:
  linear in the bytes received however they are split and however many frames one read holds.
- ``push()`` sends at once when nothing is queued and queues only what the kernel did not take;
  a large push is not cut into copies. The queue is flushed with one ``sendmsg()`` of several
  chunks (at most ``ac_out_buffer_size`` bytes per call) where the socket has it, and a partly
  sent chunk stays queued as a view of its tail, not a copy. A class that overrides ``send()``
  (a throttle, TLS) keeps asynchat's contract instead: one call of at most
  ``ac_out_buffer_size`` bytes per ``push()`` and per ``initiate_send()``, the rest queued for
  the next write event (pyftpdlib's throttle stops its channel from inside ``send()``).
- Replies to pipelined input are batched: when one read holds several complete frames, what
  ``found_terminator()`` pushes for all but the last is queued, and the last frame's first
  ``push()`` sends it all in one call (so does the end of the read, or ``close()``). asynchat
  made one send per push, and that run of small writes also met Nagle's algorithm: a client
  pipelining 16 lines got their echo at delayed-ACK pace (about 40 ms). The last frame's push
  still sends at once, so a reply pushed just before the socket is wrapped for TLS (STARTTLS,
  which must end a pipelined group) goes out in the clear, as before.
- Write interest is known to the loop: asked for when the queue fills, dropped when it drains,
  so an idle channel costs nothing per pass. ``producer_fifo`` is still a deque that code may
  append to directly; such an append is noticed (``ProducerFifo``). Code that *replaces*
  ``producer_fifo`` with a plain deque must call ``initiate_send()`` after appending to it, as
  ``push()`` does, or the loop will not know there is something to write.
- Bounded input: ``max_buffer`` caps the bytes of one frame while a byte-string terminator is
  awaited. Going over it calls ``handle_overflow()``, which by default logs and closes the
  channel through ``handle_close()``. The default here is 1 MiB; the ``netloop.asynchat`` facade
  sets None (no limit), as asynchat had none.
- Flow control: the output queue has high/low watermarks (``write_high_water`` 256 KiB,
  ``write_low_water`` 64 KiB by default, see ``netloop.outqueue``): over the high mark the
  channel stops reading (``pause_writing()``), at the low mark it reads again
  (``resume_writing()``). Bytes pushed count; a producer counts only for what it has produced
  and not yet sent. The ``netloop.asynchat`` facade sets no limit, as asynchat had none.
- End of input (``handle_read_eof()``): what is queued is sent, then ``handle_close()`` is
  called (as after ``close_when_done()``); asynchat closed at once and dropped it.
- ``terminator`` defaults to None (collect everything) instead of being unset, and
  ``collect_incoming_data()`` defaults to ``_collect_incoming_data()``, so a subclass needs only
  ``set_terminator()`` and ``found_terminator()`` (which calls ``_get_data()``).
"""

from __future__ import annotations

import socket as _socket
from collections import deque

from ..dispatcher import Dispatcher, known_interest
from ..errors import DISCONNECTED, WOULD_BLOCK
from ..outqueue import FlowControl
from ..pollers import READ_MASK, WRITE
from .framing import DATA, FOUND, Framer
from .producers import BYTES_TYPES, SEND_CHUNKS, ProducerFifo, consume, gather, tail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Deque, List, Optional

    from ..reactor import ChannelMap
    from .framing import Terminator

__all__ = ["ChatChannel", "DEFAULT_MAX_BUFFER"]

#: ``ChatChannel.max_buffer``'s default: the longest frame awaited before ``handle_overflow()``.
DEFAULT_MAX_BUFFER = 1 << 20

_SENDMSG = getattr(_socket.socket, "sendmsg", None)
# Batch states of push() (see ChatChannel._nl_input): queue only; queue and send all.
_QUEUE = 1
_LAST = 2
_deque_append = deque.append


def _nbytes(chunk: Any) -> int:
    return chunk.nbytes if type(chunk) is memoryview else len(chunk)


class ChatChannel(Dispatcher, FlowControl):
    """A dispatcher for command/response protocols: terminator-framed input, queued output.

    Subclasses define ``found_terminator()`` (and may override ``collect_incoming_data()``),
    call ``set_terminator()`` and answer with ``push()``/``push_with_producer()``.
    """

    #: Bytes asked of each ``recv()``.
    ac_in_buffer_size = 65536
    #: Most bytes handed to the kernel in one send call.
    ac_out_buffer_size = 65536
    #: Encode ``str`` terminators and producer output with ``encoding`` (asynchat's switch).
    use_encoding = 0
    encoding = "latin-1"
    #: The current terminator: bytes, a count of bytes, or None (see ``set_terminator``); None
    #: until set. (An instance attribute only, as are ``_nl_writing`` and the dispatcher's
    #: ``connected``/``accepting``/``addr``: see ``Dispatcher``'s class body.)
    terminator: Terminator
    #: Most bytes one frame may have while a byte-string terminator is awaited (None: no cap).
    max_buffer: Optional[int] = DEFAULT_MAX_BUFFER

    _nl_writing: bool       # whether the loop was last told that the queue holds something
    # (instance attributes only, set by __init__: stored for every request)
    _nl_batch: Any          # _QUEUE/_LAST while replies to one read's frames are batched
    # send()/recv() are the dispatcher's own, so the socket may be called directly (and
    # sendmsg() stand in for several send() calls); an override (TLS, tests) is always called.
    _nl_plain_send = True
    _nl_plain_recv = True
    # initiate_send() is this class's own, so push() may send at once without calling it.
    _nl_plain_initiate = True
    # get_terminator() is this class's own: the terminator may be read directly.
    _nl_plain_term = True
    _nl_batched: int        # bytes objects push() queued in the current batch (see _nl_flush)
    _nl_queued: int         # bytes queued by push() and not sent yet (flow control's measure)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._nl_plain_send = cls.send is Dispatcher.send
        cls._nl_plain_recv = cls.recv is Dispatcher.recv
        cls._nl_plain_initiate = cls.initiate_send is ChatChannel.initiate_send
        cls._nl_plain_term = cls.get_terminator is ChatChannel.get_terminator

    def __init__(self, sock: Optional[_socket.socket] = None,
                 map: Optional[ChannelMap] = None) -> None:
        self._framer = Framer()
        #: Pieces collected by ``_collect_incoming_data()`` since the last ``_get_data()``.
        self.incoming: List[bytes] = []
        #: The output queue (see ``netloop.chat.producers``).
        self.producer_fifo: Deque[Any] = ProducerFifo(owner=self)
        self._nl_writing = False
        self._nl_batch = False
        self._nl_batched = self._nl_queued = 0
        if not hasattr(self, "terminator"):  # set_terminator() before this call is kept
            self.terminator = None
        super().__init__(sock, map)

    # ------------------------------------------------------------------ input
    def set_terminator(self, term: Any) -> None:
        """Set where input is cut: a byte string, a count of bytes (>= 0), or None.

        A ``str`` is encoded with ``encoding`` when ``use_encoding`` is set.
        """
        if isinstance(term, str) and self.use_encoding:
            term = bytes(term, self.encoding)
        elif isinstance(term, int) and term < 0:
            raise ValueError("the number of received bytes must be positive")
        self.terminator = term

    def get_terminator(self) -> Any:
        """The current terminator: bytes, a count of bytes, or None (see ``set_terminator()``)."""
        return self.terminator

    def collect_incoming_data(self, data: bytes) -> None:
        """Called with each piece of the current frame; keeps it for ``_get_data()``."""
        self.incoming.append(data)

    def _collect_incoming_data(self, data: bytes) -> None:
        self.incoming.append(data)

    def _get_data(self) -> bytes:
        """The pieces collected so far, joined; the collection starts again empty."""
        incoming = self.incoming
        data = b"".join(incoming)
        del incoming[:]
        return data

    def found_terminator(self) -> None:
        """Called when the current frame is complete (its terminator was read)."""
        raise NotImplementedError("must be implemented in subclass")

    def handle_overflow(self) -> None:
        """Called when a frame grows over ``max_buffer`` bytes without its terminator.

        The default logs and closes the channel with ``handle_close()``. An override may instead
        answer and ``close_when_done()``, or ``discard_buffers()`` and go on: if the channel is
        still connected when it returns, the frame continues, unchecked until its terminator.
        """
        self.log_info("%r: more than %s bytes without a terminator; closing"
                      % (self, self.max_buffer), "error")
        self.handle_close()

    def handle_read(self) -> None:
        """Called when the socket is readable: reads, cuts the input at the terminator and calls
        ``collect_incoming_data()`` and ``found_terminator()`` for each frame. Override those
        rather than this.
        """
        if self._nl_plain_recv and self._nl_idle is None:
            # Dispatcher.recv() inlined (it also keeps the idle clock, which is off here): this
            # is the hot path of every chat protocol.
            try:
                data = self.socket.recv(self.ac_in_buffer_size)
            except BlockingIOError:
                return  # a spurious wake-up (the class, not the errno: it may have none)
            except OSError as why:
                if why.errno in WOULD_BLOCK:
                    return
                if why.errno in DISCONNECTED:
                    self.handle_close()
                else:
                    self.handle_error()
                return
            if not data:
                self._nl_read_eof()  # the peer closed its side
                return
        else:
            try:
                data = self.recv(self.ac_in_buffer_size)
            except BlockingIOError:
                return
            except OSError:
                self.handle_error()
                return
            if not data:
                return
            if isinstance(data, str) and self.use_encoding:
                data = bytes(data, self.encoding)
        framer = self._framer
        if not framer._buf:
            # Fastest path: the read is exactly one frame, its byte-string terminator last.
            term = self.get_terminator()
            if term.__class__ is bytes and term:
                index = len(data) - len(term)
                if index >= 0 and data.find(term) == index:
                    limit = self.max_buffer
                    if limit is None or framer._size + index <= limit:
                        if framer._size or framer._over:
                            framer._size = 0
                            framer._over = False
                        if index:
                            self.collect_incoming_data(data[:index])
                        self.found_terminator()
                        return
        self._nl_input(data)

    def _nl_input(self, data: bytes) -> None:
        # Everything but the fastest path of handle_read(). Private on purpose: a public name
        # here (say "feed") could be one a legacy subclass already uses for its own ends.
        framer = self._framer
        if framer._buf or data.__class__ is not bytes:
            framer.feed(data)
        else:
            framer._buf = data
            framer._pos = 0
            # Fast path for the usual case, whole frames after a byte-string terminator: the
            # framer's own walk, inlined. Its step() takes over at a partial frame, a change of
            # terminator kind, a frame that may be over the limit, or when found_terminator()
            # touched the input (discard_buffers(), a nested handle_read()).
            #
            # Replies to pipelined frames are batched: push() queues them (_QUEUE) until the
            # last frame of the read pushes (_LAST), which sends everything in one call.
            plain_term = self._nl_plain_term
            term = self.terminator if plain_term else self.get_terminator()
            if term.__class__ is bytes and term:
                limit = self.max_buffer
                tlen = len(term)
                end = len(data)
                pos = 0
                size = framer._size  # bytes of the first frame handed out by earlier reads
                stale = size or framer._over
                batching = False
                try:
                    while True:
                        index = data.find(term, pos)
                        if index < 0 or (limit is not None and size + index - pos > limit):
                            break
                        if stale:
                            framer._size = size = 0
                            framer._over = stale = False
                        start = pos
                        pos = index + tlen
                        if pos >= end:
                            framer._buf = b""
                            framer._pos = 0
                            if batching:
                                self._nl_batch = _LAST  # its first push sends the lot
                        else:
                            framer._pos = pos
                            if not batching and self._nl_plain_initiate:
                                batching = True
                                self._nl_batch = _QUEUE
                        if index > start:
                            self.collect_incoming_data(data[start:index])
                        self.found_terminator()
                        if pos >= end:
                            return
                        if framer._buf is not data or framer._pos != pos:
                            break
                        if not plain_term or self.terminator is not term:
                            term = self.get_terminator()
                            if term.__class__ is not bytes or not term:
                                break
                            tlen = len(term)
                finally:
                    if batching:
                        self._nl_flush()
        framer.max_buffer = self.max_buffer
        step = framer.step
        while True:
            term = self.get_terminator()
            event = step(term)
            if event is None:
                return
            piece, kind = event
            if kind == FOUND:
                if piece:
                    self.collect_incoming_data(piece)
                if term.__class__ is not bytes and isinstance(term, int):
                    self.terminator = 0
                self.found_terminator()
            elif kind == DATA:
                self.collect_incoming_data(piece)
                if term.__class__ is not bytes and isinstance(term, int) and term:
                    self.terminator = term - len(piece)
            else:
                self.handle_overflow()
                if not self.connected:
                    return

    # ------------------------------------------------------------------ output
    def push(self, data: Any) -> None:
        """Send ``data`` (bytes-like) after what is queued: now if possible, else when ready."""
        cls = data.__class__
        if cls is not bytes and not isinstance(data, BYTES_TYPES):
            raise TypeError("data argument must be byte-ish (%r)" % type(data))
        fifo = self.producer_fifo
        batch = self._nl_batch
        if batch and self.connected and fifo and fifo[-1] is None:
            # A push after close_when_done() in the batch: asynchat's push() met the mark at
            # once and closed. End the batch here: the push below sends what the batch queued
            # ahead of the mark, then meets it.
            self._nl_batch = False
            self._nl_batched = 0
            self._nl_queued = sum(_nbytes(e) for e in fifo if isinstance(e, BYTES_TYPES))
            batch = False
        if batch and self.connected:
            # Called from found_terminator() for one of several frames of one read: queue now,
            # and send when the last frame pushes (one send per read, not one per line; and no
            # run of small writes for Nagle's algorithm to hold back).
            if cls is bytes:
                if data:
                    _deque_append(fifo, data)
                    self._nl_batched += 1
            elif _nbytes(data):
                _deque_append(fifo, data)
            if batch is _LAST:
                self._nl_flush()
            return
        if fifo or not self.connected or not self._nl_plain_initiate:
            _deque_append(fifo, data)
            self._nl_queued += len(data) if cls is bytes else _nbytes(data)
            self.initiate_send()
            self._sync_write()
            return
        size = len(data) if cls is bytes else _nbytes(data)
        if not size:
            return
        obs = self.ac_out_buffer_size
        if size <= obs:
            # The common case: one send, and usually nothing left to queue.
            if self._nl_plain_send and self._nl_idle is None:
                try:
                    sent = self.socket.send(data)
                except BlockingIOError:
                    sent = 0
                except OSError as why:
                    if why.errno in WOULD_BLOCK:
                        sent = 0
                    elif why.errno in DISCONNECTED:
                        self.handle_close()
                        return
                    else:
                        self.handle_error()
                        return
            else:
                try:
                    sent = self.send(data)
                except OSError:
                    self.handle_error()
                    return
            if sent < size:
                self._queue_tail(data, sent)
            return
        # Bigger than one send: send whole chunks while the kernel takes them, through views
        # (no copies), and queue the rest.
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        obs = max(1, obs)
        start = 0
        while start < size:
            chunk = view[start:start + obs]
            try:
                sent = self.send(chunk)
            except OSError:
                self.handle_error()
                return
            start += sent
            if sent < len(chunk) or not self._nl_plain_send:
                break  # an overridden send(): one call per push, as asynchat
        if start < size:
            self._queue_tail(data, start)

    def _nl_flush(self) -> None:
        """End a batch of replies (see ``_nl_input``): send what is queued."""
        self._nl_batch = False
        fifo = self.producer_fifo
        batched = self._nl_batched
        self._nl_batched = 0
        if not fifo:
            return
        if fifo[-1] is None:
            # close_when_done() was called in the batch. If nothing was pushed after it, the
            # replies had gone out at once in asynchat and the mark waited for the next write
            # event (after that pass's reads): send the replies, but leave the close to that
            # event, not to this end of the read.
            marks = 0
            while fifo and fifo[-1] is None:
                fifo.pop()
                marks += 1
            if None not in fifo:
                try:
                    if fifo:
                        self._nl_flush_batch(fifo, batched)
                finally:
                    if self.connected:
                        fifo.extend([None] * marks)
                        self._sync_write()
                return
            fifo.extend([None] * marks)  # a push after a mark: the close is due now
        self._nl_flush_batch(fifo, batched)

    def _nl_flush_batch(self, fifo: Any, batched: int) -> None:
        if batched > 1 and batched == len(fifo) and self.connected:
            # The queue holds only the batch's byte strings (initiate_send() resets the count,
            # and any other entry would make the lengths differ): one string, one send.
            try:
                data = b"".join(fifo)
            except TypeError:  # found_terminator() rearranged the queue itself
                self.initiate_send()
                return
            fifo.clear()
            ChatChannel.push(self, data)
        else:
            # Count what the batch queued (push() did not, to keep the batch cheap).
            self._nl_queued = sum(_nbytes(e) for e in fifo if isinstance(e, BYTES_TYPES))
            self.initiate_send()

    def close(self) -> None:
        """Close the channel; output that ``found_terminator()`` pushed in the current batch is
        flushed first. Queued output not yet sent is dropped: use ``close_when_done()`` to send
        it first.
        """
        if self._nl_batch:
            # Closed by found_terminator() in a batch: what it pushed first goes out first, as
            # it would have without the batch. Only what precedes the first close_when_done()
            # mark: asynchat never sent what followed a mark, and reaching a second mark here
            # would call handle_close() again from inside this close().
            fifo = self.producer_fifo
            if None in fifo:
                for _ in range(len(fifo) - fifo.index(None)):
                    fifo.pop()
            self._nl_flush()
        super().close()

    def _queue_tail(self, data: Any, start: int) -> None:
        if not self.connected:
            return  # closed by the send: nothing will go out any more
        _deque_append(self.producer_fifo, tail(data, start) if start else data)
        self._sync_write()
        self._nl_queued += _nbytes(data) - start
        self._nl_queued_more(self._nl_queued)

    def push_with_producer(self, producer: Any) -> None:
        """Queue a producer (anything with ``more()``), or bytes; send what can go now."""
        _deque_append(self.producer_fifo, producer)
        if isinstance(producer, BYTES_TYPES):
            self._nl_queued += _nbytes(producer)
        self.initiate_send()
        self._sync_write()

    def close_when_done(self) -> None:
        """Close the channel (``handle_close()``) once everything queued so far is sent."""
        _deque_append(self.producer_fifo, None)
        self._sync_write()

    def initiate_send(self) -> None:
        """Send as much of the queue as the kernel takes now, several chunks per call."""
        fifo = self.producer_fifo
        self._nl_batched = 0
        obs = self.ac_out_buffer_size
        encoding = self.encoding if self.use_encoding else None
        while fifo and self.connected:
            chunks, size = gather(fifo, obs, SEND_CHUNKS, encoding)
            if not chunks:
                if fifo and fifo[0] is None:
                    fifo.popleft()
                    self._sync_write()
                    self.handle_close()
                    return
                break
            try:
                if len(chunks) > 1 and self._nl_plain_send and _SENDMSG is not None and (
                        getattr(type(self.socket), "sendmsg", None) is _SENDMSG
                        or getattr(self.socket, "_nl_gather", False)):
                    sent = self._sendmsg(chunks)
                else:
                    first = chunks[0]
                    size = _nbytes(first)
                    sent = self.send(first)
            except OSError:
                self.handle_error()
                return
            finally:
                del chunks
            if sent:
                consume(fifo, sent)
                self._nl_queued -= sent
            if not sent or sent < size or not self._nl_plain_send:
                # An overridden send() gets asynchat's contract: one call per initiate_send()
                # (a throttle stops the channel from inside send(), as pyftpdlib's does).
                break
        self._sync_write()
        if fifo:
            queued = self._nl_queued
            if queued < 0:  # producers' output was sent too: it was never counted
                queued = self._nl_queued = 0
            if self.writing_paused:
                self._nl_queued_less(queued)
            else:
                self._nl_queued_more(queued)
        else:
            self._nl_queued = 0
            if self.writing_paused:
                self._nl_queued_less(0)

    def get_write_buffer_size(self) -> int:
        """Bytes pushed and not sent yet (producers count only for what they produced)."""
        return self._nl_queued if self.producer_fifo else 0

    def handle_read_eof(self) -> None:
        """The peer closed its side: send what is queued, then ``handle_close()``."""
        fifo = self.producer_fifo
        if fifo and self.connected:
            if fifo[-1] is not None:
                _deque_append(fifo, None)  # as close_when_done()
        else:
            self.handle_close()

    def _sendmsg(self, chunks: List[Any]) -> int:
        try:
            sent: int = self.socket.sendmsg(chunks)
        except OSError as why:
            if why.errno in WOULD_BLOCK:
                return 0
            if why.errno in DISCONNECTED:
                self.handle_close()
                return 0
            raise
        if sent and self._nl_idle is not None:
            self._nl_last = self._nl_idle._queue.clock()  # as Dispatcher.send() does
        return sent

    def _nl_before_tls(self) -> bytes:
        # STARTTLS: input read after the command and before the handshake is plaintext a man in
        # the middle may have put there (CVE-2011-0411): drop it, never execute it. Replies
        # queued so far (the "go ahead" among them, batched behind pipelined commands) go out
        # in the clear, ahead of the handshake.
        self._framer.clear()
        del self.incoming[:]
        self._nl_batch = False
        self.initiate_send()
        fifo = self.producer_fifo
        plain: List[Any] = []
        while fifo and self.connected:
            chunks, size = gather(fifo, 1 << 30, 1 << 30, self.encoding if self.use_encoding
                                  else None)
            if not chunks:
                break
            plain.extend(bytes(c) for c in chunks)
            consume(fifo, size)
        self._nl_batched = 0
        self._sync_write()
        return b"".join(plain)

    def discard_buffers(self) -> None:
        """Drop all unread input and unsent output (emergencies only)."""
        batch = self._nl_batch
        if batch:
            # Replies that earlier frames of this read pushed were only held back by the batch:
            # asynchat had sent them already. Send them first; only the rest is unsent output.
            self._nl_flush()
            self._nl_batch = batch if self.connected else False
        self._framer.clear()
        del self.incoming[:]
        self.producer_fifo.clear()
        self._nl_batched = 0
        self._nl_queued = 0
        self._sync_write()
        if self.writing_paused:
            self._nl_queued_less(0)

    # ------------------------------------------------------------------ interest
    @known_interest
    def readable(self) -> bool:
        """Always True: a chat channel reads unless reading is paused (by flow control or the
        loop's ``pause_reading()``), which netloop tracks without asking."""
        return True

    @known_interest
    def writable(self) -> bool:
        """True while output is queued (or the connection is being made): the loop watches for
        writability only then.
        """
        return bool(self.producer_fifo) or not self.connected

    def _nl_mask(self) -> int:
        read = 0 if self._nl_paused else READ_MASK
        if self.accepting:
            return read
        if self.producer_fifo or not self.connected:
            return read | WRITE
        return read

    def _fifo_filled(self) -> None:
        # producer_fifo was appended to directly while empty.
        if not self._nl_writing:
            self._nl_writing = True
            self._update_interest()

    def _sync_write(self) -> None:
        want = bool(self.producer_fifo)
        if want is not self._nl_writing:
            self._nl_writing = want
            self._update_interest()

    # ------------------------------------------------------------------ events
    def handle_write(self) -> None:
        """The socket can take more: send from the output queue (``initiate_send()``)."""
        self.initiate_send()

    def handle_close(self) -> None:
        """Called when the peer closed the connection or it failed; the default closes the
        channel."""
        self.close()
