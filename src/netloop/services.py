"""The loop's services: timers, queued calls, the wake-up pipe and signal handlers.

Timers are a ``TimerQueue`` (timers.py) on the loop's clock; queued calls a deque run at the end
of a pass; the wake-up pipe (waker.py) ends a blocked poll from another thread or a signal.
Work scheduled from outside a pass calls ``_scheduled()``, which tells whoever waits on the
loop's behalf: a host watching ``fileno()`` (through the wake-up pipe) or a hosting driver
(its poller's ``notify()``, netloop.aio). A driver with signal handling of its own (asyncio)
takes the signal handlers through its poller's ``add_signal``/``remove_signal``.
"""

from __future__ import annotations

import logging
import signal
import threading

from .errors import RERAISED
from .pollers import READ
from .waker import Waker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Deque, Dict, Optional, Tuple

    from .pollers import Poller
    from .timers import TimerHandle, TimerQueue

# logging, signal and threading are imported up front: a fault path (running out of
# descriptors) must never need an import, which opens files.
logger = logging.getLogger("netloop")


class Services:
    """Timers, queued calls, wake-up and signals (a part of ``Loop``)."""

    if TYPE_CHECKING:
        _timers: TimerQueue
        _ready: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]]
        _signal_handlers: Dict[int, Tuple[Callable[..., Any], Tuple[Any, ...]]]
        _old_wakeup_fd: Optional[int]
        _waker: Optional[Waker]
        _wake_fd: int
        _waker_missing: bool

        def _recompute_slow(self) -> None: ...
        _poller: Optional[Poller]
        _notify: Optional[Callable[[], None]]
        _clock: Callable[[], float]
        _acquired: bool
        _running: int
        _pass_work: bool

        def _acquire(self) -> None: ...

    def _on_wake(self) -> None:
        # Whoever woke the loop (another thread, a signal) changed something the pass must
        # look at at its end (see Loop._pass_work): a map it emptied, a call it queued, a
        # stop. Its change comes before its byte, so it is seen here.
        self._pass_work = True
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

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None:
            waker.wake()

    def _scheduled(self) -> None:
        """A call or timer was scheduled. Outside a pass, nobody would see it before the next
        event: tell whoever waits for the loop (a host watching ``fileno()``: the wake-up
        pipe; a hosting driver: its ``notify()``). Inside a pass, the pass sees it
        (``_pass_work``). Also the timer queue's ``on_schedule``."""
        self._pass_work = True
        if not self._running:
            notify = self._notify
            if notify is not None:
                notify()

    def time(self) -> float:
        """The loop's clock (monotonic seconds): the time base of ``call_at``."""
        return self._clock()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop at the end of the current (or next) pass."""
        self._ready.append((fn, args))
        self._pass_work = True
        if not self._running:
            self._scheduled()

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """``call_soon`` from any thread: wakes the loop if it is blocked in poll."""
        self._ready.append((fn, args))
        self._pass_work = True  # (before the wake-up: the pass it ends must see it)
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
        waker = self._waker_for_signals()
        if not self._signal_handlers:
            old = signal.set_wakeup_fd(waker.wfd, warn_on_full_buffer=False)
            self._old_wakeup_fd = old
        signal.signal(signum, _ignore_in_frame)
        self._signal_handlers[signum] = (fn, args)

    def _waker_for_signals(self) -> Waker:
        """The loop's waker, a pipe: one taken in another thread is an eventfd, which
        ``set_wakeup_fd``'s single bytes cannot be written to (waker.py). The swap may happen
        while the loop polls in its own thread: a wake-up sent meanwhile reaches the new one
        (``forward``), and the old one stays open until the new one is closed, so that no
        late write lands in a reused descriptor number."""
        old = self._waker
        assert self._poller is not None
        if old is not None and old.signals:
            return old
        new = Waker(signals=True)  # (out of descriptors: OSError, add_signal_handler's)
        try:
            self._poller.register(new.rfd, READ)
        except BaseException:
            new.close()
            raise
        if old is None:  # taken when the loop had none (out of descriptors): see _take_waker
            self._waker = new
            self._wake_fd = new.rfd
            self._waker_missing = False
            self._recompute_slow()
            return new
        new.replaced = old
        old.forward = new
        self._waker = new
        self._wake_fd = new.rfd
        try:
            self._poller.unregister(old.rfd)
        except (OSError, ValueError, KeyError):
            pass
        # Ends a poll in progress in the loop's thread, which may not watch the new one yet
        # (select, poll), and (forward) makes the new one readable for the pass after it.
        old.wake()
        return new

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
            if not self._acquired and self._waker is not None:
                # Kept by a release for set_wakeup_fd's sake (Loop._release): not needed now.
                self._waker.close()
                self._waker = None
        return True


def ignored_signals(*signums: int) -> "frozenset[int]":
    """Those of ``signums`` whose disposition is SIG_IGN now: a server's command line leaves
    them ignored, as the interpreter leaves SIGINT ignored when it started so (a job started
    in the background of a non-interactive shell, ``nohup``), and as smtpd's command line did."""
    return frozenset(n for n in signums if signal.getsignal(n) is signal.SIG_IGN)


def _ignore_in_frame(signum: int, frame: Any) -> None:
    """The Python-level handler: the work happens on the loop, woken through set_wakeup_fd."""
