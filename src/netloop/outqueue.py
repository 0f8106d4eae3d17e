"""Queued output as chunks of bytes: pure code shared by the buffered dispatcher and chat.

A queue is a deque of byte chunks. What the kernel did not take stays queued as a memoryview of
its unsent tail when the chunk cannot change under us (``bytes``, read-only views), so a slow
reader never makes the sender copy its backlog again and again; anything mutable is copied once.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Deque

__all__ = ["tail", "consume"]


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
