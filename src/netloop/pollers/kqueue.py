"""The kqueue(2) poller (BSD, macOS): read and write are separate filters, one kevent each.

EV_EOF on a filter maps to HANGUP, and a non-zero ``fflags`` with EV_EOF carries the socket
error, mapped to ERROR, so the loop sees what poll(2) would report.

As with epoll, closing a registered fd deletes its filters silently. A loop learns of it when the
number is registered again (see interest.py); ``find_closed()``, for a caller that sweeps, reports
at most once per ``SWEEP_INTERVAL`` the registered fds that are no longer open as ``INVALID``
(poll's POLLNVAL). Unlike epoll it cannot tell a number reused by another file.
"""

from __future__ import annotations

import errno
import os
import select as _select_module

from .base import ERROR, HANGUP, INVALID, READ, READ_MASK, WRITE, ClosedFdSweep

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

    from .base import Events


# Typed as Any: the kqueue names exist only on BSD/macOS builds of the select module.
_select: Any = _select_module
_KQUEUE = getattr(_select, "kqueue", None)


class KqueuePoller(ClosedFdSweep):
    name = "kqueue"

    def __init__(self) -> None:
        if _KQUEUE is None:
            raise OSError(errno.ENOSYS, "kqueue is not available on this platform")
        self._kq = _KQUEUE()
        self._masks: Dict[int, int] = {}

    def _control(self, fd: int, old: int, new: int) -> None:
        ke = _select.kevent
        changes: List[Any] = []
        for bit, filt in ((READ_MASK, _select.KQ_FILTER_READ), (WRITE, _select.KQ_FILTER_WRITE)):
            if new & bit and not old & bit:
                changes.append(ke(fd, filt, _select.KQ_EV_ADD))
            elif old & bit and not new & bit:
                changes.append(ke(fd, filt, _select.KQ_EV_DELETE))
        if changes:
            self._kq.control(changes, 0, 0)

    def register(self, fd: int, mask: int) -> None:
        self._control(fd, 0, mask)
        self._masks[fd] = mask

    def modify(self, fd: int, mask: int) -> None:
        self._control(fd, self._masks.get(fd, 0), mask)
        self._masks[fd] = mask

    def unregister(self, fd: int) -> None:
        old = self._masks.pop(fd, 0)
        try:
            self._control(fd, old, 0)
        except OSError:
            pass  # closed already: the kernel dropped its filters

    def poll(self, timeout: Optional[float]) -> Events:
        n = max(len(self._masks) * 2, 1)
        flags: Dict[int, int] = {}
        for kev in self._kq.control(None, n, timeout):
            fd = kev.ident
            bit = READ if kev.filter == _select.KQ_FILTER_READ else WRITE
            if kev.flags & _select.KQ_EV_EOF:
                bit |= HANGUP if not kev.fflags else ERROR | HANGUP
            flags[fd] = flags.get(fd, 0) | bit
        return list(flags.items())

    def _find_closed(self) -> Events:
        # Reported once: the kernel deleted the filters with the fd, so forget it here too.
        closed = []
        for fd in self._masks:
            try:
                os.fstat(fd)
            except OSError:
                closed.append((fd, INVALID))
        for fd, _ in closed:
            del self._masks[fd]
        return closed

    def fileno(self) -> int:
        return int(self._kq.fileno())

    def close(self) -> None:
        self._masks.clear()
        self._kq.close()
