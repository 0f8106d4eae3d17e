"""The select(2) poller: portable, O(registered fds) per call, limited to FD_SETSIZE descriptors.

select() cannot watch a descriptor numbered FD_SETSIZE (1024 on Linux) or above: CPython raises
"filedescriptor out of range" for the whole call, which would stop every channel at once. This
poller refuses such a descriptor when it is registered instead, naming the fix.
"""

from __future__ import annotations

import select as _select

from .base import PRIORITY, READ, READ_MASK, WRITE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Set

    from .base import Events

#: glibc's FD_SETSIZE; CPython's select() checks descriptors against it.
FD_SETSIZE = 1024


class FDSetSizeError(ValueError):
    """A descriptor too large for select()."""


class SelectPoller:
    name = "select"

    def __init__(self) -> None:
        self._masks: Dict[int, int] = {}
        self._readers: Set[int] = set()
        self._writers: Set[int] = set()
        self._exceptional: Set[int] = set()

    def register(self, fd: int, mask: int) -> None:
        if fd >= FD_SETSIZE:
            raise FDSetSizeError(
                "file descriptor %d is >= FD_SETSIZE (%d), which select() cannot watch; "
                "use poller='epoll' (or 'poll') instead of select" % (fd, FD_SETSIZE)
            )
        if fd < 0:
            raise ValueError("invalid file descriptor %d" % fd)
        self._set(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        self._set(fd, mask)

    def _set(self, fd: int, mask: int) -> None:
        self._masks[fd] = mask
        for wanted, group in ((mask & READ_MASK, self._readers), (mask & WRITE, self._writers),
                              (mask, self._exceptional)):
            # asyncore put every polled fd in the exceptional set: that is how OOB data shows.
            if wanted:
                group.add(fd)
            else:
                group.discard(fd)

    def unregister(self, fd: int) -> None:
        self._masks.pop(fd, None)
        self._readers.discard(fd)
        self._writers.discard(fd)
        self._exceptional.discard(fd)

    def poll(self, timeout: Optional[float]) -> Events:
        if not self._masks:
            # select() with three empty lists just sleeps; keep that (asyncore did).
            if timeout is None:
                raise ValueError("select poller has nothing to wait for and no timeout")
            _select.select([], [], [], timeout)
            return []
        r, w, x = _select.select(self._readers, self._writers, self._exceptional, timeout)
        if not (w or x):
            return [(fd, READ) for fd in r]
        flags: Dict[int, int] = dict.fromkeys(r, READ)
        for fd in w:
            flags[fd] = flags.get(fd, 0) | WRITE
        for fd in x:
            flags[fd] = flags.get(fd, 0) | PRIORITY
        return list(flags.items())

    def find_bad(self) -> Set[int]:
        """The registered descriptors that are closed (after select() failed with EBADF)."""
        bad = set()
        for fd in list(self._masks):
            try:
                _select.select([fd], [], [], 0)
            except (OSError, ValueError):
                bad.add(fd)
        return bad

    def fileno(self) -> int:
        raise ValueError("the select poller has no file descriptor; use epoll or kqueue")

    def close(self) -> None:
        self._masks.clear()
        self._readers.clear()
        self._writers.clear()
        self._exceptional.clear()
