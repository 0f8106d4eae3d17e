"""A periodic timer descriptor (Linux ``timerfd``) for the loop's long runs (``Loop._arm_tick``).

Python 3.13 has ``os.timerfd_create``; on 3.9-3.12 the same two C library calls are made through
``ctypes``. That is imported here, with netloop, never when a run starts: a module imported
while the loop starts runs importlib's own callbacks, and a KeyboardInterrupt that a signal
handler raises inside one of them is ignored by Python ("Exception ignored in ... cb"), so a
SIGTERM sent just as a server came up was lost (found by tests/test_examples.py on 3.9). It
costs about 400 KB of RSS on those versions. If ctypes or the C library fails, there is no timer
and the loop's polls keep their timeouts, as without it.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Tuple

#: Linux only: elsewhere no run asks for a timer.
AVAILABLE = sys.platform.startswith("linux")

_CLOCK_MONOTONIC = getattr(time, "CLOCK_MONOTONIC", 1)
# On Linux TFD_NONBLOCK and TFD_CLOEXEC are O_NONBLOCK and O_CLOEXEC (the kernel defines them so).
_FLAGS = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)

def _load_libc() -> Optional[Tuple[Any, Any, Any, Any]]:
    """(timerfd_create, timerfd_settime, the itimerspec type, get_errno) from the C library
    through ctypes; None where that cannot be had."""
    try:
        import ctypes

        class Timespec(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

        class Itimerspec(ctypes.Structure):
            _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]

        libc = ctypes.CDLL(None, use_errno=True)
        create = libc.timerfd_create
        create.argtypes = [ctypes.c_int, ctypes.c_int]
        create.restype = ctypes.c_int
        settime = libc.timerfd_settime
        settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(Itimerspec),
                            ctypes.c_void_p]
        settime.restype = ctypes.c_int
        return (create, settime, Itimerspec, ctypes.get_errno)
    except Exception:  # no ctypes in this build, no such symbol: no timer
        return None


# Loaded now (see the module's docstring), only where the os module has no timerfd.
_libc = _load_libc() if AVAILABLE and not hasattr(os, "timerfd_create") else None


def periodic(seconds: float) -> int:
    """A new non-blocking, close-on-exec descriptor that becomes readable every ``seconds``
    (read its 8-byte expiration count to clear it). OSError when none can be made."""
    if not AVAILABLE:
        raise OSError(38, "no timerfd on this system")  # ENOSYS
    if seconds <= 0 or seconds >= 2 ** 31:
        raise ValueError("period out of range: %r" % (seconds,))
    make: Any = getattr(os, "timerfd_create", None)
    if make is not None:
        fd = make(_CLOCK_MONOTONIC, flags=_FLAGS)
        try:
            getattr(os, "timerfd_settime")(fd, initial=seconds, interval=seconds)
        except BaseException:
            os.close(fd)
            raise
        return fd  # type: ignore[no-any-return]
    libc = _libc
    if libc is None:
        raise OSError(38, "no timerfd in this Python (no ctypes)")
    create, settime, itimerspec, get_errno = libc
    fd = create(_CLOCK_MONOTONIC, _FLAGS)
    if fd < 0:
        err = get_errno()
        raise OSError(err, os.strerror(err))
    whole = int(seconds)
    nsec = int(round((seconds - whole) * 1e9))
    if nsec >= 1000000000:
        whole, nsec = whole + 1, nsec - 1000000000
    if whole == 0 and nsec == 0:
        nsec = 1  # (a zero expiry would disarm the timer)
    spec = itimerspec()
    spec.it_interval.tv_sec = spec.it_value.tv_sec = whole
    spec.it_interval.tv_nsec = spec.it_value.tv_nsec = nsec
    if settime(fd, 0, spec, None) < 0:
        err = get_errno()
        os.close(fd)
        raise OSError(err, os.strerror(err))
    return fd  # type: ignore[no-any-return]
