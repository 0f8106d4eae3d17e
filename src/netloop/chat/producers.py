"""Producers and the output queue of a chat channel, as pure code (no sockets).

The queue is asynchat's ``producer_fifo``: a ``collections.deque`` whose entries are, in order,
byte strings (``bytes``, ``bytearray``, ``memoryview``), producers (any object with ``more()``
returning the next bytes, ``b""`` when exhausted) and ``None``, the "close when done" marker.
Legacy code appends to it directly, so it stays a deque; ``ProducerFifo`` is one that also tells
its channel when it stops being empty.

``gather()`` takes the next chunks to send from the head, asking producers for data as it goes,
up to a byte budget (``ac_out_buffer_size``) and a chunk count, without copying: a chunk bigger
than the budget is sent through a memoryview slice. ``consume()`` drops what the kernel took; a
partly sent ``bytes`` stays queued as a memoryview of its unsent tail, so a slow reader never
makes the sender copy its backlog again and again.
"""

from __future__ import annotations

import weakref
from collections import deque

from ..outqueue import consume, tail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Deque, Iterable, List, Optional, Protocol, Tuple
else:
    Protocol = object  # at run time Producer is a plain class: typing stays unimported

__all__ = ["Producer", "SimpleProducer", "ProducerFifo", "gather", "consume", "tail",
           "BYTES_TYPES", "SEND_CHUNKS"]

#: The entry types sent as they are.
BYTES_TYPES = (bytes, bytearray, memoryview)

#: Most chunks handed to one ``sendmsg()`` (Linux takes up to 1024; more rarely helps).
SEND_CHUNKS = 64


class Producer(Protocol):
    """Anything with ``more()``: the next piece of output, ``b""`` once it has no more."""

    def more(self) -> bytes: ...


class SimpleProducer:
    """Hands out ``data`` ``buffer_size`` bytes at a time (asynchat's ``simple_producer``).

    It keeps an offset rather than slicing the rest off after each piece, so producing a large
    ``data`` costs its size once. ``data`` reads as what is left to produce.
    """

    def __init__(self, data: Any, buffer_size: int = 512) -> None:
        self._data = data
        self._start = 0
        self.buffer_size = buffer_size

    @property
    def data(self) -> Any:
        """What is left to produce."""
        return self._data[self._start:] if self._start else self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = value
        self._start = 0

    def more(self) -> Any:
        data = self._data
        start = self._start
        size = self.buffer_size
        if len(data) - start > size:
            self._start = start + size
            return data[start:start + size]
        self._data = data[:0]
        self._start = 0
        return data[start:] if start else data


class ProducerFifo(deque):  # type: ignore[type-arg]
    """A deque that calls its owner's ``_fifo_filled()`` when an append makes it non-empty.

    So a channel learns of ``producer_fifo.append(...)`` done behind its back and asks for write
    readiness. The owner is held weakly (no reference cycle through the queue). Code that knows
    it will flush at once bypasses the notice with ``deque.append(fifo, item)``.
    """

    __slots__ = ("_owner",)

    def __init__(self, iterable: Iterable[Any] = (), owner: Any = None) -> None:
        super().__init__(iterable)
        self._owner: Optional[Callable[[], Any]] = (
            weakref.ref(owner) if owner is not None else None)

    def _filled(self) -> None:
        ref = self._owner
        owner = ref() if ref is not None else None
        if owner is not None:
            owner._fifo_filled()

    def append(self, item: Any) -> None:
        empty = not self
        deque.append(self, item)
        if empty:
            self._filled()

    def appendleft(self, item: Any) -> None:
        empty = not self
        deque.appendleft(self, item)
        if empty:
            self._filled()

    def extend(self, items: Iterable[Any]) -> None:
        empty = not self
        deque.extend(self, items)
        if empty and self:
            self._filled()

    def extendleft(self, items: Iterable[Any]) -> None:
        empty = not self
        deque.extendleft(self, items)
        if empty and self:
            self._filled()

    def insert(self, index: int, item: Any) -> None:
        empty = not self
        deque.insert(self, index, item)
        if empty:
            self._filled()

    def __iadd__(self, items: Iterable[Any]) -> ProducerFifo:  # noqa: PYI034
        self.extend(items)
        return self


def gather(fifo: Deque[Any], budget: int, max_chunks: int = SEND_CHUNKS,
           encoding: Optional[str] = None) -> Tuple[List[Any], int]:
    """The next chunks to send from the head of ``fifo``: ``(chunks, total_size)``.

    At most ``max_chunks`` chunks and ``budget`` bytes (at least one byte is taken if there is
    one). Producers met on the way are asked for data, which is queued in front of them; empty
    entries and exhausted producers are dropped. Stops at the close marker ``None``: an empty
    result with ``None`` at the head means "close now". ``str`` entries are encoded with
    ``encoding`` when one is given (asynchat's ``use_encoding``), else passed on as they are
    (and sending them fails, as it did).
    """
    chunks: List[Any] = []
    total = 0
    budget = max(budget, 1)
    i = 0
    while i < len(fifo) and total < budget and len(chunks) < max_chunks:
        entry = fifo[i]
        if entry is None:
            break
        if not entry:
            del fifo[i]
            continue
        kind = type(entry)
        if kind is not bytes and kind is not bytearray and kind is not memoryview:
            if isinstance(entry, str):
                if encoding is None:
                    # Sending it fails, as it did in asynchat; send what precedes it first.
                    if not chunks:
                        chunks.append(entry)
                        total += len(entry)
                    break
                entry = fifo[i] = entry.encode(encoding)
            elif hasattr(entry, "more"):
                data = entry.more()
                if data:
                    if isinstance(data, str) and encoding is not None:
                        data = data.encode(encoding)
                    deque.insert(fifo, i, data)
                else:
                    del fifo[i]
                continue
            elif not isinstance(entry, BYTES_TYPES):
                try:
                    entry = fifo[i] = memoryview(entry).tobytes()
                except TypeError:
                    # Not a buffer: let the send fail with the caller's object, as asynchat did.
                    if not chunks:
                        chunks.append(entry)
                        total += 1
                    break
                kind = bytes
        size = len(entry) if kind is not memoryview else entry.nbytes
        room = budget - total
        if size > room:
            chunks.append(memoryview(entry).cast("B")[:room] if kind is memoryview
                          else memoryview(entry)[:room])
            total += room
            break
        chunks.append(entry)
        total += size
        i += 1
    return chunks, total


