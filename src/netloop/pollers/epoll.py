"""The epoll(7) poller (Linux): cost per call grows with ready descriptors, not registered ones.

Facts this module relies on:
- The flag values equal poll(2)'s, so events go to the loop untranslated.
- Registration is level-triggered: an fd that stays readable is reported on every call, as with
  select and poll, which is what asyncore semantics need.
- ``EPOLLERR``/``EPOLLHUP`` are always reported, even with an empty mask, so a channel that wants
  nothing must be unregistered, not modified to 0 (the loop does so), or a hung-up socket spins.
- A registration belongs to the open file description: closing the last fd that refers to it
  drops it silently. Unregistering an fd that was already closed fails with EBADF (ignored).
- Regular files cannot be registered (EPERM). select and poll call them always ready; so does this
  poller, by keeping them aside and reporting them on every call (with a zero timeout).
- The epoll object is shared with a forked child: a child must build its own (the loop does).
"""

from __future__ import annotations

import errno
import select as _select
from typing import Dict, Optional

from .base import READ, READ_MASK, WRITE, Events

_EPOLL = getattr(_select, "epoll", None)


class EpollPoller:
    name = "epoll"

    def __init__(self) -> None:
        if _EPOLL is None:
            raise OSError(errno.ENOSYS, "epoll is not available on this platform")
        self._ep = _EPOLL()
        self._always: Dict[int, int] = {}

    def register(self, fd: int, mask: int) -> None:
        try:
            self._ep.register(fd, mask)
        except PermissionError:
            # A regular file (or a directory): never blocks, so always ready, as with poll.
            self._always[fd] = mask
        except FileExistsError:
            self._ep.modify(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        if fd in self._always:
            self._always[fd] = mask
            return
        try:
            self._ep.modify(fd, mask)
        except FileNotFoundError:
            self._ep.register(fd, mask)

    def unregister(self, fd: int) -> None:
        if self._always.pop(fd, None) is not None:
            return
        try:
            self._ep.unregister(fd)
        except (FileNotFoundError, OSError, ValueError):
            # Already closed (EBADF) or never registered (ENOENT): nothing to undo.
            pass

    def poll(self, timeout: Optional[float]) -> Events:
        if self._always:
            events = self._ep.poll(0)
            events.extend((fd, mask & (READ | WRITE)) for fd, mask in self._always.items()
                          if mask & (READ_MASK | WRITE))
            return events
        return self._ep.poll(-1 if timeout is None else timeout)

    def fileno(self) -> int:
        return self._ep.fileno()

    def close(self) -> None:
        self._always.clear()
        self._ep.close()
