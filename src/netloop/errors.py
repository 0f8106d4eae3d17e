"""The errno policy in one place, and the exceptions the loop treats specially.

Which socket errors mean "the peer is gone" (close the channel quietly), which mean "not now"
(try again when the poller says so), and which exceptions must leave the loop instead of going
to a channel's ``handle_error()``.
"""

from __future__ import annotations

import errno
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Tuple, Type

__all__ = [
    "ExitNow",
    "DISCONNECTED",
    "WOULD_BLOCK",
    "ACCEPT_RETRY",
    "ACCEPT_RESOURCE",
    "RERAISED",
    "strerror",
    "compact_traceback",
]


class ExitNow(Exception):
    """Raised by a handler to leave ``loop()`` at once (it is never passed to ``handle_error``)."""


#: The peer is gone or the socket is no longer usable: the channel is closed, no traceback.
DISCONNECTED = frozenset(
    {errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED, errno.EPIPE,
     errno.EBADF}
)

#: A non-blocking call that has nothing to do yet.
WOULD_BLOCK = frozenset({errno.EWOULDBLOCK, errno.EAGAIN})

#: accept() failures that concern one aborted client only: skip it and go on.
ACCEPT_RETRY = frozenset(
    {errno.EWOULDBLOCK, errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO, errno.EINTR}
)

#: accept() failures that say the process (or system) is out of a resource. The listener must
#: not be closed for them, and must not be polled in a tight loop either: back off.
ACCEPT_RESOURCE = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
)

#: Exceptions that leave the loop rather than being handed to ``handle_error()``.
RERAISED: Tuple[Type[BaseException], ...] = (ExitNow, KeyboardInterrupt, SystemExit)


def strerror(err: int) -> str:
    """``os.strerror`` that never fails, for error codes from ``SO_ERROR`` and the like."""
    try:
        return os.strerror(err)
    except (ValueError, OverflowError, NameError):
        if err in errno.errorcode:
            return errno.errorcode[err]
        return "Unknown error %s" % err


def compact_traceback() -> Tuple[Tuple[str, str, str], type, BaseException, str]:
    """Summarise the exception being handled as asyncore did.

    Returns ``((file, function, line), type, value, info)`` where the first item names the
    innermost frame and ``info`` lists every frame as ``[file|function|line]``.
    """
    t, v, tb = sys.exc_info()
    if tb is None:
        raise AssertionError("traceback does not exist")
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append((code.co_filename, code.co_name, str(tb.tb_lineno)))
        tb = tb.tb_next
    del tb
    info = " ".join("[%s|%s|%s]" % frame for frame in frames)
    assert t is not None and v is not None
    return frames[-1], t, v, info
