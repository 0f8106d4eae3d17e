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
- Closing a registered fd (``sock.close()`` behind the loop's back) makes epoll forget it without
  a word, where poll(2) would answer POLLNVAL and select(2) EBADF. ``find_closed()`` re-arms
  each registration (``EPOLL_CTL_MOD`` with the same mask) and reports the ones the kernel no
  longer has (EBADF: closed; ENOENT: the number now names another file) as ``INVALID``. It costs
  O(registered descriptors), so the loop does not run it periodically: it finds such a channel
  when the number is registered again (accept() reusing it), where the harm would start.
"""

from __future__ import annotations

import errno
import select as _select

from .base import ClosedFdSweep, INVALID, READ, READ_MASK, WRITE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, Optional

    from .base import Events


_EPOLL = getattr(_select, "epoll", None)


class EpollPoller(ClosedFdSweep):
    name = "epoll"

    def __init__(self, track_closed: bool = True) -> None:
        """``track_closed``: remember what is registered, for ``find_closed()``. A loop does
        not sweep (see pollers.base), so the pollers it makes for itself pass False and save a
        dict entry per connection (and its upkeep on every register and unregister)."""
        if _EPOLL is None:
            raise OSError(errno.ENOSYS, "epoll is not available on this platform")
        self._ep = _EPOLL()
        self._always: Dict[int, int] = {}
        # The loop calls self.poll once per pass: while no regular file is registered, that is
        # the C method itself (it takes None for "block"), saving a Python frame per pass.
        self.poll = self._ep.poll
        # What the kernel holds, for the closed-fd sweep (None: not tracked).
        self._masks: Optional[Dict[int, int]] = {} if track_closed else None
        # For a poller that does not track (a loop's own): the kernel object's register and
        # unregister, without a Python frame. They raise where register()/unregister() take
        # care of the case (a regular file, an fd registered twice or closed already): the
        # loop then calls those (see pollers.base).
        self.kernel_register: Callable[[int, int], None] = (
            self.register if track_closed else self._ep.register)
        self.kernel_unregister: Callable[[int], None] = (
            self.unregister if track_closed else self._ep.unregister)

    def register(self, fd: int, mask: int) -> None:
        try:
            self._ep.register(fd, mask)
        except PermissionError:
            # A regular file (or a directory): never blocks, so always ready, as with poll.
            self._always[fd] = mask
            self.poll = self._poll_with_files
            return
        except FileExistsError:
            self._ep.modify(fd, mask)
        masks = self._masks
        if masks is not None:
            masks[fd] = mask

    def modify(self, fd: int, mask: int) -> None:
        if fd in self._always:
            self._always[fd] = mask
            return
        try:
            self._ep.modify(fd, mask)
        except FileNotFoundError:
            self._ep.register(fd, mask)
        masks = self._masks
        if masks is not None:
            masks[fd] = mask

    def holds(self, fd: int, mask: int) -> bool:
        """Whether the epoll object still holds a registration, made with ``mask``, for the
        file now numbered ``fd``. The kernel drops a registration when its file is closed, so
        after a close and a reuse of the number it answers False; a descriptor that stayed
        open (another socket object on the same number) answers True. Changes nothing."""
        if fd in self._always:
            return False
        try:
            self._ep.modify(fd, mask)
        except (OSError, ValueError):
            return False
        return True

    def unregister(self, fd: int) -> None:
        if self._always and self._always.pop(fd, None) is not None:
            if not self._always:
                self.poll = self._ep.poll
            return
        masks = self._masks
        if masks is not None:
            masks.pop(fd, None)
        try:
            self._ep.unregister(fd)
        except (FileNotFoundError, OSError, ValueError):
            # Already closed (EBADF) or never registered (ENOENT): nothing to undo.
            pass

    #: ``poll(timeout) -> events``: an instance attribute only, set by __init__ (no method of
    #: the same name on the class, whose shadow would make each read of it the interpreter's
    #: generic lookup): the C ``epoll.poll`` itself while no regular file is registered.
    poll: Callable[[Optional[float]], Events]

    def _poll_with_files(self, timeout: Optional[float]) -> Events:
        events: Events = self._ep.poll(0)
        events.extend((fd, mask & (READ | WRITE)) for fd, mask in self._always.items()
                      if mask & (READ_MASK | WRITE))
        return events

    def _find_closed(self) -> Events:
        """The registered fds the kernel dropped because they were closed, as INVALID.

        Each is reported once: the kernel holds nothing for it any more, so it is forgotten
        here too (the loop drops its own record and never unregisters it).
        """
        modify = self._ep.modify
        masks = self._masks
        assert masks is not None  # find_closed() refuses an untracked poller
        closed = []
        for fd, mask in masks.items():
            try:
                modify(fd, mask)
            except OSError:
                closed.append((fd, INVALID))
        for fd, _ in closed:
            del masks[fd]
        return closed

    def fileno(self) -> int:
        return int(self._ep.fileno())

    def close(self) -> None:
        self._always.clear()
        if self._masks is not None:
            self._masks.clear()
        self.poll = self._ep.poll
        self._ep.close()
