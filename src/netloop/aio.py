"""netloop on a running asyncio loop: legacy channels and asyncio code in one thread.

``attach()`` binds a channel map (the global ``socket_map`` by default, or a ``Loop``) to the
running asyncio event loop. From then on asyncio serves every dispatcher, ``async_chat`` and
``netloop.socketserver`` server of that map: there is no netloop thread and no polling::

    import asyncio, netloop.aio

    async def main():
        handle = netloop.aio.attach()      # the legacy socket_map, on this asyncio loop
        try:
            await asyncio.Event().wait()   # ... asyncio code beside the legacy channels
        finally:
            handle.detach()

    asyncio.run(main())

``run()`` does exactly that as one call: it replaces ``asyncore.loop()`` at the bottom of a
legacy program (``netloop.aio.run()``), or runs a coroutine with the map attached
(``netloop.aio.run(main())``).

How it works (a second driver of the same ``Loop``). A ``Loop`` keeps its channels' interest
in one table and changes a registration only when a channel's interest changes; the poller it
is given carries out those changes. Attaching gives the loop an ``AsyncioPoller``, which
carries them out in one of two ways:

- Nested (the default where the platform has epoll or kqueue): the channels are registered
  with a kernel poller of the loop's own, and asyncio watches that poller's one descriptor
  (``add_reader``; a nested epoll or kqueue works with every selector-based asyncio loop and
  with uvloop). When it is readable, the callback makes one pass exactly as netloop's own
  driver does: ``poll(0)``, then ``Loop._dispatch`` for the whole batch. So a hosted read
  costs what it costs on netloop's own loop (plus one asyncio callback per batch, not per
  event), and out-of-band data reaches ``handle_expt_event`` as it does there.
- One by one (``attach(nested=False)``, and the only way elsewhere): ``register``/``modify``/
  ``unregister`` become ``add_reader``/``add_writer``/``remove_*`` for each channel's
  descriptor, and each readiness callback hands its one event to ``Loop._dispatch``.
  Out-of-band data is not delivered: asyncio has no such readiness.

Either way the events go through ``Loop._dispatch``, the function that dispatches the events
of netloop's own pollers: the same routing, the same "closed earlier in this pass" checks, the
same ``readable()``/``writable()`` handling. The loop's services stay its own and are driven
by asyncio: the earliest netloop timer is one asyncio timer, the wake-up pipe (used by
``call_soon_threadsafe``) is one more descriptor watched, signal handlers added with
``Loop.add_signal_handler`` become asyncio's, and ``Loop.stop()`` resolves
``Attachment.stopped`` (which ``run()`` waits for).

Where "before every poll" cannot be exact: asyncio offers no hook before its poll. Channels
that override ``readable()``/``writable()`` are asked again after every batch of netloop
callbacks (events, timers, queued calls), one asyncio iteration later, which is what netloop's
own passes do. Asyncio code that changes what such a predicate answers (outside any netloop
callback) should call ``Loop.call_soon`` with any function, or the channel's
``_update_interest()``; ``send()``/``push()`` and the other netloop calls need nothing.

While attached, ``Loop.run()``/``run_once()`` (and ``asyncore.loop()``, ``serve_forever()``)
may still be called when the asyncio loop is not running: they run it until a netloop event
has been handled or the timeout expired. Called from inside the running asyncio loop they
raise ``RuntimeError``: asyncio is already serving the map.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
import threading

from . import reactor as _reactor
from .pollers import _FACTORIES, INVALID, READ, WRITE, create

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Awaitable, Callable, Dict, Optional, Sequence, Tuple, Union

    from .pollers import Poller
    from .reactor import ChannelMap, Loop

__all__ = ["attach", "run", "Attachment", "AsyncioPoller"]

# The kernel poller with a descriptor of its own that a nested attachment uses, if any.
_NATIVE: Optional[str] = ("epoll" if "epoll" in _FACTORIES
                          else "kqueue" if "kqueue" in _FACTORIES else None)


class AsyncioPoller:
    """The poller of a ``Loop`` hosted by an asyncio loop (see the module docstring).

    Made by ``attach()``; not meant to be built by hand. ``poll()`` runs the asyncio loop when
    it is not running (the loop's own ``run``/``run_once`` then drive asyncio).
    """

    def __init__(self, event_loop: Optional[asyncio.AbstractEventLoop] = None, *,
                 factory: Optional[Callable[[], asyncio.AbstractEventLoop]] = None,
                 nested: Optional[bool] = None) -> None:
        # Without event_loop: a private asyncio loop made by factory, which the netloop loop
        # drives from its own run()/run_once() and which close() closes (NETLOOP_POLLER=asyncio).
        self._own = event_loop is None
        if event_loop is None:
            event_loop = (factory or asyncio.new_event_loop)()
        self.event_loop = event_loop
        #: "uvloop" on a uvloop loop, else "asyncio".
        self.name = "uvloop" if type(event_loop).__module__.startswith("uvloop") else "asyncio"
        self._lp: Any = None
        self._masks: Dict[int, int] = {}
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_when: Optional[float] = None
        self._kicked = False
        self._kick_handle: Optional[asyncio.Handle] = None
        self._driving = False
        # Set once a driven run has done its pass and asked asyncio to stop: events that
        # arrive before it does (uvloop polls once more) wait for the next pass.
        self._hold = False
        self._hold_handle: Optional[asyncio.Handle] = None
        self._pid = os.getpid()
        self._always: Dict[int, int] = {}   # regular files: always ready, as select says
        self._always_handle: Optional[asyncio.Handle] = None
        self._signals: Dict[int, bool] = {}
        self._closed = False
        self.on_stop: Optional[Callable[[], None]] = None
        # Bound once: asyncio keeps these with every registration.
        self._read_cb = self._read_ready
        self._write_cb = self._write_ready
        # Nested: the channels are registered with a kernel poller of the loop's own (epoll,
        # kqueue), whose one descriptor asyncio watches (see the module docstring).
        self._nested_auto = nested is None
        self._want_nested = _NATIVE is not None if nested is None else bool(nested)
        if self._want_nested and _NATIVE is None:
            raise ValueError("nested=True needs epoll or kqueue, which this platform lacks")
        self._native: Optional[Poller] = None
        self._native_fd = -1

    @property
    def nested(self) -> bool:
        """True while the channels are watched through one native poller's descriptor."""
        return self._native is not None

    def bind(self, lp: Loop) -> None:
        """Called by the loop that takes this poller: events go to its ``_dispatch``."""
        if self._lp is not None and self._lp is not lp:
            raise RuntimeError("this AsyncioPoller serves another loop")
        if self._own and self.event_loop.is_closed():
            raise RuntimeError("a private AsyncioPoller cannot be used again once closed")
        self._lp = lp
        self._closed = False
        if self._want_nested and self._native is None:
            # As a loop makes its own: no record of the registrations for find_closed().
            native = create(_NATIVE, track_closed=False)
            try:
                fd = native.fileno()
                self.event_loop.add_reader(fd, self._batch_ready)
            except (OSError, ValueError):
                native.close()
                if not self._nested_auto:
                    raise
                self._want_nested = False  # an event loop that cannot watch it: one by one
            except BaseException:
                native.close()
                raise
            else:
                self._native = native
                self._native_fd = fd

    # ------------------------------------------------------------------ the poller interface
    def register(self, fd: int, mask: int) -> None:
        if self._closed:
            raise ValueError("the asyncio attachment is closed")
        native = self._native
        if native is not None:
            native.register(fd, mask)
            self._masks[fd] = mask
            if fd in getattr(native, "_always", ()):
                # A regular file, which epoll refuses: the native poller reports it as always
                # ready on every poll, but its descriptor never becomes readable for it.
                self._always[fd] = mask
                self._tick_always()
            return
        ev = self.event_loop
        try:
            if mask & READ:
                ev.add_reader(fd, self._read_cb, ((fd, READ),))
            if mask & WRITE:
                try:
                    ev.add_writer(fd, self._write_cb, ((fd, WRITE),))
                except BaseException:
                    if mask & READ:
                        self._remove(ev.remove_reader, fd)
                    raise
        except OSError as err:
            if err.errno != errno.EPERM:
                raise
            # A regular file (epoll refuses it): never blocks, so always ready, as select and
            # poll say; reported once per asyncio iteration while it is registered.
            self._always[fd] = mask
            self._masks[fd] = mask
            self._tick_always()
            return
        self._masks[fd] = mask

    def modify(self, fd: int, mask: int) -> None:
        native = self._native
        if native is not None:
            native.modify(fd, mask)
            self._masks[fd] = mask
            if fd in self._always:
                self._always[fd] = mask
            return
        if fd in self._always:
            self._always[fd] = self._masks[fd] = mask
            return
        old = self._masks.get(fd, 0)
        ev = self.event_loop
        if (mask ^ old) & READ:
            if mask & READ:
                ev.add_reader(fd, self._read_cb, ((fd, READ),))
            else:
                self._remove(ev.remove_reader, fd)
        if (mask ^ old) & WRITE:
            if mask & WRITE:
                ev.add_writer(fd, self._write_cb, ((fd, WRITE),))
            else:
                self._remove(ev.remove_writer, fd)
        self._masks[fd] = mask

    def unregister(self, fd: int) -> None:
        old = self._masks.pop(fd, 0)
        native = self._native
        if native is not None:
            self._always.pop(fd, None)
            native.unregister(fd)
            return
        if self._always.pop(fd, None) is not None:
            return
        ev = self.event_loop
        if old & READ:
            self._remove(ev.remove_reader, fd)
        if old & WRITE:
            self._remove(ev.remove_writer, fd)

    @staticmethod
    def _remove(remove: Callable[[int], Any], fd: int) -> None:
        try:
            remove(fd)
        except (OSError, ValueError):
            pass  # a descriptor closed behind the channel's back: asyncio forgot it already

    def _tick_always(self) -> None:
        if self._always_handle is None and self._always:
            self._always_handle = self.event_loop.call_soon(self._always_ready)

    def _always_ready(self) -> None:
        self._always_handle = None
        if self._hold or self._closed:
            return
        if self._native is not None:
            self._batch_ready()  # the native poller reports the files with the sockets
            self._tick_always()
            return
        events = [(fd, mask & (READ | WRITE)) for fd, mask in self._always.items()
                  if mask & (READ | WRITE)]
        if events:
            lp = self._lp
            lp._running += 1
            try:
                lp._dispatch(events)
            finally:
                lp._running -= 1
            self._after(True)
        self._tick_always()

    def poll(self, timeout: Optional[float]) -> list:  # type: ignore[type-arg]
        """Run the asyncio loop until a netloop callback ran or ``timeout`` passed.

        The events are dispatched by the callbacks themselves, so this returns ``[]``.
        """
        ev = self.event_loop
        if ev.is_running():
            raise RuntimeError("this netloop Loop is attached to a running asyncio loop, which "
                               "serves it: do not run it (or asyncore.loop()) from inside")
        if ev.is_closed():
            raise RuntimeError("the asyncio loop this netloop Loop is attached to is closed")
        stopper = None
        if timeout is not None and timeout <= 0:
            ev.stop()  # one iteration that does not block
        elif timeout is not None:
            stopper = ev.call_later(timeout, ev.stop)
        self._driving = True
        self._arm()
        self._tick_always()
        try:
            ev.run_forever()
        finally:
            self._driving = False
            self._hold = False
            if self._hold_handle is not None:
                self._hold_handle.cancel()  # still queued on asyncio's own loop: drop it
                self._hold_handle = None
            if stopper is not None:
                stopper.cancel()
        return []

    def fileno(self) -> int:
        raise ValueError("a Loop attached to asyncio has no descriptor of its own")

    def close(self) -> None:
        """Drop every registration, the timer and the signal handlers from the asyncio loop."""
        self._closed = True
        if os.getpid() != self._pid:
            # A forked child: the asyncio loop (and its epoll) is the parent's; touch nothing
            # (a private loop's descriptors stay open in the child). A native poller's
            # registrations are shared with the parent too: only this process's copy of its
            # descriptor is closed.
            self._masks.clear()
            self._always.clear()
            self._close_native(False)
            return
        if self._always_handle is not None:
            self._always_handle.cancel()
            self._always_handle = None
        ev = self.event_loop
        for fd in list(self._masks):
            self.unregister(fd)
        self._close_native(True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_when = None
        if self._kick_handle is not None:
            self._kick_handle.cancel()
            self._kick_handle = None
        self._kicked = False
        for signum in list(self._signals):
            self.remove_signal(signum)
        if self._own and not ev.is_closed():
            if ev.is_running():
                raise RuntimeError("cannot close a running asyncio loop")
            ev.close()

    def _close_native(self, unwatch: bool) -> None:
        native = self._native
        if native is None:
            return
        self._native = None
        if unwatch and not self.event_loop.is_closed():
            self._remove(self.event_loop.remove_reader, self._native_fd)
        self._native_fd = -1
        try:
            native.close()
        except OSError:
            pass  # kqueue descriptors are not inherited by a forked child

    # ------------------------------------------------------------------ hooks of the Loop
    def notify(self) -> None:
        """Work was scheduled outside a netloop callback: look at it soon (any thread)."""
        if not self._kicked and not self._closed:
            self._kicked = True
            ev = self.event_loop
            if ev.is_closed():
                return
            try:
                self._kick_handle = ev.call_soon_threadsafe(self._service)
            except RuntimeError:
                self._kicked = False  # the asyncio loop was closed meanwhile

    def add_signal(self, signum: int) -> None:
        self.event_loop.add_signal_handler(signum, self._on_signal, signum)
        self._signals[signum] = True

    def remove_signal(self, signum: int) -> None:
        if self._signals.pop(signum, None):
            try:
                self.event_loop.remove_signal_handler(signum)
            except (RuntimeError, ValueError):
                pass  # the asyncio loop is closed, or not in the main thread any more

    # ------------------------------------------------------------------ callbacks
    def _read_ready(self, events: Sequence[Tuple[int, int]]) -> None:
        # events: one by one, ((fd, READ),) or ((fd, WRITE),), made once at registration (no
        # tuples built per event; the flag in them routes the event, so one callback serves
        # both); nested, the batch the native poller returned.
        if self._hold:
            return  # a driven run did its pass; level-triggered, this comes again
        lp = self._lp
        lp._running += 1
        try:
            lp._dispatch(events)
        finally:
            lp._running -= 1
        if (lp._ready or lp._slow or lp._timers._live or self._driving or lp._stopping
                or len(lp.map) != len(lp._objs)):
            self._after(True)

    _write_ready = _read_ready

    def _batch_ready(self) -> None:
        # Nested: the native poller has events. One pass of them, as the loop's own driver
        # makes it: poll without blocking, then _dispatch for the whole batch.
        if self._hold or self._closed:
            return
        events = self._native.poll(0)  # type: ignore[union-attr]
        if events:
            self._read_ready(events)

    def _on_signal(self, signum: int) -> None:
        entry = self._lp._signal_handlers.get(signum)
        if entry is not None:
            self._lp._ready.append(entry)
            self._lp._pass_work = True
        self._after(True)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        if self._hold:
            return  # the driven pass runs due timers itself; the next one re-arms
        if self._driving:
            # A pass driven by Loop._pass: it runs the due timers (once, then the queued
            # calls) when this poll returns, as on netloop's own pollers; here only end it.
            self._end_driven()
            return
        lp = self._lp
        lp._running += 1
        try:
            if lp._timers._live:
                lp._run_timers()
        finally:
            lp._running -= 1
        self._after(True)

    def _service(self) -> None:
        """The slow part of a pass, run one asyncio iteration after it was asked for:
        descriptors to report as closed, due timers, queued calls, map edits, asked channels."""
        self._kicked = False
        self._kick_handle = None
        if self._closed or self._hold:
            return  # a driven pass does this work in its own set-up
        lp = self._lp
        lp._running += 1
        try:
            if lp._bad:
                events = [(fd, INVALID) for fd in lp._bad]
                lp._bad.clear()
                lp._dispatch(events)
            if len(lp.map) != len(lp._objs):
                lp._reconcile()
            if lp._asked and lp._scan_asked:
                lp._scan()
            elif lp._to_ask:
                lp._ask_pending()  # channels registered since: asked here, never at registration
            if lp._timers._live and not self._driving:
                lp._run_timers()  # (a driven pass runs them once its poll returns)
        finally:
            lp._running -= 1
        lp._recompute_slow()
        self._after(False)

    def _after(self, rescan: bool) -> None:
        """The end of a pass: queued calls, then what the next poll needs."""
        if self._closed:
            return
        lp = self._lp
        if lp._ready:
            lp._running += 1
            try:
                lp._run_ready()
            finally:
                lp._running -= 1
        if len(lp.map) != len(lp._objs):
            lp._reconcile()
        if lp._bad or lp._ready or lp._to_ask or (rescan and lp._asked and lp._scan_asked):
            if not self._kicked:
                self._kicked = True
                self._kick_handle = self.event_loop.call_soon(self._service)
        self._arm()
        if self._driving:
            self._end_driven()
        elif lp._stopping:
            lp._stopping = False
            if self.on_stop is not None:
                self.on_stop()

    def _end_driven(self) -> None:
        # The pass Loop._pass drives (poll() runs asyncio) has had its netloop callback: end
        # the asyncio run. Every callback of this asyncio iteration still runs (fairness);
        # uvloop polls once more before it stops, and what that poll finds waits for the
        # next pass.
        if self._hold_handle is None:
            ev = self.event_loop
            ev.stop()
            self._hold_handle = ev.call_soon(self._set_hold)

    def _set_hold(self) -> None:
        self._hold = True

    def _arm(self) -> None:
        """Keep one asyncio timer at the loop's earliest deadline."""
        lp = self._lp
        timers = lp._timers
        when = timers.next_deadline() if timers._live else None
        if when != self._timer_when:
            if self._timer is not None:
                self._timer.cancel()
            if when is None:
                self._timer = None
            else:
                delay = when - lp._clock()
                self._timer = self.event_loop.call_later(delay if delay > 0 else 0, self._on_timer)
            self._timer_when = when


def poller_factory(name: str) -> Callable[[], AsyncioPoller]:
    """``pollers.by_name("asyncio"|"uvloop")``: a loop on a private asyncio (or uvloop) loop
    that it drives itself (its ``run()`` runs asyncio), as every loop of a program is when
    ``NETLOOP_POLLER=asyncio`` is set. For tests and comparisons; ``attach()`` is the real use."""
    if name == "uvloop":
        import uvloop  # ImportError if it is not installed: the name was asked for

        def make() -> asyncio.AbstractEventLoop:
            made: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return made

        return lambda: AsyncioPoller(factory=make)
    if name == "asyncio":
        return lambda: AsyncioPoller(factory=asyncio.new_event_loop)
    raise ValueError("unknown hosted driver %r" % (name,))


def _default_map() -> ChannelMap:
    # The asyncore facade's socket_map (a program may have reassigned it), else the core's.
    facade = sys.modules.get("netloop.asyncore")
    if facade is not None:
        return facade.socket_map  # type: ignore[no-any-return]
    return _reactor.socket_map


class Attachment:
    """A channel map bound to an asyncio loop by ``attach()``; ``detach()`` undoes it.

    ``loop``: the netloop ``Loop`` of the map. ``event_loop``: the asyncio loop serving it.
    ``stopped``: an asyncio future resolved when ``loop.stop()`` is called (``run()`` waits on
    it). Usable as a context manager (``with netloop.aio.attach(): ...``).
    """

    def __init__(self, lp: Loop, event_loop: asyncio.AbstractEventLoop,
                 nested: Optional[bool] = None) -> None:
        self.loop = lp
        self.event_loop = event_loop
        self.stopped: asyncio.Future[None] = event_loop.create_future()
        self._saved_spec: Any = lp._poller_spec
        self._saved_implicit = lp._implicit
        self._saved_hup = lp._hup_closes
        self._attached = False
        signals = dict(lp._signal_handlers)
        for signum in signals:
            lp.remove_signal_handler(signum)
        if lp._acquired:
            lp._release()  # the native poller and wake-up pipe: new ones come with the driver
        self.poller = AsyncioPoller(event_loop, nested=nested)
        self.poller.on_stop = self._on_stop
        lp._poller_spec = self.poller
        lp._implicit = False  # never give the kernel objects back while attached
        lp._hup_closes = False  # asyncio reports a hang-up as readable, as select() did
        lp._stopping = False
        try:
            lp._acquire()  # registers the wake-up pipe and every channel with asyncio
            for signum, (fn, args) in signals.items():
                lp.add_signal_handler(signum, fn, *args)
        except BaseException:
            self._undo()
            raise
        self._attached = True
        _attachments[id(lp)] = self
        self.poller._after(True)  # arm the first timer, run queued calls, ask channels

    @property
    def attached(self) -> bool:
        """True until ``detach()``."""
        return self._attached

    def _on_stop(self) -> None:
        if not self.stopped.done():
            self.stopped.set_result(None)

    def detach(self) -> None:
        """Release every registration, the timer, the signal handlers and the wake-up pipe
        from the asyncio loop. Channels stay in the map; the loop can run on its own again
        (or be attached again). Call it on the asyncio loop's thread. Idempotent."""
        if not self._attached:
            return
        if self.loop._running:
            raise RuntimeError("detach() from inside a netloop callback: use call_soon")
        self._attached = False
        if _attachments.get(id(self.loop)) is self:
            del _attachments[id(self.loop)]
        self._undo()

    def _undo(self) -> None:
        lp = self.loop
        signals = dict(lp._signal_handlers)
        for signum in signals:
            lp.remove_signal_handler(signum)
        lp._release()  # closes the poller: every add_reader/add_writer is removed
        self.poller.close()
        lp._poller_spec = self._saved_spec
        lp._implicit = self._saved_implicit
        lp._hup_closes = self._saved_hup
        if not self.stopped.done():
            self.stopped.cancel()
        for signum, (fn, args) in signals.items():
            lp.add_signal_handler(signum, fn, *args)

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "attached" if self._attached else "detached"
        return "<netloop.aio.Attachment %s %r on %r>" % (state, self.loop, self.event_loop)


# id(Loop) -> its live attachment (a Loop holds its map, an attachment its Loop).
_attachments: Dict[int, Attachment] = {}


def _after_fork_in_child() -> None:
    # The asyncio loop belongs to the parent: a child's loops go back to their own pollers
    # (the reactor's fork hook, which runs first, already dropped the registrations).
    for handle in list(_attachments.values()):
        handle._attached = False
        lp = handle.loop
        lp._poller_spec = handle._saved_spec
        lp._implicit = handle._saved_implicit
        lp._hup_closes = handle._saved_hup
    _attachments.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def attach(target: Union[None, ChannelMap, Loop] = None, *,
           event_loop: Optional[asyncio.AbstractEventLoop] = None,
           nested: Optional[bool] = None) -> Attachment:
    """Serve ``target`` from the running asyncio loop; returns a handle whose ``detach()``
    undoes it.

    ``target``: a channel map (the global ``socket_map`` when None) or a ``netloop.Loop``.
    ``event_loop``: the asyncio loop to use instead of the running one (for a loop that is
    not running yet; ``Loop.run_once()``/``run()`` then drive it).
    ``nested``: watch the channels through one epoll/kqueue poller of the loop's own, whose
    descriptor asyncio watches (True; the default where the platform has one), or register
    each channel's descriptor with asyncio (False; the only way elsewhere). See the module
    docstring.
    """
    if event_loop is None:
        event_loop = asyncio.get_running_loop()
    if isinstance(target, _reactor.Loop):
        lp = target
    else:
        lp = _reactor.get_loop(_default_map() if target is None else target)
    if lp._closed:
        raise RuntimeError("the loop is closed")
    current = _attachments.get(id(lp))
    if current is not None and current.attached:
        raise RuntimeError("%r is attached already (%r)" % (lp, current))
    if lp._running:
        raise RuntimeError("cannot attach a running loop: %r" % (lp,))
    return Attachment(lp, event_loop, nested)


def run(main: Optional[Awaitable[Any]] = None, *, map: Union[None, ChannelMap, Loop] = None,
        debug: Optional[bool] = None,
        loop_factory: Optional[Callable[[], asyncio.AbstractEventLoop]] = None,
        nested: Optional[bool] = None) -> Any:
    """Run asyncio with ``map`` attached: the drop-in successor of ``asyncore.loop()``.

    With ``main`` (a coroutine), run it to completion and return its result, as
    ``asyncio.run(main)`` would, with the map served meanwhile. Without it, serve the map until
    ``stop()`` is called on its loop (``netloop.get_loop(map).stop()``), or SIGTERM arrives
    (a clean return), or SIGINT (``KeyboardInterrupt``, as ``asyncore.loop()`` raised).
    ``map``: a channel map or a ``Loop`` (the global ``socket_map`` when None).
    ``loop_factory``: makes the asyncio loop (e.g. ``uvloop.new_event_loop``).
    ``nested``: as for ``attach()``.
    """

    async def serve() -> Any:
        handle = attach(map, nested=nested)
        term_installed = False
        try:
            if main is not None:
                return await main
            if threading.current_thread() is threading.main_thread():
                ev = asyncio.get_running_loop()
                try:
                    ev.add_signal_handler(signal.SIGTERM, handle._on_stop)
                    term_installed = True
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
            await handle.stopped
            return None
        finally:
            if term_installed:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
            handle.detach()

    if loop_factory is None:
        return asyncio.run(serve()) if debug is None else asyncio.run(serve(), debug=debug)
    with _Runner(loop_factory(), debug) as runner:
        return runner(serve())


class _Runner:
    """``asyncio.run`` with a given loop, for Pythons before 3.12 (no ``loop_factory``)."""

    def __init__(self, ev: asyncio.AbstractEventLoop, debug: Optional[bool]) -> None:
        self.ev = ev
        if debug is not None:
            ev.set_debug(debug)

    def __enter__(self) -> Callable[[Awaitable[Any]], Any]:
        return self._run

    def _run(self, coro: Awaitable[Any]) -> Any:
        ev = self.ev
        asyncio.set_event_loop(ev)
        task: "asyncio.Task[Any]" = ev.create_task(coro)  # type: ignore[arg-type]
        try:
            return ev.run_until_complete(task)
        except KeyboardInterrupt:
            task.cancel()
            try:
                ev.run_until_complete(task)
            except BaseException:
                pass
            raise

    def __exit__(self, *exc: Any) -> None:
        ev = self.ev
        try:
            pending = [t for t in asyncio.all_tasks(ev) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                ev.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            ev.run_until_complete(ev.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            ev.close()
