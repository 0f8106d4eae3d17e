"""A self-draining wake-up pipe that another thread, or a signal, uses to end a blocked poll.

The loop registers the read end with its poller itself (it is never put in a channel map). A
thread writes one zero byte; ``signal.set_wakeup_fd`` writes the signal number, which is how
signal handlers reach the loop. A pipe rather than an eventfd because set_wakeup_fd writes single
bytes. Writes that find the pipe full are dropped: the loop is already due to wake.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List


class Waker:
    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)

    def wake(self) -> None:
        try:
            os.write(self.wfd, b"\0")
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass  # closed during loop shutdown

    def drain(self) -> List[int]:
        """Empty the pipe; returns the signal numbers found in it (zero bytes are wake-ups)."""
        signals: List[int] = []
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
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.rfd = self.wfd = -1
