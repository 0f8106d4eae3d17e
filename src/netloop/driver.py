"""The pollers' driver: ``run``/``run_once`` wait on the loop's poller and hand the events to
``Interest._dispatch``, then run the services (due timers, queued calls).

``_pass`` is the hot path of a loop on its own poller: one flag test covers the rare set-up work
(``_prepare``: kernel objects, map edits made behind the loop's back, asked channels, the poll
timeout from the next timer), then one ``poll()`` and one ``_dispatch`` call. In the runs only
``stop()`` or an empty map ends (``run_forever()``, asyncore's ``loop()``), ``_dispatch`` polls
again itself while no pass needs more than poll and dispatch, so a pass there makes no Python
call but its handlers'. netloop.aio is the other driver of the same interest table and
services: asyncio waits instead of ``poll()``.
"""

from __future__ import annotations

from _thread import get_ident as _get_ident
from errno import EBADF

from . import _timerfd
from .interest import Interest
from .pollers import INVALID

# A run's periodic timer: none on systems without Linux's timerfd.
_NO_TICK = not _timerfd.AVAILABLE

# _pass(go_on=...): a run that only stop() ends (True), or also an empty map (loop()).
_UNTIL_EMPTY = 2

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional, Tuple


class PollDriver(Interest):
    """Running the loop on its poller (a part of ``Loop``)."""

    if TYPE_CHECKING:
        _thread_id: Optional[int]
        _stopping: bool
        _run_lock: Any

        def _without_waker(self, timeout: Optional[float]) -> Optional[float]: ...

    def run_once(self, timeout: Optional[float] = None) -> Optional[float]:
        """Run one pass: poll (at most ``timeout`` seconds; None blocks until an event or the
        next timer, 0 never blocks), dispatch the events, run due timers and queued calls.

        Returns the delay until the next timer (0 if calls are queued), None if none is pending.
        RuntimeError if the loop is running already (see ``run()``). A ``stop()`` asked for
        before the call makes this pass not block, and is consumed by it.
        """
        if timeout is not None and timeout < 0:
            timeout = 0
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
        # The pass that needed set-up checks everything at its end (timers are live, calls
        # queued, ...): the go-on loop of _dispatch stops after it if it must.
        self._pass_work = True
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
        if self._waker is None and self._acquired:
            timeout = self._without_waker(timeout)
        return timeout

    def _pass(self, timeout: Optional[float], go_on: int = 0) -> None:
        # The hot path. One flag test covers the rare set-up work; the events go to _dispatch
        # (one call per pass, shared with netloop.aio's driver), which binds its locals once.
        # go_on (the runs that only stop() or an empty map end): _dispatch polls and
        # dispatches again itself while no pass needs more than that, so this call may run
        # many passes. (A negative timeout was made 0 by run_once()/_run(), the callers.)
        # go_on == _UNTIL_EMPTY: asyncore's loop(), which an empty map ends.
        wait = timeout
        if self._slow or len(self.map) != len(self._objs) or self._ready or self._timers._live:
            acquired = self._acquired
            wait = self._prepare(timeout)
            if not acquired and go_on == _UNTIL_EMPTY and not self.map:
                # Emptied by another thread while this pass took the kernel objects, before
                # the loop had a wake-up pipe to be told by (emailproxy's restart closes the
                # connections its threads are starting to serve): nothing to wait for.
                wait = 0
        # A read, then a call: epoll's poll is the C method stored on the poller instance,
        # which a method lookup would not find fast.
        poll = self._poller.poll  # type: ignore[union-attr]
        try:
            events = poll(wait)
        except OSError as err:
            events = self._poll_failed(err)
        if self._slow and self._bad:  # (refused fds set _slow: one flag test per pass)
            events = self._with_bad(events)
        if events:
            if go_on:
                # Its further polls wait for the run's own cap: this pass's wait was cut short
                # for a timer or a queued call, and neither is pending when it polls again.
                self._dispatch(events, poll, timeout)
            else:
                self._dispatch(events)
        if self._timers._live:
            self._run_timers()
        if self._ready:
            self._run_ready()

    def _with_bad(self, events: Any) -> List[Tuple[int, int]]:
        # The fds the poller refused (select's FD_SETSIZE) join the events as INVALID.
        joined: List[Tuple[int, int]] = list(events)
        joined.extend((fd, INVALID) for fd in self._bad)
        self._bad.clear()
        return joined

    def _poll_failed(self, err: OSError) -> List[Tuple[int, int]]:
        # select() fails as a whole (EBADF) when one registered fd was closed behind its
        # channel's back: find it, stop watching it, and report it as poll(2) would (POLLNVAL).
        poller = self._poller
        find_bad = getattr(poller, "find_bad", None)  # (a select poller, or one wrapping it)
        if poller is not None and find_bad is not None:
            bad = find_bad()
            if bad:
                for fd in bad:  # logged when the INVALID event is dispatched
                    poller.unregister(fd)
                    self._masks.pop(fd, None)
                return [(fd, INVALID) for fd in bad]
            if err.errno == EBADF:
                # None is closed now: another thread unregistered a channel and closed its
                # socket after select() had read the lists and before its system call (a
                # channel closed from another thread while the loop polls). Poll again.
                return []
        raise err

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
        """Like ``run()`` but only ``stop()`` ends it, even when nothing is registered.

        A ``timeout`` is kept by one periodic timer for the run where the system has one
        (Linux), not by a timeout on each poll; see ``Loop._arm_tick``."""
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
        if timeout is not None and timeout < 0:
            timeout = 0  # poll() would block for ever; _pass takes the timeout as it is
        lock = self._claim(channels_only)
        map = self.map
        # Counted as running for the whole run, between its passes too: nothing else runs on
        # this thread between two passes, and it saves two updates per pass.
        self._running += 1
        try:
            if count is None and (forever or channels_only):
                # The usual runs (run_forever(), asyncore's loop()): the leanest loop body.
                one_pass = self._pass
                # With a timeout (asyncore's loop() has 30 s), a periodic timer ends the waits
                # in place of a timeout on each poll where the system has one (_arm_tick):
                # the outermost run only, as a nested legacy run has a timeout of its own.
                ticking = lock is not None and self._start_tick(timeout)
                if forever:
                    while True:
                        one_pass(None if ticking and self._tick_fd >= 0 else timeout, True)
                        if self._stopping:
                            break
                else:
                    while map:
                        one_pass(None if ticking and self._tick_fd >= 0 else timeout,
                                 _UNTIL_EMPTY)
                        if self._stopping:
                            break
            else:
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
                    self._pass(timeout)
                    if self._stopping:
                        break
        finally:
            self._running -= 1
            if lock is not None:
                if self._tick_period is not None:
                    self._end_tick()
                self._stopping = False
                self._thread_id = None
                lock.release()
                if not self._running and not self.map:
                    self._maybe_release()

    def _start_tick(self, period: Optional[float]) -> bool:
        """Ask for the run's periodic timer (see ``Loop._arm_tick``); True when it is armed.
        Takes the kernel objects first if the loop holds none yet (the first pass would).
        No timer for a wait that has no bound or never blocks (None, 0); a period the timer
        cannot hold (``_timerfd.periodic`` refuses it) leaves the polls their timeout.

        Nor for a run whose map holds no listener when it starts: the timer (a descriptor)
        pays off in a server's busy loop, whose waits end thousands of times a second. A
        program that runs a loop per connection, each in a thread of its own (emailproxy),
        would pay a descriptor per connection for it; such a loop waits with its timeout."""
        if _NO_TICK or not period or not self._has_listener():
            return False
        self._tick_period = period
        if not self._acquired:
            self._acquire()
        return self._arm_tick()

    def _has_listener(self) -> bool:
        for obj in list(self.map.values()):
            try:
                if obj.accepting:
                    return True
            except Exception:  # (an object of a legacy map's own, without the attribute)
                pass
        return False

    def _end_tick(self) -> None:
        """The run that asked for the periodic timer ends: close it."""
        self._tick_period = None
        self._close_tick()

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

    @property
    def running(self) -> bool:
        """True from the start to the end of a run (between its passes too)."""
        return self._running > 0 or self._thread_id is not None
