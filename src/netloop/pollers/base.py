"""Event flags and the interface every poller offers.

The flag values are poll(2)'s own (``POLLIN`` = 1, ``POLLPRI`` = 2, ``POLLOUT`` = 4,
``POLLERR`` = 8, ``POLLHUP`` = 16, ``POLLNVAL`` = 32). Linux gives epoll's ``EPOLLIN``... the same
values, so the poll and epoll pollers hand the kernel's flags to the loop untranslated; select and
kqueue build them. A poller reports ``ERROR``/``HANGUP`` whether or not they were asked for (as
the kernel does).

Pollers whose kernel object forgets a closed fd without a word (epoll, kqueue) also offer
``find_closed() -> Events``, an O(registered) check that reports such fds as ``INVALID`` (poll's
POLLNVAL), each once, at most once per ``SWEEP_INTERVAL``. The loop does not call it (its cost
grew with idle connections); it finds a lost descriptor when the number is registered again.

A poller may also offer ``kernel_register(fd, mask)`` and ``kernel_unregister(fd)``: the same
as ``register``/``unregister`` in the usual case (a socket, registered once), as C calls; in any
other case they may raise, and the caller then calls ``register``/``unregister``. The loop
uses them for each connection it registers and forgets.
"""

from __future__ import annotations

from time import monotonic

from .._lazy import lazy_aliases

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Protocol, Tuple

    Events = List[Tuple[int, int]]
else:
    # At run time Poller is a plain class (typing stays unimported); Events is made on demand.
    Protocol = object
    __getattr__ = lazy_aliases(globals(), Events=lambda t: t.List[t.Tuple[int, int]])

READ = 0x001
PRIORITY = 0x002
WRITE = 0x004
ERROR = 0x008
HANGUP = 0x010
INVALID = 0x020

#: What a channel that wants to read registers: data and out-of-band data.
READ_MASK = READ | PRIORITY
#: Flags that say the descriptor is dead or in error.
CLOSED_MASK = ERROR | HANGUP | INVALID


class Poller(Protocol):
    """One long-lived kernel object that watches file descriptors.

    ``register`` may raise ``OSError`` (a closed fd: ``EBADF``) or ``ValueError`` (a descriptor
    the backend cannot watch, such as select's FD_SETSIZE limit); the loop reports both to the
    channel concerned. ``poll(None)`` blocks until an event; ``poll(0)`` never blocks.
    """

    name: str

    def register(self, fd: int, mask: int) -> None: ...
    def modify(self, fd: int, mask: int) -> None: ...
    def unregister(self, fd: int) -> None: ...
    def poll(self, timeout: Optional[float]) -> Events: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


#: Seconds between two sweeps for descriptors closed behind the poller's back.
SWEEP_INTERVAL = 1.0


class ClosedFdSweep:
    """For pollers whose kernel drops a closed descriptor without a word (epoll, kqueue).

    The subclass keeps ``_masks`` (what it registered; None if it was made not to track, as
    a loop makes its own epoll poller) and ``_find_closed()`` (which of those the kernel no
    longer has, as ``INVALID`` events, forgotten once reported). ``find_closed()`` runs that
    check at most once per ``SWEEP_INTERVAL``; a loop never calls it (see the module doc).
    """

    _masks: Optional[Dict[int, int]]
    _next_sweep = 0.0

    def find_closed(self) -> Events:
        """Registered fds the kernel dropped because they were closed, as ``INVALID``."""
        if self._masks is None:
            raise RuntimeError("this poller does not track its registrations "
                               "(made with track_closed=False)")
        if not self._masks:
            return []
        now = monotonic()
        if now < self._next_sweep:
            return []
        self._next_sweep = now + SWEEP_INTERVAL
        return self._find_closed()

    def _find_closed(self) -> Events:  # pragma: no cover - defined by each poller
        raise NotImplementedError
