"""Terminator framing as pure code: bytes go in, data pieces and "terminator found" events come out.

A ``Framer`` cuts a byte stream the way ``asynchat`` does, with no socket and no loop, so it can
be tested whole, byte by byte and split at random. The terminator is one of:

- a non-empty byte string: the stream is cut after each occurrence, even one that arrives split
  across several ``feed()`` calls;
- a positive ``int``: the next that many bytes form one frame;
- ``None`` (or ``0``, or ``b""``): everything is data, no frame ever ends.

Data is handed out as soon as it is known not to belong to a terminator: only a tail that could
be the start of the terminator (at most ``len(terminator) - 1`` bytes) is held back. So the cost
stays linear in the bytes fed however the stream is split: a 10 MB line fed one byte at a time
is 10 M small pieces, never a 10 MB buffer searched again on every byte, and only the held-back
tail is looked at twice. Several frames in one ``feed()`` are walked with an offset, not by
slicing the remainder off after each frame (asynchat's way, quadratic in frames per read).

``max_buffer`` bounds how many bytes one frame may have while a byte-string terminator is awaited
(int frames have the size their reader asked for; ``None`` frames never end). Going over it gives
one ``OVERFLOW`` event before the data that crosses the limit, then the frame goes on unchecked
until its terminator: the reader decides (close, skip, answer with an error).
"""

from __future__ import annotations

from .._lazy import lazy_aliases

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterator, Optional, Tuple, Union

    Terminator = Union[bytes, int, None]
    Event = Tuple[bytes, int]
else:
    __getattr__ = lazy_aliases(globals(), Terminator=lambda t: t.Union[bytes, int, None],
                               Event=lambda t: t.Tuple[bytes, int])

__all__ = ["Framer", "Terminator", "DATA", "FOUND", "OVERFLOW", "find_prefix_at_end"]

#: The event kinds ``Framer.step()`` gives with a data piece.
DATA = 0      # a piece of the current frame; its terminator has not been seen yet
FOUND = 1     # the last piece of the current frame (maybe empty): its terminator came next
OVERFLOW = 2  # the current frame is over ``max_buffer``; no data comes with this event


def find_prefix_at_end(haystack: bytes, needle: bytes) -> int:
    """The length of the longest proper prefix of ``needle`` that ``haystack`` ends with.

    ``find_prefix_at_end(b"qwerty\\r", b"\\r\\n") == 1``. Works for ``str`` too. Only prefixes
    ending with ``haystack``'s last item are tried, so usually one comparison is made.
    """
    k = min(len(needle) - 1, len(haystack))
    if k <= 0:
        return -1 if not needle else 0  # (asynchat's answer for an empty needle: its length - 1)
    last = haystack[-1:]
    while k:
        # The prefix must end with the haystack's last item: jump to the next such prefix.
        j = needle.rfind(last, 0, k)
        if j < 0:
            return 0
        if haystack.endswith(needle[:j + 1]):
            return j + 1
        k = j
    return 0


class Framer:
    """Cuts the bytes given to ``feed()`` at a terminator (see the module docstring).

    The low-level ``step(terminator)`` takes the terminator as an argument so a reader can change
    it after every event (asynchat's ``found_terminator()`` does); ``events()`` uses and updates
    the ``terminator`` attribute instead, counting an int terminator down as data arrives.
    """

    __slots__ = ("_buf", "_over", "_pos", "_size", "max_buffer", "terminator")

    def __init__(self, terminator: Terminator = None, max_buffer: Optional[int] = None) -> None:
        self.terminator: Terminator = terminator
        #: Most bytes a frame may have while a byte-string terminator is awaited (None: no limit).
        self.max_buffer = max_buffer
        # Bytes fed and not handed out yet start at _pos; _buf is b"" when none are left (the
        # chat channel relies on that to take its fast path).
        self._buf = b""
        self._pos = 0
        self._size = 0    # bytes handed out in the current byte-terminated frame
        self._over = False  # OVERFLOW given for the current frame

    def __len__(self) -> int:
        return len(self._buf) - self._pos

    @property
    def pending(self) -> bytes:
        """The bytes fed but not handed out yet (a possible terminator start, or unread)."""
        return self._buf[self._pos:] if self._pos else self._buf

    @property
    def frame_size(self) -> int:
        """Bytes handed out so far in the current frame (byte-string terminators only)."""
        return self._size

    def feed(self, data: bytes) -> None:
        """Add bytes to be cut; nothing is handed out until ``step()`` or ``events()``."""
        if not data:
            return
        if type(data) is not bytes:
            data = bytes(data)
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            self._buf = data
        else:
            # At most a held-back terminator start (or bytes left unread) is copied again.
            self._buf = (buf[pos:] if pos else buf) + data
        self._pos = 0

    def clear(self) -> None:
        """Drop every byte held and start a new frame."""
        self._buf = b""
        self._pos = 0
        self._size = 0
        self._over = False

    def step(self, terminator: Terminator) -> Optional[Event]:
        """Hand out the next event for ``terminator``, or None if more bytes are needed.

        Returns ``(piece, DATA)``, ``(piece, FOUND)`` or ``(b"", OVERFLOW)``. A DATA piece is
        never empty. With an int terminator ``n`` the piece is at most ``n`` bytes: FOUND when it
        has exactly ``n``, DATA (fewer, the buffer ran out) otherwise; the caller counts down.
        """
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if pos >= end:
            return None
        if not terminator:
            self._buf = b""
            self._pos = 0
            return (buf[pos:] if pos else buf), DATA
        if isinstance(terminator, int):
            stop = pos + terminator
            if stop >= end:
                self._buf = b""
                self._pos = 0
                piece = buf[pos:] if pos else buf
                if stop > end:
                    return piece, DATA
            else:
                piece = buf[pos:stop]
                self._pos = stop
            self._size = 0
            self._over = False
            return piece, FOUND
        index = buf.find(terminator, pos)
        limit = self.max_buffer
        if index >= 0:
            if limit is not None and not self._over and self._size + index - pos > limit:
                self._over = True
                return b"", OVERFLOW
            stop = index + len(terminator)
            if stop == end:
                self._buf = b""
                self._pos = 0
            else:
                self._pos = stop
            self._size = 0
            self._over = False
            return buf[pos:index], FOUND
        if len(terminator) > 1:
            # Hold back a tail that may be the start of a terminator split across feeds.
            keep = find_prefix_at_end(buf[pos:] if end - pos < len(terminator) else
                                      buf[end - len(terminator) + 1:], terminator)
            stop = end - keep
            if stop == pos:
                return None
        else:
            keep = 0
            stop = end
        if limit is not None and not self._over and self._size + stop - pos > limit:
            self._over = True
            return b"", OVERFLOW
        self._size += stop - pos
        if keep:
            piece = buf[pos:stop]
            self._buf = buf[stop:]
        else:
            piece = buf[pos:] if pos else buf
            self._buf = b""
        self._pos = 0
        return piece, DATA

    def events(self) -> Iterator[Event]:
        """Every event the bytes fed so far give, with ``self.terminator``.

        An int terminator is counted down as its bytes arrive and is 0 once its frame is found
        (so everything after it is plain data until a new terminator is set), as in asynchat.
        The terminator may be changed between events.
        """
        step = self.step
        while True:
            term = self.terminator
            event = step(term)
            if event is None:
                return
            if term and isinstance(term, int) and event[1] != OVERFLOW:
                self.terminator = 0 if event[1] == FOUND else term - len(event[0])
            yield event
