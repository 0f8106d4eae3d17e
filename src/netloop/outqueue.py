"""Queued output as chunks of bytes: pure code shared by the buffered dispatcher and chat.

A queue is a deque of byte chunks. What the kernel did not take stays queued as a memoryview of
its unsent tail when the chunk cannot change under us (``bytes``, read-only views), so a slow
reader never makes the sender copy its backlog again and again; anything mutable is copied once.

Flow control (``FlowControl``, mixed into ``BufferedDispatcher`` and ``ChatChannel``): when the
bytes queued for a peer go over ``write_high_water``, the channel's ``pause_writing()`` hook is
called, whose default stops reading from that peer (an echo or proxy then queues no more for
it); once the queue drains to ``write_low_water`` or below, ``resume_writing()`` is called,
whose default reads again. The check runs only where bytes are queued or the queue is flushed,
never on a send the kernel takes whole. The drop-in ``netloop.asyncore``/``netloop.asynchat``
classes set ``write_high_water = None`` (no limit), keeping asyncore's unbounded queue.

The defaults, 256 KiB high and 64 KiB low: over loopback and LANs the kernel's own send buffer
(autotuned to megabytes on Linux) takes most bursts, so the queue only fills for a peer that
reads slower than the channel is fed; 256 KiB is four of the 64 KiB reads a chat channel
makes per event (two ``recv_view()`` reads of the CLI echo), so a burst does not flap reading
on and off, and it bounds a stalled
peer's cost at about a quarter of a MiB of queue (plus one read) rather than whatever it is
sent. Resuming at 64 KiB rather than at empty keeps a read's worth of data queued while the
peer catches up, so a fast peer never waits on the channel's next read. (asyncio's defaults
are 64 KiB / 16 KiB; netloop's queue holds views, not copies, so a larger mark costs no
copying.)
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Deque, Optional, Tuple

__all__ = ["tail", "consume", "FlowControl", "DEFAULT_HIGH_WATER", "DEFAULT_LOW_WATER"]

#: Bytes queued for a peer above which a channel stops reading from it (see module doc).
DEFAULT_HIGH_WATER = 256 * 1024
#: Bytes queued at or below which a channel paused by its queue reads again.
DEFAULT_LOW_WATER = 64 * 1024
# The read-pause reason a full queue sets (reactor.PAUSED_BY_QUEUE; this module imports
# nothing of the package).
_PAUSED_BY_QUEUE = 2


class FlowControl:
    """High/low watermarks on a channel's output queue, with asyncio-style hooks.

    Mixed into dispatchers that queue output. The channel calls ``_nl_queued_more(n)`` where
    its queue grew to ``n`` bytes and ``_nl_queued_less(n)`` where it shrank to ``n``.
    """

    #: Queued bytes above which ``pause_writing()`` is called (None: no limit).
    write_high_water: Optional[int] = DEFAULT_HIGH_WATER
    #: Queued bytes at or below which ``resume_writing()`` follows a ``pause_writing()``.
    write_low_water: int = DEFAULT_LOW_WATER
    #: True between ``pause_writing()`` and ``resume_writing()``.
    writing_paused = False

    def set_write_buffer_limits(self, high: Optional[int] = DEFAULT_HIGH_WATER,
                                low: Optional[int] = None) -> None:
        """Set the watermarks: ``high`` None turns flow control off; ``low`` None is
        ``high // 4``. Takes effect at once (a paused channel whose queue is now at or below
        ``low`` resumes)."""
        if high is None:
            self.write_high_water = None
            self.write_low_water = 0 if low is None else low
        else:
            if low is None:
                low = high // 4
            if not 0 <= low <= high:
                raise ValueError("need 0 <= low (%r) <= high (%r)" % (low, high))
            self.write_high_water = high
            self.write_low_water = low
        pending = self.get_write_buffer_size()
        if self.writing_paused:
            self._nl_queued_less(pending)
        else:
            self._nl_queued_more(pending)

    def get_write_buffer_limits(self) -> Tuple[int, Optional[int]]:
        """``(low, high)`` as asyncio's transports answer (high None: no limit)."""
        return self.write_low_water, self.write_high_water

    def get_write_buffer_size(self) -> int:
        """Bytes queued for the peer, waiting for the socket to take them."""
        raise NotImplementedError

    def pause_writing(self) -> None:
        """Called once when the output queue goes over ``write_high_water``.

        The default stops reading from the peer until ``resume_writing()``, so a peer that
        does not read cannot make the channel queue without bound. Override to also (or
        instead) stop feeding the channel from elsewhere (a proxy's other side).
        """
        self._nl_set_paused(_PAUSED_BY_QUEUE, True)  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        """Called once when the queue has drained to ``write_low_water`` after a pause.

        The default reads from the peer again (unless another reason holds reading paused).
        """
        self._nl_set_paused(_PAUSED_BY_QUEUE, False)  # type: ignore[attr-defined]

    def _nl_queued_more(self, pending: int) -> None:
        high = self.write_high_water
        if high is not None and pending > high and not self.writing_paused:
            self.writing_paused = True
            self.pause_writing()

    def _nl_queued_less(self, pending: int) -> None:
        if self.writing_paused and (pending <= self.write_low_water
                                    or self.write_high_water is None):
            self.writing_paused = False
            self.resume_writing()


def flat(data: Any) -> Any:
    """``data`` (anything but ``bytes``) as a buffer whose length counts bytes, as a socket's
    ``send()`` counts them: a ``bytearray``, or a buffer of one-byte items that has a length,
    as it is; any other buffer (``array('i')``, a memoryview of one, a 0-dimensional or a
    multi-dimensional view, a ``PickleBuffer``) as a one-byte view of its memory. What is not
    a buffer (``str``, ``int``, ``None``, a list) raises TypeError, as asyncore's
    ``out_buffer + data`` did; a view that is not C-contiguous too (the socket would refuse
    it)."""
    if type(data) is bytearray:
        return data
    view = memoryview(data)
    if view.itemsize == 1 and view.ndim == 1 and hasattr(data, "__len__"):
        return data
    return view.cast("B")


def tail(data: Any, start: int) -> Any:
    """The unsent part of a queued entry, without copying when the entry cannot change.

    ``bytes`` (and views of them) are sliced through a memoryview. A ``bytearray`` is copied:
    holding a view of it would forbid its owner to resize it (BufferError) while it waits.
    """
    if type(data) is bytes:
        return memoryview(data)[start:]
    if type(data) is memoryview and data.readonly:
        return data[start:]
    return bytes(memoryview(data)[start:])


def consume(fifo: Deque[Any], sent: int) -> None:
    """Drop the ``sent`` bytes the kernel took from the head of ``fifo``."""
    while sent > 0 and fifo:
        head = fifo[0]
        size = head.nbytes if type(head) is memoryview else len(head)
        if size <= sent:
            fifo.popleft()
            sent -= size
        else:
            if type(head) is memoryview and head.format != "B":
                head = head.cast("B")
            fifo[0] = tail(head, sent)
            return
