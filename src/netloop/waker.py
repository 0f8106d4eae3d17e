"""The self-draining wake-up object that another thread, or a signal, uses to end a blocked poll.

The loop registers its read end with its poller itself (it is never put in a channel map). A
thread makes it readable; ``signal.set_wakeup_fd`` writes the signal number, which is how
signal handlers reach the loop. Writes that find it full are dropped: the loop is already due
to wake.

Two kinds:
- a pipe (two descriptors), which ``set_wakeup_fd`` can write its single bytes to: the kind of
  a loop taken in the main thread, the only one that handles signals;
- an eventfd (one descriptor; Linux, Python 3.10+) for a loop taken in any other thread, whose
  wake-ups are only other threads'. A program that runs a loop per connection, each in a
  thread (emailproxy), spends one descriptor fewer per connection. Such a loop that is later
  asked to handle a signal swaps it for a pipe (``Loop._waker_for_signals``).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

_EVENTFD = getattr(os, "eventfd", None)
_EVENTFD_FLAGS = getattr(os, "EFD_NONBLOCK", 0) | getattr(os, "EFD_CLOEXEC", 0)
_ONE = (1).to_bytes(8, sys.byteorder)  # what an eventfd is written: a count, in host order


class Waker:
    """``signals``: whether ``set_wakeup_fd`` may write to it (a pipe); without, an eventfd
    where the system has one."""

    __slots__ = ("rfd", "wfd", "signals", "forward", "replaced", "_token")

    def __init__(self, signals: bool = True) -> None:
        self.forward: Optional[Waker] = None  # set when replaced: wakes go to both
        self.replaced: Optional[Waker] = None  # the one this replaced: closed with this
        if not signals and _EVENTFD is not None:
            try:
                fd = _EVENTFD(0, _EVENTFD_FLAGS)
            except OSError:
                pass  # (out of descriptors: the pipe below fails the same way, clearly)
            else:
                self.rfd = self.wfd = fd
                self.signals = False
                self._token = _ONE
                return
        self.rfd, self.wfd = os.pipe()
        try:
            os.set_blocking(self.rfd, False)
            os.set_blocking(self.wfd, False)
        except OSError:
            self.close()
            raise
        self.signals = True
        self._token = b"\0"

    def wake(self) -> None:
        try:
            os.write(self.wfd, self._token)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass  # closed during loop shutdown
        forward = self.forward
        if forward is not None:
            forward.wake()

    def drain(self) -> List[int]:
        """Empty it; returns the signal numbers found in it (zero bytes are wake-ups)."""
        signals: List[int] = []
        if self.rfd == self.wfd:  # an eventfd: one read resets its count
            try:
                os.read(self.rfd, 8)
            except OSError:
                pass
            return signals
        while True:
            try:
                data = os.read(self.rfd, 4096)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            signals.extend(b for b in data if b)
            if len(data) < 4096:
                break
        return signals

    def close(self) -> None:
        if self.replaced is not None:
            self.replaced.close()
            self.replaced = None
        for fd in {self.rfd, self.wfd}:
            if fd < 0:
                continue
            try:
                os.close(fd)
            except OSError:
                pass
        self.rfd = self.wfd = -1
