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

The parts of ``Loop``, one module each, each built on the one before (``Loop`` is the last):
services.py (timers, queued calls, wake-up, signals), interest.py (the per-fd interest table
and ``_dispatch``, the one dispatch path), driver.py (``run``/``run_once``/``_pass``: waiting on
the poller). This module holds the class that joins them: the map's registry (``get_loop``),
the kernel objects and their life (acquire, release, fork, close), and asyncore's ``loop()``.
A second driver, netloop.aio, serves the same interest table and services from asyncio.
"""

from __future__ import annotations

import gc
import os
import select as _select
import signal
import sys
import time
import weakref
from threading import current_thread as _current_thread
from threading import main_thread as _main_thread
from _weakref import _remove_dead_weakref  # type: ignore[attr-defined]
from _thread import allocate_lock
from collections import deque

from ._lazy import lazy_aliases
from .driver import PollDriver
# Defined with the part of the loop they belong to (interest.py, services.py); importable from
# here as before.
from .interest import PAUSED_AT_EOF as PAUSED_AT_EOF
from .interest import PAUSED_BY_QUEUE as PAUSED_BY_QUEUE
from .interest import PAUSED_BY_USER as PAUSED_BY_USER
from .interest import PAUSED_RESTING as PAUSED_RESTING
from .interest import _abandon as _abandon
from .interest import _close_retired as _close_retired
from .interest import _describe as _describe
from .interest import _detach as _detach
from .interest import _key_fd as _key_fd
from .interest import _route_failure as _route_failure
from .interest import _set_paused as _set_paused
from .errors import ACCEPT_RESOURCE
from .pollers import READ, available, by_name, create
from .services import _ignore_in_frame as _ignore_in_frame
from .services import logger as logger
from .timers import TimerQueue
from .waker import Waker
from . import _timerfd

_TICKED = frozenset(("epoll", "poll", "select"))  # the pollers that wait in a system call

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Deque, Dict, List, MutableMapping, Optional, Set, Tuple, Union

    from .pollers import Poller

    ChannelMap = MutableMapping[int, Any]
else:
    # Type aliases only (typing is not needed at run time; see _lazy).
    __getattr__ = lazy_aliases(globals(), ChannelMap=lambda t: t.MutableMapping[int, t.Any])


__all__ = ["Loop", "get_loop", "loop", "socket_map", "ChannelMap"]


#: The process-wide default channel map (asyncore's ``socket_map``).
socket_map: Dict[int, Any] = {}

# id(map) -> a weak reference to the Loop serving it: a loop nobody holds and that serves
# nothing goes away (and its entry with it). A Loop holds its map, so the id cannot be reused
# while the entry lives. A plain dict of references rather than a WeakValueDictionary: its
# lookups are C calls, and dispatchers make one per connection set up and torn down.
_loops: "Dict[int, weakref.ref[Loop]]" = {}
# Loops holding kernel objects, kept alive while they do.
_active: Set["Loop"] = set()
#: Released loops that keep their wake-up pipe because signal.set_wakeup_fd() names it.
_kept_for_signals: "weakref.WeakSet[Loop]" = weakref.WeakSet()


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


def _release_abandoned() -> None:
    """Give back the kernel objects of implicit loops whose map nobody holds any more.

    A map made for one call (``asyncore.poll(t, map={sock: obj})`` on every tick) gets an
    implicit loop that keeps its map, and so its channels, forever: the map never empties,
    so the loop would keep its poller and wake-up pipe. When the only reference to such a
    map is the loop's own, nobody can pass that map again, so the loop is released (and, as
    nothing holds it then, freed). So is an idle loop whose map was emptied by hand (entries
    deleted behind its back: nothing told it). Called when a new implicit loop is made: what
    the one-shot pattern costs stays one loop's descriptors, however many calls. Maps held
    elsewhere (the module's ``socket_map``, a program's own dict, the ``_map`` of its
    channels) keep their loop and registrations, so ``loop(count=1)`` on a long-lived map
    stays O(events). Past ``_collect_at`` such idle loops, the garbage collector is asked
    which of them are still reachable (``_collect_abandoned``).
    """
    if _getrefcount is None:  # pragma: no cover - not CPython: keep them
        return
    idle = 0
    for lp in list(_active):
        if not _unattended(lp):
            continue
        # 3: the loop's attribute, its bound map.get (_map_get) and getrefcount's argument.
        if _getrefcount(lp.map) <= 3:
            lp._release()
        elif _idle(lp):
            if not lp.map:
                lp._release()
            else:
                idle += 1
    if idle >= _collect_at[0]:
        _collect_abandoned()


def _unattended(lp: "Loop") -> bool:
    """An implicit loop that nobody runs now, in any thread, and that handles no signals."""
    return (lp._implicit and not lp._running and lp._thread_id is None
            and not lp._signal_handlers)


def _idle(lp: "Loop") -> bool:
    """An unattended loop with nothing scheduled either (no timers, no queued calls): its
    kernel objects may be given back; its next use takes new ones."""
    return _unattended(lp) and not lp._timers and not lp._ready


def _let_go_of_idle() -> "List[Tuple[weakref.ref[Loop], Any, Any, bool]]":
    kept = []
    for lp in [lp for lp in _active if _idle(lp) and lp.map]:
        _active.discard(lp)
        kept.append((weakref.ref(lp), lp._poller, lp._waker, lp._holds_reserve))
    return kept


_COLLECT_MIN = 8

#: How many idle implicit loops _release_abandoned() lets _active hold before it asks the
#: garbage collector about them; twice the survivors after each time (at least 8: each holds
#: 2-4 descriptors, so 8 fit under a limit of 64 with their sockets), so a
#: program with many live maps pays for a collection only each time their number doubles.
_collect_at = [_COLLECT_MIN]


def _collect_abandoned() -> None:
    """Free idle implicit loops that are garbage but for ``_active``, with their kernel objects.

    A map can be out of everyone's reach and still referenced: its channels refer to it
    (``_map``), and an owner that holds the map and is held by a channel's callback closes the
    cycle (pysnmp's engine made for each ``getCmd()`` call and dropped). asyncore held no kernel
    object, so the garbage collector freed such a cycle and the sockets' finalizers closed
    them. Here ``_active`` would keep it, and four descriptors with it, for ever. So the idle
    implicit loops are let go of for one collection: those that survive are held again; for
    the others (freed, with their channels, whose sockets closed as in asyncore) the poller,
    wake-up pipe and reserve descriptor are closed.
    """
    kept = _let_go_of_idle()  # (in a call of its own: no local of this frame holds a loop)
    gc.collect()
    survivors = 0
    for ref, poller, waker, reserve in kept:
        found = ref()
        if found is not None:
            _active.add(found)
            survivors += 1
            continue
        if poller is not None:
            poller.close()
        if waker is not None:
            waker.close()
        if reserve:
            _Reserve.let_go()
    _collect_at[0] = max(_COLLECT_MIN, 2 * survivors)


def _poller_without_descriptor(err: OSError, spec: Any) -> "Poller":
    """The poller of a loop that could not have the one asked for (``spec``), for want of a
    descriptor (epoll_create or kqueue failed with EMFILE, ENFILE, ENOMEM): poll() or select(),
    which need none, as asyncore's loop needed none. Anything else is raised."""
    if err.errno not in ACCEPT_RESOURCE:
        raise err
    name = "poll" if "poll" in available() else "select"
    logger.warning("netloop: a loop found no descriptor for its poller (%s); it polls with %s()",
                   err, name)
    return create(name, track_closed=False)


class Loop(PollDriver):
    """An event loop over one channel map.

    ``map``: the channel map to serve (a new empty dict when None). ``poller``: a poller name
    ("epoll", "poll", "select", "kqueue", "auto"), a poller instance, or None for the best one
    (``$NETLOOP_POLLER`` overrides the automatic choice). ``clock``: the monotonic clock used by
    timers (inject a manual clock in tests). ``scan``: ask channels that override
    ``readable()``/``writable()`` before every poll (True, asyncore's semantics) or only after
    their own events (False, cheaper when those predicates depend on the channel alone).
    """

    # The loop's own state in slots. CPython keeps an instance's attributes in a compact
    # shared-key layout only up to 29 names (per class); past that the instance gets a real
    # dict, and on 3.11 every ``self._method()`` call on it is then looked up the slow way
    # (LOAD_METHOD does not specialize): ~1,300 instructions per connection set up and torn
    # down (bench_insn accept-cli). Slots keep every access specialized however many there
    # are. Attributes set from outside (an assigned call_exception_handler, a test's
    # monkeypatch) still go to the instance dict the base classes provide.
    __slots__ = ("map", "_poller_spec", "_clock", "_scan_asked", "_poller", "_waker",
                 "_wake_fd", "_objs", "_alias", "_to_ask", "_masks", "_asked", "_indirect",
                 "_closed_fds", "_bad", "_fd_refusals", "_dispatching", "_accepted",
                 "_accepted_by", "_holds_reserve", "_timers", "_ready", "_signal_handlers",
                 "_old_wakeup_fd", "_stopping", "_running", "_thread_id", "_run_lock",
                 "_acquired", "_implicit", "_closed", "_slow", "_pass_work", "_notify",
                 "_hup_closes", "_contain", "_read_view", "_read_cut", "_read_cut_len", "_map_get",
                 "_kernel_register", "_kernel_unregister", "_weak", "_tick_fd", "_tick_period",
                 "_waker_missing", "_waker_retry_at")
    if TYPE_CHECKING:
        _closed: bool
        _implicit: bool
        _acquired: bool

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
        self._map_get = map.get  # bound once: _dispatch looks channels up with it every pass
        self._poller_spec = poller
        self._clock: Callable[[], float] = clock or time.monotonic
        self._scan_asked = scan
        self._poller: Optional[Poller] = None
        # The poller's kernel_register/kernel_unregister, or its register/unregister (see
        # pollers.base): set with the poller.
        self._kernel_register: Any = None
        self._kernel_unregister: Any = None
        self._waker: Optional[Waker] = None
        self._wake_fd = -1
        self._waker_missing = False  # out of descriptors for it: see _take_waker
        self._waker_retry_at = 0.0
        # A periodic timer descriptor (Linux timerfd) that bounds each wait of a
        # long run with a timeout (asyncore's loop(timeout=30.0)) in place of a timeout on
        # every poll: see _arm_tick(). The run's timeout while it wants one, else None.
        self._tick_fd = -1
        self._tick_period: Optional[float] = None
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
        # fds of channels whose read events must go through handle_read_event() (a class that
        # overrides it, a foreign object, a TLS channel mid-handshake). For all others (the
        # common case, so not stored: a set entry is ~50 bytes per connection) the loop calls
        # handle_read() itself when connected: the same routing, one call less.
        self._indirect: Set[int] = set()
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
        # A weak reference to this loop, which its listeners leave for the dispatcher made for
        # the connection they accept (see Dispatcher.accept).
        self._weak = weakref.ref(self)
        # The shared read buffer of Dispatcher.recv_view() (a memoryview), made on first use.
        self._read_view: Any = None
        # The last slice of it an echo handler sent (cli.EchoHandler), and its length: a
        # ping-pong server reads the same length each time, and reuses the slice.
        self._read_cut: Any = None
        self._read_cut_len = 0
        # Whether the loop counts among the holders of the process's reserved descriptor (see
        # spare_descriptor()): while it holds its kernel objects.
        self._holds_reserve = False
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
        # False only when a pass has nothing to do after its events but poll again: no closed
        # descriptors or accepted socket to forget, no queued calls, no live timers, no asked
        # channels to ask again after their events (scan off). What makes any of them true
        # sets it; the end of a pass in Interest._dispatch clears it after checking them all.
        self._pass_work = True
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
        self._pass_work = True
        self._recompute_slow()

    # ------------------------------------------------------------------ kernel objects
    def _acquire(self) -> None:
        if self._closed:
            raise RuntimeError("the loop is closed")
        current = _lookup(self.map)
        if current is not self:
            if current is not None and not current._closed and current._acquired:
                raise RuntimeError("this map is now served by another loop")
            _register(self)
        # Not tracking its registrations for find_closed(), which a loop never calls.
        try:
            poller = create(self._poller_spec, track_closed=False)
        except OSError as err:
            poller = _poller_without_descriptor(err, self._poller_spec)
        self._poller = poller
        self._kernel_register = getattr(poller, "kernel_register", poller.register)
        self._kernel_unregister = getattr(poller, "kernel_unregister", poller.unregister)
        bind = getattr(self._poller, "bind", None)
        if bind is not None:
            # A driver that dispatches events itself (netloop.aio's AsyncioPoller) through
            # this loop's _dispatch, and runs its timers and queued calls.
            bind(self)
        self._take_waker()
        self._notify = getattr(self._poller, "notify", None) or self._wake
        self._timers.on_schedule = self._scheduled
        self._take_reserve()
        if self._tick_period is not None:
            self._arm_tick()  # taken again (after a fork, say) for the run that wants it
        self._acquired = True
        self._pass_work = True  # (timers scheduled meanwhile did not call on_schedule)
        _active.add(self)
        self._reconcile()
        self._recompute_slow()

    def _take_waker(self) -> bool:
        """Take the wake-up object (True when taken): a pipe in the main thread, which alone
        handles signals; an eventfd (one descriptor fewer) where available in any other
        (waker.py).

        Out of descriptors, the loop goes on without one, as asyncore's loop, which had none,
        went on: its passes keep their timeouts, and a wake-up from another thread waits for
        the next pass, which comes within a second while it has none (``_without_waker``).

        A pipe kept by ``_release`` (``signal.set_wakeup_fd`` names it: a signal handler is
        installed) is registered again rather than replaced: only the main thread could point
        ``set_wakeup_fd`` at a new one, and the loop may be taken again in another."""
        kept = self._waker
        if kept is not None:
            assert self._poller is not None
            self._poller.register(kept.rfd, READ)
            self._wake_fd = kept.rfd
            return True
        try:
            waker = Waker(signals=_current_thread() is _main_thread())
        except OSError as err:
            if err.errno not in ACCEPT_RESOURCE:
                raise
            self._waker = None
            self._wake_fd = -1
            if not self._waker_missing:
                self._waker_missing = True
                logger.warning("netloop: %r: no descriptor for its wake-up object (%s); "
                               "waiting at most a second in each pass until it has one",
                               self, err)
            return False
        assert self._poller is not None
        try:
            self._poller.register(waker.rfd, READ)
        except BaseException:
            waker.close()
            raise
        self._waker = waker
        self._wake_fd = waker.rfd
        if self._waker_missing:
            self._waker_missing = False
            logger.info("netloop: %r: has its wake-up object again", self)
        return True

    def _without_waker(self, timeout: Optional[float]) -> Optional[float]:
        """A pass's set-up while the loop has no wake-up object: try again (once a second),
        and until then wait at most until that next try."""
        now = self._clock()
        if now >= self._waker_retry_at:
            if self._take_waker():
                self._recompute_slow()
                return timeout
            self._waker_retry_at = now + 1.0
        cap = self._waker_retry_at - now
        return cap if timeout is None or timeout > cap else timeout

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
        self._indirect.clear()
        self._bad.clear()
        self._close_tick()
        if self._poller is not None:
            self._poller.close()
            self._poller = self._kernel_register = self._kernel_unregister = None
        waker = self._waker
        if waker is not None and not (waker.signals and self._old_wakeup_fd is not None):
            waker.close()
            self._waker = None
        elif waker is not None:
            # signal.set_wakeup_fd() names it: kept, and watched again by the next acquire, in
            # whatever thread; closed when the last signal handler goes, or with the loop. A
            # child forked meanwhile lets go of it (_after_fork_in_child).
            _kept_for_signals.add(self)
        self._wake_fd = -1
        self._give_up_reserve()

    def _arm_tick(self) -> bool:
        """Take the periodic timer of a run that wants one (``_tick_period`` set): True when
        armed. Its expirations end the waits of every pass, as a timeout on each poll would.

        Why: a poll with a timeout arms and cancels a kernel timer each time it sleeps, and
        that costs kernel time on every wake-up (about 1.2 us per request of a one-connection
        ping-pong on a KVM guest, benchmarks/README.md); a periodic timer is armed once per
        run. A pass still waits at most the timeout: the timer expires at least that often
        (earlier is allowed, as an early return of select() was). Where it cannot be had
        (not Linux, no ctypes before Python 3.13, no descriptor left) the passes keep their
        timeout (netloop._timerfd).
        """
        if self._tick_fd >= 0:
            return True
        period = self._tick_period
        if period is None or self._poller is None or self._poller.name not in _TICKED:
            return False  # (a loop attached to asyncio waits by asyncio's own timers)
        try:
            fd = _timerfd.periodic(period)
        except (OSError, ValueError, OverflowError):
            return False  # out of descriptors, say: the passes wait with their timeout
        try:
            self._poller.register(fd, READ)
        except (OSError, ValueError):
            os.close(fd)
            return False
        self._tick_fd = fd
        return True

    def _close_tick(self, unregister: bool = True) -> None:
        # unregister=False: in a forked child, whose poller is shared with the parent (and the
        # timer too: this closes the child's copy and never disarms it).
        fd, self._tick_fd = self._tick_fd, -1
        if fd < 0:
            return
        poller = self._poller
        if poller is not None and unregister:
            try:
                poller.unregister(fd)
            except (OSError, KeyError, ValueError):
                pass
        try:
            os.close(fd)
        except OSError:
            pass

    def _on_tick(self) -> None:
        # The timer expired: consume the expirations (an 8-byte count). Nothing else: a pass
        # that ends this way is one whose poll timed out.
        try:
            os.read(self._tick_fd, 8)
        except OSError:
            pass  # (read already: EAGAIN)

    def _take_reserve(self) -> None:
        """Hold the process's reserved descriptor (opened if no loop holds it yet, or opened
        again after a ``spare_descriptor()`` block or a shortage gave it up)."""
        if not self._holds_reserve:
            self._holds_reserve = True
            _Reserve.hold()
        else:
            _Reserve.take()

    def _give_up_reserve(self) -> None:
        """No longer hold it: closed when no other loop of the process does."""
        if self._holds_reserve:
            self._holds_reserve = False
            _Reserve.let_go()

    @property
    def _reserve(self) -> int:
        """The reserved descriptor this loop holds, or -1 (none held, or given up for now)."""
        return _Reserve.fd if self._holds_reserve else -1

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
        # A run that goes on in the child takes a timer of its own at its next pass (_acquire).
        self._close_tick(unregister=False)
        self._poller = self._kernel_register = self._kernel_unregister = None
        self._waker = None
        self._wake_fd = -1
        self._holds_reserve = False  # _after_fork_in_child closes the child's copy
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
        self._indirect.clear()
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


class _Spare:
    """``Loop.spare_descriptor()``: the loop's reserved descriptor is free inside the block."""

    __slots__ = ("_loop",)

    def __init__(self, lp: Loop) -> None:
        self._loop = lp

    def __enter__(self) -> bool:
        """True if a descriptor was freed (False: the loop had none in reserve)."""
        return self._loop._holds_reserve and _Reserve.free()

    def __exit__(self, *exc: Any) -> None:
        lp = self._loop
        if lp._acquired:
            lp._take_reserve()


class _Reserve:
    """The process's reserved descriptor (``/dev/null``; ``Loop.spare_descriptor()``).

    One for the process, held while any loop holds its kernel objects: what it is for is a
    free descriptor when the process has none left, which one is enough to give. (One per
    loop cost a program that runs a loop per connection, in a thread each, a descriptor per
    connection: emailproxy.) A lock, as loops of several threads share it; taking it needs no
    descriptor.
    """

    fd = -1
    holders = 0
    lock = allocate_lock()

    @classmethod
    def hold(cls) -> None:
        with cls.lock:
            cls.holders += 1
            cls._open()

    @classmethod
    def take(cls) -> None:
        """Open it again if a holder gave it up (a shortage, a ``spare_descriptor()`` block)."""
        with cls.lock:
            if cls.holders:
                cls._open()

    @classmethod
    def let_go(cls) -> None:
        with cls.lock:
            cls.holders -= 1
            if cls.holders <= 0:
                cls.holders = 0
                cls._close()

    @classmethod
    def free(cls) -> bool:
        """Close it for now (a holder needs a descriptor): True if it was open."""
        with cls.lock:
            had = cls.fd >= 0
            cls._close()
            return had

    @classmethod
    def after_fork_in_child(cls) -> None:
        # The child's copy of the descriptor: closed; its loops hold it again as they take
        # their kernel objects. (A lock another thread held at the fork would stay locked.)
        cls.lock = allocate_lock()
        cls.holders = 0
        cls._close()

    @classmethod
    def _open(cls) -> None:
        if cls.fd < 0:
            try:
                cls.fd = os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                cls.fd = -1  # out of descriptors already: opened again when one is freed

    @classmethod
    def _close(cls) -> None:
        fd, cls.fd = cls.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def _after_fork_in_child() -> None:
    had_signals = False
    # The active loops, and the released ones that keep a wake-up pipe for set_wakeup_fd: the
    # child must not wake its parent's loop with its own signals.
    for lp in list(_active) + [lp for lp in _kept_for_signals if lp not in _active]:
        had_signals = had_signals or bool(lp._signal_handlers)
        lp._detach_after_fork()
    _Reserve.after_fork_in_child()
    if had_signals:
        try:
            signal.set_wakeup_fd(-1)  # it named the parent's pipe
        except (ValueError, OSError):
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_BUILTIN: Any = type(len)  # the type of select.select as the select module defines it


def _select_replaced(lp: Loop) -> bool:
    """Whether asyncore's select()-style calls on ``lp`` must wait in ``select.select`` as it
    is now: a replacement was put there (gevent's and eventlet's monkey patching put a
    cooperative one, which runs the other green threads while it waits) and nothing named a
    poller. asyncore's loop() and poll() called ``select.select`` on every pass; the select
    poller does too, looking it up each time, where epoll would block the whole process in
    epoll_wait(). (use_poll=True needs nothing: the poll poller calls ``select.poll()`` as it
    is when it is made.)"""
    return (type(_select.select) is not _BUILTIN and lp._poller_spec != "select"
            and not lp.running and not os.environ.get("NETLOOP_POLLER"))


def loop(timeout: Optional[float] = 30.0, use_poll: bool = False,
         map: Optional[ChannelMap] = None, count: Optional[int] = None,
         poller: Union[None, str, Poller] = None) -> None:
    """asyncore's ``loop()``: poll the map until it is empty, or for ``count`` passes.

    ``timeout`` caps each pass's wait (with ``count`` None, on Linux, by one periodic timer for
    the run rather than a timeout on each poll). ``use_poll=True`` asks for the poll backend (unless
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
    elif poller is None and not use_poll and _select_replaced(lp):
        poller = "select"
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
    except BaseException:
        # Left by an exception (ExitNow from a handler, say) with channels still in the map:
        # the map may well be dropped now (a map made per connection, as secure-smtpd does),
        # and its channels refer to it, so _release_abandoned() never sees it unreferenced.
        # asyncore held no kernel object between calls; give this implicit loop's back (the
        # next call takes new ones and registers the channels again).
        if _idle(lp):
            lp._release()
        raise
    finally:
        lp._hup_closes, lp._contain = saved
