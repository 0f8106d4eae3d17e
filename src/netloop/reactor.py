"""The reactor: a channel map driven over a poller, with timers and thread-safe wake-up.

A ``Loop`` serves one channel map (a plain ``dict`` of fd -> channel, as asyncore used). It keeps
one kernel registration per fd and changes it only when the channel's interest changes, so a pass
costs O(ready events), however many idle channels there are:

- Channels whose class keeps netloop's own ``readable()``/``writable()`` ("known" interest) tell
  the loop when their answer changes (connect, listen, send backlog filled or drained).
- Channels whose class overrides either predicate, and foreign objects put in the map by hand,
  are "asked": ``readable()``/``writable()`` are called before every poll (asyncore's semantics,
  the default) or, with ``scan=False``, at the start of the first pass after registration (or
  after ``_update_interest()``) and after each of their own events. Never inside registration:
  ``add_channel()``, ``connect()`` and ``listen()`` run inside a subclass's ``__init__``, before
  it has set what its predicates read.
- Entries added to or removed from the map behind the loop's back (``map[fd] = obj``) are found
  by a size check each pass and reconciled then. Keys may be descriptors, objects with
  ``fileno()`` (as select() took), or None (a dispatcher with no socket: held, never watched).

Within one pass a channel closed by an earlier callback gets no further callback, and a new
channel that reuses its fd does not receive the old channel's events.

A descriptor closed behind its channel's back (``os.close()`` by user code) is found when the
loop next has to do with that number: poll's POLLNVAL, select's EBADF, the poller refusing it,
or a new channel registering the same number (accept() reused it). The loss is logged, and the
stale channel's socket object is detached, never closed, so that neither its close nor its
garbage collection closes the descriptor that now belongs to someone else. There is no
periodic sweep of all registered descriptors: it cost O(connections) per second.

A loop runs in one place at a time: ``run()``, ``run_forever()`` and ``run_once()`` raise
RuntimeError while it runs (from a callback or another thread); the legacy ``loop()`` and
``asyncore.poll()`` may nest inside a handler, as in asyncore. ``stop()`` is never lost: asked
before a run, the run makes one pass that does not block.

The loop's kernel objects (poller, wake-up pipe) are taken on first use and, for the loop that
serves a map implicitly (``get_loop``, ``loop()``), given back when the map is empty and nothing
is scheduled, or when nobody but the loop holds the map any more (a map made for one call), so
short-lived maps leak no descriptors. ``Loop(map)`` made by the user keeps them until
``close()``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import weakref
from _weakref import _remove_dead_weakref  # type: ignore[attr-defined]
from _thread import allocate_lock
from _thread import get_ident as _get_ident
from collections import deque
from errno import EBADF

from ._lazy import lazy_aliases
from .errors import DISCONNECTED, RERAISED
from .pollers import (CLOSED_MASK, ERROR, HANGUP, INVALID, PRIORITY, READ, READ_MASK, WRITE,
                      FDSetSizeError, SelectPoller, by_name, create)
from .timers import TimerHandle, TimerQueue
from .waker import Waker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Deque, Dict, List, MutableMapping, Optional, Set, Tuple, Union

    from .pollers import Poller

    ChannelMap = MutableMapping[int, Any]
else:
    # Type aliases only (typing is not needed at run time; see _lazy).
    __getattr__ = lazy_aliases(globals(), ChannelMap=lambda t: t.MutableMapping[int, t.Any])

# logging, signal and threading are imported up front: a fault path (running out of
# descriptors) must never need an import, which opens files.
logger = logging.getLogger("netloop")

__all__ = ["Loop", "get_loop", "loop", "socket_map", "ChannelMap"]

#: Reasons a channel does not read (bits of ``channel._nl_paused``; it reads when none holds):
#: ``Loop.pause_reading()``; its output queue over the high watermark; end of input seen;
#: a listener resting after accept() failed or a connection limit was reached.
PAUSED_BY_USER = 1
PAUSED_BY_QUEUE = 2
PAUSED_AT_EOF = 4
PAUSED_RESTING = 8

#: The process-wide default channel map (asyncore's ``socket_map``).
socket_map: Dict[int, Any] = {}

# id(map) -> a weak reference to the Loop serving it: a loop nobody holds and that serves
# nothing goes away (and its entry with it). A Loop holds its map, so the id cannot be reused
# while the entry lives. A plain dict of references rather than a WeakValueDictionary: its
# lookups are C calls, and dispatchers make one per connection set up and torn down.
_loops: "Dict[int, weakref.ref[Loop]]" = {}
# Loops holding kernel objects, kept alive while they do.
_active: Set["Loop"] = set()


def _lookup(map: ChannelMap) -> Optional["Loop"]:
    ref = _loops.get(id(map))
    return ref() if ref is not None else None


def _register(lp: "Loop") -> None:
    key = id(lp.map)

    def forget(ref: "weakref.ref[Loop]") -> None:
        # Only if the entry is still this dead reference (another loop may serve the map
        # now), in one step, as WeakValueDictionary does: GC may run this on any thread.
        _remove_dead_weakref(_loops, key)

    _loops[key] = weakref.ref(lp, forget)


def _as_map(map: Any) -> ChannelMap:
    """The channel map a caller means by ``map``: a ``Loop`` stands for the map it serves.

    Anything else must be a mapping that takes item assignment (a dict, as asyncore used).
    """
    if isinstance(map, Loop):
        return map.map
    if not (hasattr(map, "__setitem__") and hasattr(map, "get")):
        raise TypeError("map must be a channel map (a dict of fd -> channel, as asyncore "
                        "used) or a netloop.Loop, not %s" % type(map).__name__)
    return map  # type: ignore[no-any-return]


def get_loop(map: Optional[ChannelMap] = None) -> "Loop":
    """The loop that serves ``map`` (the default ``socket_map`` when None), made if needed.

    ``map`` may also be a ``Loop`` (which is returned).
    """
    if map is None:
        map = socket_map
    elif type(map) is not dict:
        map = _as_map(map)
    ref = _loops.get(id(map))
    lp = ref() if ref is not None else None
    if lp is None or lp._closed:
        _release_abandoned()
        lp = Loop(map)
        lp._implicit = True
    return lp


_getrefcount = getattr(sys, "getrefcount", None)


def _key_fd(key: Any) -> Optional[int]:
    """The descriptor of a map key that is not an int (a socket object), None if none."""
    if key is None:
        return None
    try:
        fd = key.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if type(fd) is int and fd >= 0 else None


def _detach(sock: Any) -> None:
    """Make a socket object forget its descriptor without closing it."""
    detach = getattr(sock, "detach", None)
    if detach is not None:
        try:
            detach()
        except (OSError, ValueError):
            pass


def _close_retired(obj: Any) -> None:
    """Tell a channel retired by the loop (its descriptor was lost) that it is closed."""
    try:
        obj.handle_close()
    except RERAISED:
        raise
    except BaseException:
        logger.error("netloop: exception closing retired channel %s", type(obj).__name__,
                     exc_info=True)
        try:
            obj.close()
        except Exception:
            pass


def _release_abandoned() -> None:
    """Give back the kernel objects of implicit loops whose map nobody holds any more.

    A map made for one call (``asyncore.poll(t, map={sock: obj})`` on every tick) gets an
    implicit loop that keeps its map, and so its channels, forever: the map never empties,
    so the loop would keep its poller and wake-up pipe. When the only reference to such a
    map is the loop's own, nobody can pass that map again, so the loop is released (and, as
    nothing holds it then, freed). Called when a new implicit loop is made: what the one-shot
    pattern costs stays one loop's descriptors, however many calls. Maps held elsewhere (the
    module's ``socket_map``, a program's own dict, the ``_map`` of its channels) keep their
    loop and registrations, so ``loop(count=1)`` on a long-lived map stays O(events).
    """
    if _getrefcount is None:  # pragma: no cover - not CPython: keep them
        return
    for lp in list(_active):
        # 2: the loop's attribute and getrefcount's own argument.
        if (lp._implicit and not lp._running and lp._thread_id is None
                and not lp._signal_handlers and _getrefcount(lp.map) <= 2):
            lp._release()


class Loop:
    """An event loop over one channel map.

    ``map``: the channel map to serve (a new empty dict when None). ``poller``: a poller name
    ("epoll", "poll", "select", "kqueue", "auto"), a poller instance, or None for the best one
    (``$NETLOOP_POLLER`` overrides the automatic choice). ``clock``: the monotonic clock used by
    timers (inject a manual clock in tests). ``scan``: ask channels that override
    ``readable()``/``writable()`` before every poll (True, asyncore's semantics) or only after
    their own events (False, cheaper when those predicates depend on the channel alone).
    """

    _closed = False
    _implicit = False
    _acquired = False

    def __init__(self, map: Optional[ChannelMap] = None,
                 poller: Union[None, str, Poller] = None, *,
                 clock: Optional[Callable[[], float]] = None, scan: bool = True) -> None:
        if map is None:
            map = {}
        elif type(map) is not dict:
            map = _as_map(map)
        if isinstance(poller, str):
            by_name(poller)  # an unknown name fails here, not at the first run
        existing = _lookup(map)
        if existing is not None and not existing._closed:
            if existing._implicit and not existing._acquired:
                existing._closed = True
            else:
                raise ValueError("this map is already served by %r; use get_loop(map)" % existing)
        self.map: ChannelMap = map
        self._poller_spec = poller
        self._clock: Callable[[], float] = clock or time.monotonic
        self._scan_asked = scan
        self._poller: Optional[Poller] = None
        self._waker: Optional[Waker] = None
        self._wake_fd = -1
        self._objs: Dict[Any, Any] = {}      # map key -> channel as registered
        # fd -> map key, for keys that are not the fd itself: socket objects (anything with
        # fileno(), as select() took). A key of None (a dispatcher with no socket, as
        # asyncore stored it) is held in _objs and never handed to the poller.
        self._alias: Dict[int, Any] = {}
        # fds of asked channels whose predicates have not been asked since they were
        # registered or their interest may have changed: asked at the start of the next pass,
        # never inside registration (a subclass's __init__ may not have set their state yet).
        self._to_ask: Set[int] = set()
        self._masks: Dict[int, int] = {}     # fd -> mask registered with the poller (never 0)
        self._asked: Dict[int, Any] = {}     # fd -> channel whose interest is asked
        # fds of channels whose class keeps Dispatcher.handle_read_event: for those the loop
        # calls handle_read() itself when connected (the same routing, one call less).
        self._direct: Set[int] = set()
        self._closed_fds: Set[int] = set()   # fds removed during the current dispatch
        self._bad: List[int] = []            # fds the poller refused as closed: report them
        # Channels select() refused (fd >= FD_SETSIZE) since the last one it took: one log line
        # per such episode, not per connection (see _refuse_fd).
        self._fd_refusals = 0
        self._dispatching = False
        # (socket, address) just accepted by a listener of this loop, for the handler made in
        # the same pass (see Dispatcher.accept); dropped at the end of each dispatch pass.
        self._accepted: Optional[Tuple[Any, Any]] = None
        # The listener (with connection limits) that accepted _accepted's socket, if it counts
        # the connection: a dispatcher made for that socket reports its close to it.
        self._accepted_by: Any = None
        # A descriptor held in reserve while the loop holds its kernel objects (see
        # spare_descriptor()): given up when the process runs out, to log or shed load.
        self._reserve = -1
        self._timers = TimerQueue(self._clock)
        self._ready: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = deque()
        self._signal_handlers: Dict[int, Tuple[Callable[..., Any], Tuple[Any, ...]]] = {}
        self._old_wakeup_fd: Optional[int] = None
        self._stopping = False
        self._running = 0
        self._thread_id: Optional[int] = None
        # Held for the whole of a run (its holder is _thread_id): one run at a time.
        self._run_lock = allocate_lock()
        self._acquired = False
        self._implicit = False
        self._closed = False
        # True while a pass needs _prepare(): not acquired, forked, asked channels to scan, or
        # bad fds to report.
        self._slow = True
        # Called when work is scheduled from outside a pass (see _scheduled); set while the
        # loop holds its kernel objects: the poller's notify() if it has one, else _wake.
        self._notify: Optional[Callable[[], None]] = None
        # asyncore's select() loop never called handle_close() for a hang-up: the channel found
        # out by reading. poll()-style dispatch (the default) does. The drop-in loop() picks
        # the one its use_poll asks for.
        self._hup_closes = True
        # An exception out of handle_close()/handle_error() is logged and the channel removed
        # (True), or let out of the loop as asyncore did (False: the drop-in loop()/poll()).
        self._contain = True
        _register(self)

    @property
    def scan(self) -> bool:
        """Ask overriding channels before every poll (True) or after their own events only."""
        return self._scan_asked

    @scan.setter
    def scan(self, value: bool) -> None:
        self._scan_asked = bool(value)
        self._recompute_slow()

    def _recompute_slow(self) -> None:
        self._slow = (not self._acquired or (bool(self._asked) and self._scan_asked)
                      or bool(self._to_ask) or bool(self._bad) or self._stopping)

    # ------------------------------------------------------------------ kernel objects
    def _acquire(self) -> None:
        if self._closed:
            raise RuntimeError("the loop is closed")
        current = _lookup(self.map)
        if current is not self:
            if current is not None and not current._closed and current._acquired:
                raise RuntimeError("this map is now served by another loop")
            _register(self)
        self._poller = create(self._poller_spec)
        bind = getattr(self._poller, "bind", None)
        if bind is not None:
            # A driver that dispatches events itself (netloop.aio's AsyncioPoller) through
            # this loop's _dispatch, and runs its timers and queued calls.
            bind(self)
        self._waker = Waker()
        self._wake_fd = self._waker.rfd
        self._poller.register(self._wake_fd, READ)
        self._notify = getattr(self._poller, "notify", None) or self._wake
        self._timers.on_schedule = self._scheduled
        self._take_reserve()
        self._acquired = True
        _active.add(self)
        self._reconcile()
        self._recompute_slow()

    def _release(self) -> None:
        """Give back the kernel objects; the loop can take them again on next use."""
        if not self._acquired:
            return
        self._acquired = False
        self._slow = True
        self._notify = None
        self._timers.on_schedule = None
        _active.discard(self)
        for obj in self._objs.values():
            if getattr(obj, "_nl_loop", None) is self:
                try:
                    obj._nl_loop = None
                except AttributeError:
                    pass
        self._objs.clear()
        self._alias.clear()
        self._masks.clear()
        self._asked.clear()
        self._to_ask.clear()
        self._direct.clear()
        self._bad.clear()
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        self._wake_fd = -1
        self._give_up_reserve()

    def _take_reserve(self) -> None:
        if self._reserve < 0:
            try:
                self._reserve = os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                self._reserve = -1  # out of descriptors already: try again when one is freed

    def _give_up_reserve(self) -> None:
        fd, self._reserve = self._reserve, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def spare_descriptor(self) -> "_Spare":
        """A context manager that frees the loop's reserved descriptor for its block.

        The loop holds one descriptor (``/dev/null``) in reserve while it holds its kernel
        objects, as Twisted does. When the process is out of descriptors, code that must have
        one (to accept a connection only to close it, or a log handler that opens a file)
        runs inside ``with loop.spare_descriptor():``; the reserve is taken again after.
        """
        return _Spare(self)

    def release(self) -> None:
        """Give back the poller and the wake-up pipe now; the next pass takes new ones.

        For a loop that will be idle for long (a server between ``serve_forever()`` calls).
        Channels stay in the map and are registered again on the next pass.
        """
        if self.running:
            raise RuntimeError("cannot release a running loop")
        self._release()

    @property
    def thread_id(self) -> Optional[int]:
        """The ident of the thread running the loop (``run``/``run_once``), else None."""
        return self._thread_id

    def _maybe_release(self) -> None:
        if (self._implicit and self._acquired and not self._running and not self.map
                and not self._timers and not self._ready and not self._signal_handlers):
            self._release()

    def _detach_after_fork(self) -> None:
        """In a forked child: drop the parent's kernel objects without touching them.

        The epoll instance and the wake-up pipe are shared with the parent, so the child must
        not unregister anything (that would change the parent's registrations): it closes its
        copies of the descriptors only, and takes fresh ones on its next pass. Signal handlers
        installed by the parent's loop are restored to their defaults in the child.
        """
        for closer in (self._poller, self._waker):
            if closer is not None:
                try:
                    closer.close()  # closes this process's descriptor copies only
                except OSError:
                    pass  # kqueue descriptors are not inherited by a child
        self._poller = None
        self._waker = None
        self._wake_fd = -1
        self._give_up_reserve()  # the child's own copy; the parent keeps its own
        self._notify = None
        self._timers.on_schedule = None
        self._acquired = False
        self._slow = True
        _active.discard(self)
        self._objs.clear()
        self._alias.clear()
        self._masks.clear()
        self._asked.clear()
        self._to_ask.clear()
        self._direct.clear()
        self._bad.clear()
        self._running = 0
        self._thread_id = None
        # A run of the parent's may have held it; if this child returns into that run, the run
        # releases the old lock object, not this one.
        self._run_lock = allocate_lock()
        for signum in list(self._signal_handlers):
            try:
                signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT
                              else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._signal_handlers.clear()
        self._old_wakeup_fd = None

    def set_poller(self, poller: Union[None, str, Poller]) -> None:
        """Serve the map with another poller from the next pass on."""
        if self.running:
            raise RuntimeError("cannot change the poller of a running loop")
        if isinstance(poller, str):
            by_name(poller)
        self._poller_spec = poller
        if self._acquired:
            self._release()

    @property
    def poller(self) -> Poller:
        """The poller in use (taken now if the loop has none yet)."""
        if not self._acquired:
            self._acquire()
        assert self._poller is not None
        return self._poller

    def fileno(self) -> int:
        """The poller's own descriptor (epoll, kqueue), readable when a pass has work to do.

        A host loop watches it and runs ``run_once(0)`` when it is readable, and again after
        the delay that ``run_once`` returned (the next timer). Work scheduled from outside a
        pass (``call_soon``, ``call_later``, ``stop``, a timer's ``reset``) makes it readable
        at once through the wake-up pipe, so the host learns the new delay. select and poll
        have no such descriptor (ValueError): host those with ``netloop.aio.attach`` (asyncio
        watches each channel's descriptor), or call ``run_once`` from the host's own loop.
        """
        return self.poller.fileno()

    def close(self) -> None:
        """Release the poller, the wake-up pipe and the timers. Channels stay in the map."""
        if self._closed:
            return
        for signum in list(self._signal_handlers):
            self.remove_signal_handler(signum)
        self._release()
        self._timers.close()
        self._ready.clear()
        self._closed = True
        if _lookup(self.map) is self:
            del _loops[id(self.map)]

    def __repr__(self) -> str:
        name = self._poller.name if self._poller is not None else (self._poller_spec or "auto")
        state = "closed" if self._closed else ("running" if self._running else "idle")
        return "<netloop.Loop %s %s channels=%d>" % (name, state, len(self.map))

    # ------------------------------------------------------------------ interest
    def _add(self, key: Any, obj: Any) -> None:
        """Register the channel the map holds under ``key``. Never calls its predicates."""
        old = self._objs.get(key)
        if old is not None:
            if old is obj:
                return
            self._discard(key)
            if type(key) is int:
                self._retire_stale(key, old, obj)
        self._objs[key] = obj
        if type(key) is int:
            fd = key
            try:
                obj._nl_loop = self
            except AttributeError:
                pass
        else:
            # A socket object as the key (select() took anything with fileno()), or None (a
            # dispatcher with no socket: held, never watched). Such a map is usually made for
            # one call; the channel's own loop, if it has one, keeps hearing from it.
            found = _key_fd(key)
            if found is None or found in self._objs:
                return
            fd = found
            self._alias[fd] = key
            if getattr(obj, "_nl_loop", None) is None:
                try:
                    obj._nl_loop = self
                except AttributeError:
                    pass
        cls = type(obj)
        if getattr(cls, "_nl_plain_read", False):
            self._direct.add(fd)
        else:
            self._direct.discard(fd)
        if getattr(cls, "_nl_known", False):
            self._set_mask(fd, obj._nl_mask())
        else:
            # Asked at the start of the next pass, as asyncore asked, never here: the channel
            # may be registering from inside its subclass's __init__, before that has set
            # the state its readable()/writable() read.
            self._asked[fd] = obj
            self._to_ask.add(fd)
            self._slow = True

    def _retire_stale(self, fd: int, old: Any, new: Any) -> None:
        """``new`` registers under ``fd`` while ``old`` still holds it: ``old``'s descriptor was
        closed behind its back and the number reused (by accept(), say). Retire ``old``
        without touching the descriptor, which is ``new``'s now."""
        sock = getattr(old, "socket", None)
        if sock is None or sock is getattr(new, "socket", None):
            return  # a foreign object replaced by hand, or a socket handed over: not stale
        try:
            claimed = sock.fileno()
        except Exception:
            claimed = -1
        if claimed not in (fd, -1):
            return
        logger.warning("netloop: fd %d was closed behind the back of its %s channel and now "
                       "belongs to a new %s; retiring the old channel",
                       fd, type(old).__name__, type(new).__name__)
        # Detached, not closed: closing it (or its garbage collection) would close the new
        # connection's descriptor.
        _detach(sock)
        try:
            old._fileno = None
        except AttributeError:
            pass
        self._ready.append((_close_retired, (old,)))
        self._slow = True

    def _discard(self, key: Any) -> None:
        obj = self._objs.pop(key, None)
        fd: int
        if type(key) is int:
            fd = key
            if obj is None and fd in self._alias:  # a socket-keyed entry, named by its fd
                key = self._alias.pop(fd)
                obj = self._objs.pop(key, None)
        else:
            found: Optional[int] = None
            for afd, akey in self._alias.items():
                if akey is key:
                    found = afd
                    break
            if found is None:  # None, or a key never watched
                if obj is not None and getattr(obj, "_nl_loop", None) is self:
                    obj._nl_loop = None
                return
            fd = found
            del self._alias[fd]
        if self._asked.pop(fd, None) is not None and not self._asked:
            self._recompute_slow()
        self._to_ask.discard(fd)
        self._direct.discard(fd)
        if self._masks.pop(fd, 0) and self._poller is not None:
            self._poller.unregister(fd)
        if self._dispatching:
            self._closed_fds.add(fd)
        if obj is not None and getattr(obj, "_nl_loop", None) is self:
            try:
                obj._nl_loop = None
            except AttributeError:
                pass
        if not self.map and not self._running:
            self._maybe_release()

    def _update(self, obj: Any) -> None:  # obj: a registered channel
        """A channel's interest may have changed: re-register it if it did.

        A channel whose predicates are its own is not asked here (this runs inside connect(),
        listen() and the like, maybe before its __init__ is done) but at the start of the
        next pass.
        """
        fd = obj._fileno
        if self._objs.get(fd) is not obj:
            key = self._alias.get(fd) if fd is not None else None
            if key is None or self._objs.get(key) is not obj:
                return
        if fd in self._asked:
            self._to_ask.add(fd)
            self._slow = True
        else:
            self._set_mask(fd, obj._nl_mask())  # type: ignore[union-attr]  # mypy narrows Any

    def _reask(self, fd: int, obj: Any) -> None:
        """Ask a channel's predicates now (after its own events) and re-register on change."""
        key = self._alias.get(fd, fd) if self._alias else fd
        if self._objs.get(key) is obj:
            mask = self._ask(obj, self._masks.get(fd, 0))
            if self._objs.get(key) is obj:
                self._set_mask(fd, mask)

    def _ask_pending(self) -> None:
        """Ask the channels registered (or changed) since the last pass."""
        fds = list(self._to_ask)
        self._to_ask.clear()
        asked = self._asked
        for fd in fds:
            obj = asked.get(fd)
            if obj is not None:
                self._reask(fd, obj)

    def _ask(self, obj: Any, current: int) -> int:
        try:
            mask = READ_MASK if obj.readable() and not getattr(obj, "_nl_paused", 0) else 0
            if obj.writable() and not getattr(obj, "accepting", False):
                mask |= WRITE
        except RERAISED:
            raise
        except BaseException as err:
            _route_failure(obj, err, self)
            return current
        return mask

    def _set_mask(self, fd: int, mask: int) -> None:
        masks = self._masks
        old = masks.get(fd, 0)
        if mask == old:
            return
        poller = self._poller
        assert poller is not None
        try:
            if not old:
                poller.register(fd, mask)
                if self._fd_refusals:
                    self._end_fd_refusals(fd)
            elif not mask:
                poller.unregister(fd)
            else:
                poller.modify(fd, mask)
        except FDSetSizeError as err:
            self._refuse_fd(fd, err)
            return
        except (OSError, ValueError) as err:
            # A descriptor closed behind the channel's back (poll would say POLLNVAL), or one
            # the poller cannot watch (select's FD_SETSIZE: ValueError).
            if getattr(err, "errno", None) != EBADF:  # else logged as closed, by _lost()
                logger.warning("netloop: cannot watch fd %d (%s); closing its channel", fd, err)
            masks.pop(fd, None)
            self._bad.append(fd)
            self._slow = True
            return
        if mask:
            masks[fd] = mask
        else:
            del masks[fd]

    def _refuse_fd(self, fd: int, err: FDSetSizeError) -> None:
        # Past FD_SETSIZE every new connection is refused until lower descriptors are free
        # again: a server under load would log one line per connection, so log the first
        # refusal of an episode and count the rest. The channel is closed all the same.
        if not self._fd_refusals:
            logger.warning("netloop: cannot watch fd %d (%s); closing channels whose "
                           "descriptors select() cannot watch until it can watch new ones "
                           "again", fd, err)
        self._fd_refusals += 1
        self._masks.pop(fd, None)
        self._bad.append(fd)
        self._slow = True

    def _end_fd_refusals(self, fd: int) -> None:
        logger.warning("netloop: select() watches new descriptors again (fd %d); %d channel(s) "
                       "closed because their descriptors were too large", fd, self._fd_refusals)
        self._fd_refusals = 0

    def _reconcile(self) -> None:
        map = self.map
        objs = self._objs
        for key in [key for key, obj in objs.items() if map.get(key) is not obj]:
            self._discard(key)
        for key, obj in list(map.items()):
            if objs.get(key) is not obj:
                self._add(key, obj)

    def _scan(self) -> None:
        # Every pass for legacy code (asked channels, scan=True): keep the loop body lean.
        objs = self._objs
        masks = self._masks
        if self._to_ask:
            self._to_ask.clear()
        if self._alias:
            for fd, obj in list(self._asked.items()):
                self._reask(fd, obj)
            return
        for fd, obj in list(self._asked.items()):
            if objs.get(fd) is obj:
                current = masks.get(fd, 0)
                mask = self._ask(obj, current)
                if mask != current and objs.get(fd) is obj:
                    self._set_mask(fd, mask)

    def pause_reading(self, channel: Any, delay: Optional[float] = None) -> None:
        """Stop reading from ``channel`` (for ``delay`` seconds, or until ``resume_reading``).

        Only read interest is taken away: a channel with queued output goes on writing it, so
        pausing a channel never stops its queue from draining. This pause is the user's own
        reason; reading paused by a full output queue (see ``BufferedDispatcher``'s
        watermarks) or at end of input is counted apart, and the channel reads again only when
        no reason holds.
        """
        _set_paused(channel, PAUSED_BY_USER, True, self)
        if delay is not None:
            self.call_later(delay, self.resume_reading, channel)

    def resume_reading(self, channel: Any) -> None:
        """End a ``pause_reading()``: the channel reads again unless another reason holds."""
        _set_paused(channel, PAUSED_BY_USER, False, self)

    # ------------------------------------------------------------------ running
    def run_once(self, timeout: Optional[float] = None) -> Optional[float]:
        """Run one pass: poll (at most ``timeout`` seconds; None blocks until an event or the
        next timer, 0 never blocks), dispatch the events, run due timers and queued calls.

        Returns the delay until the next timer (0 if calls are queued), None if none is pending.
        RuntimeError if the loop is running already (see ``run()``). A ``stop()`` asked for
        before the call makes this pass not block, and is consumed by it.
        """
        lock = self._claim(False)
        self._running += 1
        try:
            self._pass(timeout)
        finally:
            self._running -= 1
            self._stopping = False
            self._thread_id = None
            lock.release()
        if self._ready:
            return 0.0
        timers = self._timers
        if timers._live:
            deadline = timers.next_deadline()
            if deadline is not None:
                return max(0.0, deadline - self._clock())
        return None

    def _prepare(self, timeout: Optional[float]) -> Optional[float]:
        """The slow half of a pass's set-up: kernel objects, map edits, asked channels, and
        the poll timeout when timers or queued calls are pending."""
        if not self._acquired:
            self._acquire()
        if len(self.map) != len(self._objs):
            self._reconcile()
        if self._asked and self._scan_asked:
            self._scan()
        elif self._to_ask:
            self._ask_pending()
        self._recompute_slow()
        if self._ready or self._bad or self._stopping:
            return 0  # a stop() asked for before or during set-up: this pass must not block
        timers = self._timers
        if timers._live:
            deadline = timers.next_deadline()
            if deadline is not None:
                delay = deadline - self._clock()
                if delay < 0:
                    delay = 0
                if timeout is None or delay < timeout:
                    timeout = delay
        if timeout is not None and timeout < 0:
            timeout = 0
        return timeout

    def _pass(self, timeout: Optional[float]) -> None:
        # The hot path. One flag test covers the rare set-up work; the events go to _dispatch
        # (one call per pass, shared with netloop.aio's driver), which binds its locals once.
        if self._slow or len(self.map) != len(self._objs) or self._ready or self._timers._live:
            timeout = self._prepare(timeout)
        elif timeout is not None and timeout < 0:
            timeout = 0
        try:
            events = self._poller.poll(timeout)  # type: ignore[union-attr]
        except OSError as err:
            events = self._poll_failed(err)
        if self._bad:
            events = list(events)
            events.extend((fd, INVALID) for fd in self._bad)
            self._bad.clear()
        if events:
            self._dispatch(events)
        if self._timers._live:
            self._run_timers()
        if self._ready:
            self._run_ready()

    def _dispatch(self, events: Any) -> None:
        """Route readiness events ``[(fd, flags), ...]`` to the channels of the map.

        The one dispatch path of every driver: ``_pass`` calls it with what the poller
        returned, and a loop hosted by asyncio (``netloop.aio``) with each readiness callback.
        """
        get = self.map.get
        closed = self._closed_fds
        direct = self._direct
        self._dispatching = True
        try:
            for fd, flags in events:
                obj = get(fd)
                if obj is None:
                    if fd == self._wake_fd:
                        self._on_wake()
                        continue
                    obj = self._aliased(fd)
                    if obj is None:
                        if fd in self._masks:
                            # Removed from the map behind our back: stop watching it.
                            self._discard(fd)
                        continue
                if closed and fd in closed:
                    continue
                if flags == READ:
                    try:
                        if fd in direct and obj.connected and not obj.accepting:
                            obj.handle_read()
                        else:
                            obj.handle_read_event()
                    except RERAISED:
                        raise
                    except BaseException as err:
                        _route_failure(obj, err, self)
                else:
                    self._dispatch_flags(fd, obj, flags)
        finally:
            self._dispatching = False
            self._accepted = None
            self._accepted_by = None
            if closed:
                closed.clear()
        if self._asked and not self._scan_asked:
            asked = self._asked
            for fd, _ in events:
                obj = asked.get(fd)
                if obj is not None:
                    self._reask(fd, obj)

    def _poll_failed(self, err: OSError) -> List[Tuple[int, int]]:
        # select() fails as a whole (EBADF) when one registered fd was closed behind its
        # channel's back: find it, stop watching it, and report it as poll(2) would (POLLNVAL).
        poller = self._poller
        if isinstance(poller, SelectPoller):
            bad = poller.find_bad()
            if bad:
                for fd in bad:  # logged when the INVALID event is dispatched
                    poller.unregister(fd)
                    self._masks.pop(fd, None)
                return [(fd, INVALID) for fd in bad]
        raise err

    def _aliased(self, fd: int) -> Any:
        """The channel a map keyed by socket objects holds for ``fd``, else None."""
        key = self._alias.get(fd)
        if key is None:
            return None
        obj = self.map.get(key)
        if obj is None or self._objs.get(key) is not obj:
            return None
        return obj

    def _lost(self, fd: int, obj: Any) -> None:
        """The poller says ``fd`` is not open (POLLNVAL, EBADF): it was closed behind the
        channel's back. Log it, and detach the channel's socket object so that closing the
        channel cannot close whatever file takes that number next."""
        try:
            os.fstat(fd)
        except OSError:
            pass
        else:
            return  # open, but refused by the poller (select's FD_SETSIZE): logged then
        logger.warning("netloop: fd %d was closed behind its channel's back (%s); closing "
                       "the channel", fd, type(obj).__name__)
        sock = getattr(obj, "socket", None)
        if sock is not None:
            _detach(sock)

    def _dispatch_flags(self, fd: int, obj: Any, flags: int) -> None:
        get: Callable[[Any], Any] = self.map.get
        closed = self._closed_fds
        if self._alias and fd in self._alias:
            key = self._alias[fd]
            get = lambda _fd: self.map.get(key)  # noqa: E731
        try:
            if flags & INVALID:
                self._lost(fd, obj)
            if flags & (ERROR | HANGUP) and not self._hup_closes:
                # select() semantics: a hung-up socket is simply readable and writable.
                flags = (flags | (self._masks.get(fd, 0) & (READ | WRITE))) & ~(ERROR | HANGUP)
            if flags & READ:
                obj.handle_read_event()
                if get(fd) is not obj or fd in closed:
                    return
            if flags & WRITE:
                obj.handle_write_event()
                if get(fd) is not obj or fd in closed:
                    return
            if flags & PRIORITY:
                obj.handle_expt_event()
                if get(fd) is not obj or fd in closed:
                    return
            if flags & CLOSED_MASK:
                obj.handle_close()
        except RERAISED:
            raise
        except BaseException as err:
            _route_failure(obj, err, self)

    def _on_wake(self) -> None:
        assert self._waker is not None
        for signum in self._waker.drain():
            entry = self._signal_handlers.get(signum)
            if entry is not None:
                self._ready.append(entry)

    def _run_timers(self) -> None:
        for handle in self._timers.pop_due(self._clock()):
            if handle.cancelled:
                continue
            try:
                handle.callback(*handle.args)
            except RERAISED:
                raise
            except BaseException:
                self.handle_callback_error(handle.callback)

    def _run_ready(self) -> None:
        ready = self._ready
        for _ in range(len(ready)):
            fn, args = ready.popleft()
            try:
                fn(*args)
            except RERAISED:
                raise
            except BaseException:
                self.handle_callback_error(fn)

    def handle_callback_error(self, callback: Callable[..., Any]) -> None:
        """Called, inside the ``except`` block, when a timer or queued call raised.

        The default logs the traceback to the ``netloop`` logger; the loop goes on. Override or
        assign it to change that (re-raise to stop the loop).
        """
        logger.error("netloop: exception in callback %r", callback, exc_info=True)

    def run(self, timeout: Optional[float] = None, count: Optional[int] = None) -> None:
        """Serve channels, timers and queued calls until none is left, ``stop()`` is called,
        or ``count`` passes have run. ``timeout`` caps each pass's wait (None: no cap).

        A loop runs in one place at a time: called while it runs (from one of its callbacks,
        or from another thread), ``run()``, ``run_forever()`` and ``run_once()`` raise
        RuntimeError, as asyncio does, rather than nest (a nested run would take the outer
        run's ``stop()``). Schedule work with ``call_soon()`` instead. The legacy
        ``loop()``/``asyncore.poll()`` may still be called from a handler: that runs nested
        passes, as asyncore did.
        """
        self._run(timeout, count, forever=False)

    def run_forever(self, timeout: Optional[float] = None) -> None:
        """Like ``run()`` but only ``stop()`` ends it, even when nothing is registered."""
        self._run(timeout, None, forever=True)

    def _claim(self, legacy: bool) -> Any:
        """Make this thread the one running the loop: the lock to release at the end of the
        run; None for a legacy nested run (this thread runs the loop already); RuntimeError
        when a run may not start."""
        lock = self._run_lock
        if lock.acquire(False):
            self._thread_id = _get_ident()
            return lock
        owner = self._thread_id
        if owner == _get_ident():
            if legacy:
                return None
            raise RuntimeError("this loop is already running: a callback cannot run it again "
                               "(schedule work with call_soon(), end the run with stop())")
        raise RuntimeError("this loop is already running in another thread (%s); hand it work "
                           "with call_soon_threadsafe()" % owner)

    def _run(self, timeout: Optional[float], count: Optional[int], forever: bool,
             channels_only: bool = False) -> None:
        # channels_only: the legacy loop()/poll(), which may nest inside a handler. A nested
        # run leaves the outer run's state (its thread, a stop() asked for) as it found it.
        lock = self._claim(channels_only)
        map = self.map
        try:
            while True:
                if channels_only:
                    if not map:
                        break
                elif not forever and not (map or self._timers or self._ready):
                    break
                if count is not None:
                    if count <= 0:
                        break
                    count -= 1
                self._running += 1
                try:
                    self._pass(timeout)
                finally:
                    self._running -= 1
                if self._stopping:
                    break
        finally:
            if lock is not None:
                self._stopping = False
                self._thread_id = None
                lock.release()
                if not self._running and not self.map:
                    self._maybe_release()

    def stop(self) -> None:
        """Make ``run()``/``loop()`` return after the current pass. Safe from any thread and
        from a signal handler; a loop blocked in poll wakes at once. Called while the loop is
        not running (during start-up, say), the next run returns after one pass that does
        not block. A stop() from another thread is never lost, even between two passes."""
        self._stopping = True
        # The next pass's set-up sees it (and polls without blocking), even if it lands after
        # this pass's check: the flag is read at the start of every pass.
        self._slow = True
        if self._running:
            # Also on the loop's own thread: a signal handler that calls stop() runs while poll
            # is interrupted, and Python would resume the poll (PEP 475) without this byte.
            self._wake()
        else:
            self._scheduled()

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None:
            waker.wake()

    def _scheduled(self) -> None:
        """A call or timer was scheduled. Outside a pass, nobody would see it before the next
        event: tell whoever waits for the loop (a host watching ``fileno()``: the wake-up
        pipe; a hosting driver: its ``notify()``)."""
        if not self._running:
            notify = self._notify
            if notify is not None:
                notify()

    @property
    def running(self) -> bool:
        """True from the start to the end of a run (between its passes too)."""
        return self._running > 0 or self._thread_id is not None

    # ------------------------------------------------------------------ scheduling
    def time(self) -> float:
        """The loop's clock (monotonic seconds): the time base of ``call_at``."""
        return self._clock()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop at the end of the current (or next) pass."""
        self._ready.append((fn, args))
        if not self._running:
            self._scheduled()

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """``call_soon`` from any thread: wakes the loop if it is blocked in poll."""
        self._ready.append((fn, args))
        self._wake()

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` once, ``delay`` seconds from now."""
        return self._timers.schedule(self._clock() + max(0.0, delay), None, fn, args)

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` once at ``when`` on the loop's clock (``time()``)."""
        return self._timers.schedule(when, None, fn, args)

    def call_every(self, interval: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` every ``interval`` seconds, first in ``interval`` seconds.

        Beats missed during a long pass are skipped rather than run in a burst.
        """
        if interval <= 0:
            raise ValueError("interval must be positive")
        return self._timers.schedule(self._clock() + interval, interval, fn, args)

    # ------------------------------------------------------------------ signals
    def add_signal_handler(self, signum: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop when signal ``signum`` arrives (main thread only).

        The signal wakes a blocked poll through the loop's wake-up pipe; the handler runs in
        the pass that follows, never inside the signal frame.
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be installed from the main thread")
        if not self._acquired:
            self._acquire()
        hosted = getattr(self._poller, "add_signal", None)
        if hosted is not None:
            # A driver with signal handling of its own (asyncio's add_signal_handler).
            hosted(signum)
            self._signal_handlers[signum] = (fn, args)
            return
        assert self._waker is not None
        if not self._signal_handlers:
            old = signal.set_wakeup_fd(self._waker.wfd, warn_on_full_buffer=False)
            self._old_wakeup_fd = old
        signal.signal(signum, _ignore_in_frame)
        self._signal_handlers[signum] = (fn, args)

    def remove_signal_handler(self, signum: int) -> bool:
        """Restore the default action for ``signum``; False if no handler was installed."""
        if signum not in self._signal_handlers:
            return False
        del self._signal_handlers[signum]
        hosted = getattr(self._poller, "remove_signal", None)
        if hosted is not None:
            hosted(signum)
            return True
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT
                      else signal.SIG_DFL)
        if not self._signal_handlers:
            signal.set_wakeup_fd(self._old_wakeup_fd if self._old_wakeup_fd is not None else -1)
            self._old_wakeup_fd = None
        return True


def _set_paused(channel: Any, reason: int, on: bool, lp: Optional[Loop] = None) -> None:
    """Set or clear one reason of ``channel``'s read pause; tell its loop if that changes
    whether it reads at all."""
    old = getattr(channel, "_nl_paused", 0) or 0
    new = (old | reason) if on else (old & ~reason)
    if new == old:
        return
    channel._nl_paused = new
    if bool(new) is not bool(old):
        if lp is None:
            lp = getattr(channel, "_nl_loop", None)
        if lp is not None and lp._acquired and getattr(channel, "_fileno", None) is not None:
            lp._update(channel)
        if not new:
            # A TLS socket may hold decrypted input that no readiness event will announce.
            resumed = getattr(getattr(channel, "socket", None), "_nl_resumed", None)
            if resumed is not None:
                resumed()


def _route_failure(obj: Any, err: BaseException, lp: Optional[Loop] = None) -> None:
    """asyncore's rule for an exception out of a handler (called inside the ``except`` block,
    so ``handle_error()`` still sees it): a disconnect closes the channel quietly, anything
    else goes to ``handle_error()``.

    A listener never "disconnects": on the core loop, an ENOTCONN or ECONNRESET out of its
    handler concerns a client being set up (say ``getpeername()`` of one that reset before it
    was served), so it is logged and the listener goes on (asyncore closed the listener, with
    no log line). The default ``handle_accept()`` keeps such failures from the listener anyway.

    If ``handle_close()`` or ``handle_error()`` raises in turn, the loop (unless it runs for
    the asyncore drop-ins, which let it out) logs it with its traceback and closes and removes
    the channel itself (``_abandon``): one channel's bug never ends the loop.
    """
    if lp is None:
        lp = getattr(obj, "_nl_loop", None)
    try:
        if isinstance(err, OSError) and err.errno in DISCONNECTED:
            if getattr(obj, "accepting", False) and (lp is None or lp._contain):
                logger.warning("netloop: %s: a client went away while being set up (%s); "
                               "still listening", _describe(obj), err)
            else:
                obj.handle_close()
        else:
            obj.handle_error()
    except RERAISED:
        raise
    except BaseException:
        if lp is not None and not lp._contain:
            raise
        _abandon(obj, lp)


def _describe(obj: Any) -> str:
    try:
        return repr(obj)
    except Exception:
        return "<%s at %#x (repr failed)>" % (type(obj).__name__, id(obj))


def _abandon(obj: Any, lp: Optional[Loop]) -> None:
    """A channel whose fault handlers failed: log, close it, and make sure it is gone.

    Called inside the ``except`` block of the failure, whose traceback is logged. The channel's
    own ``close()`` is tried first; whatever it leaves (it may raise, or be overridden to do
    nothing), the channel is taken out of its map and the loop, and its socket closed.
    """
    logger.error("netloop: %s: exception in handle_close()/handle_error(); closing the channel",
                 _describe(obj), exc_info=True)
    fd = getattr(obj, "_fileno", None)
    try:
        obj.close()
    except RERAISED:
        raise
    except BaseException:
        logger.error("netloop: %s: close() failed too", _describe(obj), exc_info=True)
    for owner in (getattr(obj, "_map", None), lp.map if lp is not None else None):
        if owner is not None and fd is not None and owner.get(fd) is obj:
            del owner[fd]
    if lp is not None and fd is not None and lp._objs.get(fd) is obj:
        lp._discard(fd)
    sock = getattr(obj, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except Exception:
            pass
    try:
        obj.connected = obj.accepting = False
    except Exception:
        pass


class _Spare:
    """``Loop.spare_descriptor()``: the loop's reserved descriptor is free inside the block."""

    __slots__ = ("_loop",)

    def __init__(self, lp: Loop) -> None:
        self._loop = lp

    def __enter__(self) -> bool:
        """True if a descriptor was freed (False: the loop had none in reserve)."""
        lp = self._loop
        had = lp._reserve >= 0
        lp._give_up_reserve()
        return had

    def __exit__(self, *exc: Any) -> None:
        lp = self._loop
        if lp._acquired:
            lp._take_reserve()


def _ignore_in_frame(signum: int, frame: Any) -> None:
    """The Python-level handler: the work happens on the loop, woken through set_wakeup_fd."""


def _after_fork_in_child() -> None:
    had_signals = False
    for lp in list(_active):
        had_signals = had_signals or bool(lp._signal_handlers)
        lp._detach_after_fork()
    if had_signals:
        try:
            signal.set_wakeup_fd(-1)  # it named the parent's pipe
        except (ValueError, OSError):
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def loop(timeout: Optional[float] = 30.0, use_poll: bool = False,
         map: Optional[ChannelMap] = None, count: Optional[int] = None,
         poller: Union[None, str, Poller] = None) -> None:
    """asyncore's ``loop()``: poll the map until it is empty, or for ``count`` passes.

    ``timeout`` caps each pass's wait. ``use_poll=True`` asks for the poll backend (unless
    ``$NETLOOP_POLLER`` or ``poller=`` names another); otherwise the best backend serves,
    with select()-style dispatch (a hang-up is seen by reading, not by ``handle_close()``) as
    asyncore's select loop had. Timers of the map's loop run too, but only channels keep this
    function going; use ``get_loop(map).run()`` to serve timers with no channels.
    """
    if map is None:
        map = socket_map
    elif type(map) is not dict:
        map = _as_map(map)
    if not map:
        return
    lp = get_loop(map)
    if poller is None and use_poll and lp._poller_spec != "poll" \
            and not os.environ.get("NETLOOP_POLLER"):  # (os.environ costs ~1 us a call)
        poller = "poll"
    if poller is not None and lp._poller_spec != poller:
        wanted = poller if isinstance(poller, str) else getattr(poller, "name", None)
        if lp._poller is None or lp._poller.name != wanted or not isinstance(poller, str):
            lp.set_poller(poller)
        else:
            lp._poller_spec = poller
    saved = lp._hup_closes, lp._contain
    lp._hup_closes = bool(use_poll)
    lp._contain = False  # asyncore let exceptions out of handle_error()/handle_close()
    try:
        lp._run(timeout, count, forever=False, channels_only=True)
    finally:
        lp._hup_closes, lp._contain = saved
