"""The poll(2) poller: no descriptor limit, O(registered fds) per call in the kernel."""

from __future__ import annotations

import math
import select as _select

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Set

    from .base import Events


class PollPoller:
    name = "poll"

    def __init__(self) -> None:
        self._poll = _select.poll()
        self._fds: Set[int] = set()

    def register(self, fd: int, mask: int) -> None:
        self._poll.register(fd, mask)
        self._fds.add(fd)

    def modify(self, fd: int, mask: int) -> None:
        self._poll.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        self._fds.discard(fd)
        try:
            self._poll.unregister(fd)
        except KeyError:
            pass

    def poll(self, timeout: Optional[float]) -> Events:
        if timeout is None:
            return self._poll.poll()
        # Round up: a 0.4 ms timer must not turn into a busy poll(0).
        return self._poll.poll(math.ceil(timeout * 1000) if timeout > 0 else 0)

    def fileno(self) -> int:
        raise ValueError("the poll poller has no file descriptor; use epoll or kqueue")

    def close(self) -> None:
        for fd in list(self._fds):
            self.unregister(fd)
