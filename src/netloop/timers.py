"""Timers: a heap of deadlines with O(1) cancellation.

A cancelled timer stays in the heap, marked, and is dropped when it reaches the top (lazy
removal); when more than half of a large heap is cancelled the heap is rebuilt without them, so
cancelling many timers (idle timeouts that never fire) keeps memory and pops bounded. Cancelled
timers never count as pending work, so they neither keep a loop alive nor shorten its sleep.
"""

from __future__ import annotations

import heapq
import itertools

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Tuple

__all__ = ["TimerHandle", "TimerQueue"]

_COMPACT_MIN = 64


class TimerHandle:
    """A scheduled call. ``cancel()`` is O(1); ``reset()`` re-arms it ``interval`` from now."""

    __slots__ = ("when", "interval", "callback", "args", "cancelled", "_queue", "_seq")

    def __init__(self, queue: "TimerQueue", when: float, interval: Optional[float],
                 callback: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        self._queue: Optional[TimerQueue] = queue
        self.when = when
        self.interval = interval
        self.callback = callback
        self.args = args
        self.cancelled = False
        self._seq = 0

    def cancel(self) -> None:
        """Stop this timer. Calling it again, or after the timer fired, does nothing."""
        if not self.cancelled:
            self.cancelled = True
            q = self._queue
            if q is not None:
                q._cancelled_one(self)

    def reset(self, delay: Optional[float] = None) -> None:
        """Move the deadline to ``delay`` (default: the timer's interval) from now.

        Works on a pending, fired or cancelled timer alike: it is scheduled again.
        """
        q = self._queue
        if q is None:
            raise RuntimeError("this timer's loop is closed")
        if delay is None:
            delay = self.interval if self.interval is not None else 0.0
        q._reschedule(self, q.clock() + delay)

    @property
    def active(self) -> bool:
        """True while the timer is scheduled (not cancelled, not yet fired)."""
        return not self.cancelled and self._seq > 0

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else ("every %gs" % self.interval
                                                   if self.interval else "once")
        return "<TimerHandle %s at %.3f %r>" % (state, self.when, self.callback)


class TimerQueue:
    """The heap behind a loop's ``call_later``/``call_at``/``call_every``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._heap: List[Tuple[float, int, TimerHandle]] = []
        self._counter = itertools.count(1)
        self._live = 0  # scheduled and not cancelled
        # Called after each timer is scheduled or re-armed (the loop sets it while it holds
        # its kernel objects, to wake whoever waits on its behalf).
        self.on_schedule: Optional[Callable[[], None]] = None

    def __len__(self) -> int:
        """How many timers are pending (cancelled ones do not count)."""
        return self._live

    def schedule(self, when: float, interval: Optional[float], callback: Callable[..., Any],
                 args: Tuple[Any, ...]) -> TimerHandle:
        handle = TimerHandle(self, when, interval, callback, args)
        self._push(handle, when)
        return handle

    def _push(self, handle: TimerHandle, when: float) -> None:
        seq = next(self._counter)
        handle.when = when
        handle._seq = seq
        handle.cancelled = False
        heapq.heappush(self._heap, (when, seq, handle))
        self._live += 1
        if self.on_schedule is not None:
            self.on_schedule()

    def _cancelled_one(self, handle: TimerHandle) -> None:
        if handle._seq > 0:  # still in the heap
            self._live -= 1
            self._maybe_compact()

    def _maybe_compact(self) -> None:
        heap = self._heap
        if len(heap) > _COMPACT_MIN and self._live < len(heap) // 2:
            self._heap = [e for e in heap if e[2]._seq == e[1] and not e[2].cancelled]
            heapq.heapify(self._heap)

    def _reschedule(self, handle: TimerHandle, when: float) -> None:
        stale = handle._seq > 0 and not handle.cancelled
        if stale:
            self._live -= 1  # its old heap entry becomes stale (seq no longer matches)
        self._push(handle, when)
        if stale:
            # A timer reset on every message (a keep-alive) must not grow the heap by one
            # stale entry per reset until the old deadlines pass.
            self._maybe_compact()

    def next_deadline(self) -> Optional[float]:
        """The earliest pending deadline, or None when no timer is pending."""
        heap = self._heap
        while heap:
            when, seq, handle = heap[0]
            if handle._seq == seq and not handle.cancelled:
                return when
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> List[TimerHandle]:
        """Take every timer due at ``now`` off the heap, earliest first.

        Repeating timers are pushed back at their next deadline before they run, so a callback
        that cancels its own handle stops it for good.
        """
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            when, seq, handle = heapq.heappop(heap)
            if handle._seq != seq or handle.cancelled:
                continue
            self._live -= 1
            handle._seq = 0
            if handle.interval is not None:
                nxt = when + handle.interval
                if nxt <= now:  # fell behind (a long pass): skip the missed beats
                    nxt = now + handle.interval
                self._push(handle, nxt)
            due.append(handle)
        return due

    def close(self) -> None:
        for _, _, handle in self._heap:
            handle._queue = None
        self._heap.clear()
        self._live = 0
