"""The pollers: one per kernel readiness interface, chosen automatically or by name.

``best()`` picks epoll on Linux, kqueue on BSD/macOS, else poll, else select. The environment
variable ``NETLOOP_POLLER`` (a name from ``available()``) overrides that choice for a whole
process, which is how the test suite runs once per backend; an explicit ``poller=`` argument
still wins over it.
"""

from __future__ import annotations

import os
import select as _select

from .._lazy import lazy_aliases
from . import base as _base
from .base import (CLOSED_MASK, ERROR, HANGUP, INVALID, PRIORITY, READ, READ_MASK, WRITE,
                   Poller)
from .epoll import EpollPoller
from .kqueue import KqueuePoller
from .poll import PollPoller
from .select import FD_SETSIZE, FDSetSizeError, SelectPoller

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Union

    from .base import Events
else:
    __getattr__ = lazy_aliases(globals(), Events=lambda t: _base.Events)  # no typing until asked

__all__ = [
    "READ", "WRITE", "PRIORITY", "ERROR", "HANGUP", "INVALID", "READ_MASK", "CLOSED_MASK",
    "Events", "Poller", "SelectPoller", "PollPoller", "EpollPoller", "KqueuePoller",
    "FDSetSizeError", "FD_SETSIZE", "available", "best", "by_name", "create", "ENV_VAR",
]

ENV_VAR = "NETLOOP_POLLER"

_FACTORIES: Dict[str, Callable[[], Poller]] = {}
if hasattr(_select, "epoll"):
    _FACTORIES["epoll"] = EpollPoller
if hasattr(_select, "kqueue"):
    _FACTORIES["kqueue"] = KqueuePoller
if hasattr(_select, "poll"):
    _FACTORIES["poll"] = PollPoller
_FACTORIES["select"] = SelectPoller

if hasattr(_select, "epoll"):
    assert (_select.EPOLLIN, _select.EPOLLPRI, _select.EPOLLOUT, _select.EPOLLERR,
            _select.EPOLLHUP) == (READ, PRIORITY, WRITE, ERROR, HANGUP)
if hasattr(_select, "poll"):
    assert (_select.POLLIN, _select.POLLPRI, _select.POLLOUT, _select.POLLERR,
            _select.POLLHUP, _select.POLLNVAL) == (READ, PRIORITY, WRITE, ERROR, HANGUP, INVALID)


def available() -> List[str]:
    """Names of the pollers this platform offers, best first."""
    return list(_FACTORIES)


#: Drivers named like pollers that live above this layer: a loop "polled" by asyncio (or
#: uvloop) through ``netloop.aio``, which dispatches events through the loop itself. Not in
#: ``available()``; ``NETLOOP_POLLER=asyncio`` runs a whole program's loops hosted.
HOSTED = ("asyncio", "uvloop")


def by_name(name: str) -> Callable[[], Poller]:
    """The poller class called ``name``; ``"auto"`` means ``best()``."""
    if name == "auto":
        return best()
    if name in HOSTED:
        import importlib
        return importlib.import_module("netloop.aio").poller_factory(name)  # type: ignore
    try:
        return _FACTORIES[name]
    except KeyError:
        raise ValueError("unknown or unavailable poller %r (this platform has: %s)"
                         % (name, ", ".join(_FACTORIES))) from None


def best() -> Callable[[], Poller]:
    """The poller to use when none is named: ``$NETLOOP_POLLER``, else the best available."""
    forced = os.environ.get(ENV_VAR)
    if forced and forced != "auto":
        return by_name(forced)
    return next(iter(_FACTORIES.values()))


def create(poller: Union[None, str, Poller] = None, *, track_closed: bool = True) -> Poller:
    """A new poller: ``None`` for the best one, a name, or an instance used as it is.

    ``track_closed=False``: a new epoll poller does not keep the record of its registrations
    that ``find_closed()`` needs (a loop, which never sweeps, makes its own that way).
    """
    if poller is None:
        factory = best()
    elif isinstance(poller, str):
        factory = by_name(poller)
    else:
        return poller
    if factory is EpollPoller and not track_closed:
        return EpollPoller(track_closed=False)
    return factory()
