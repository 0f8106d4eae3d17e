"""Drop-in replacement for Python 3.11's ``asyncore``, served by netloop's reactor.

Every public name of the 3.11 module, with its behaviour: ``socket_map`` is this module's global
(reassigning it is honoured, as it was), ``log_info`` prints and ``log`` writes to stderr, and
``poll``/``poll2``/``readwrite`` keep their one-shot semantics for code that calls them directly.
``loop()`` runs on netloop's ``Loop`` for the map; it also accepts ``poller=``. On Python 3.12+,
``netloop.compat.install()`` makes ``import asyncore`` find this module.

Faults: under this module's ``loop()``/``poll()``/``poll2()``, an exception raised by
``handle_error()`` or ``handle_close()`` leaves the loop, and one raised by
``handle_accepted()`` goes to the listener's ``handle_error()``, as in asyncore (CPython's
``test_asyncore`` makes its handlers' ``handle_error()`` re-raise so that a failed assertion
ends the test). The same dispatchers served by a core ``Loop`` (``run()``,
``run_forever()``) get the core's guarantees instead: logged, that channel closed, the loop goes
on. Either way, output queued by ``dispatcher_with_send`` is sent before the close that follows
the peer's half-close (asyncore dropped it), and its queue stays unbounded unless
``set_write_buffer_limits()`` is called.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time
import warnings
from errno import (EAGAIN, EALREADY, EBADF, ECONNABORTED, ECONNRESET, EINPROGRESS, EINVAL,
                   EISCONN, ENOTCONN, EPIPE, ESHUTDOWN, EWOULDBLOCK, errorcode)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs a server ~1 MiB
    from typing import Any, Optional

from . import reactor as _reactor
from .buffered import BufferedDispatcher as _BufferedDispatcher
from .dispatcher import Dispatcher as _Dispatcher
from .errors import DISCONNECTED as _DISCONNECTED
from .errors import RERAISED as _reraised_exceptions
from .errors import ExitNow, compact_traceback
from .errors import strerror as _strerror
from .files import FileDispatcher as _FileDispatcher
from .files import FileWrapper as _FileWrapper

__all__ = [
    "ExitNow", "close_all", "compact_traceback", "dispatcher", "dispatcher_with_send",
    "file_dispatcher", "file_wrapper", "loop", "poll", "poll2", "poll3", "read", "readwrite",
    "socket_map", "write",
]

#: The default channel map; the same dict as ``netloop.reactor.socket_map`` unless reassigned.
socket_map = _reactor.socket_map

# Names asyncore had at module level, re-exported for code that reaches for them there.
_ = (EALREADY, EINPROGRESS, EWOULDBLOCK, ECONNRESET, EINVAL, ENOTCONN, ESHUTDOWN, EISCONN,
     EBADF, ECONNABORTED, EPIPE, EAGAIN, errorcode, os, socket, time, sys, warnings,
     _strerror)


def _map(map: Optional[Any]) -> Any:
    if map is None:
        return socket_map
    if type(map) is not dict:
        return _reactor._as_map(map)  # a Loop stands for its map
    return map


def read(obj: Any) -> None:
    try:
        obj.handle_read_event()
    except _reraised_exceptions:
        raise
    except BaseException:
        obj.handle_error()


def write(obj: Any) -> None:
    try:
        obj.handle_write_event()
    except _reraised_exceptions:
        raise
    except BaseException:
        obj.handle_error()


def _exception(obj: Any) -> None:
    try:
        obj.handle_expt_event()
    except _reraised_exceptions:
        raise
    except BaseException:
        obj.handle_error()


def readwrite(obj: Any, flags: int) -> None:
    try:
        if flags & select.POLLIN:
            obj.handle_read_event()
        if flags & select.POLLOUT:
            obj.handle_write_event()
        if flags & select.POLLPRI:
            obj.handle_expt_event()
        if flags & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            obj.handle_close()
    except OSError as e:
        if e.errno not in _DISCONNECTED:
            obj.handle_error()
        else:
            obj.handle_close()
    except _reraised_exceptions:
        raise
    except BaseException:
        obj.handle_error()


def poll(timeout: Optional[float] = 0.0, map: Optional[Any] = None) -> None:
    """One pass with select()-style dispatch, on the map's loop.

    As with asyncore, the map's keys may be descriptors or objects with ``fileno()`` (sockets),
    and the call may come from inside a handler (it runs a nested pass). A map made for one
    call leaves no kernel object behind once nothing holds it.
    """
    map = _map(map)
    if map:
        lp = _reactor.get_loop(map)
        if _reactor._select_replaced(lp):
            lp.set_poller("select")
        saved = lp._hup_closes, lp._contain
        lp._hup_closes, lp._contain = False, False  # handle_error() may raise out, as in asyncore
        try:
            lp._run(timeout, 1, forever=False, channels_only=True)
        finally:
            lp._hup_closes, lp._contain = saved


def poll2(timeout: Optional[float] = 0.0, map: Optional[Any] = None) -> None:
    """One pass with poll()-style dispatch (hang-ups reach ``handle_close()``)."""
    map = _map(map)
    if map:
        lp = _reactor.get_loop(map)
        saved = lp._hup_closes, lp._contain
        lp._hup_closes, lp._contain = True, False  # handle_error() may raise out, as in asyncore
        try:
            lp._run(timeout, 1, forever=False, channels_only=True)
        finally:
            lp._hup_closes, lp._contain = saved


poll3 = poll2


def loop(timeout: Optional[float] = 30.0, use_poll: bool = False, map: Optional[Any] = None,
         count: Optional[int] = None, poller: Optional[Any] = None) -> None:
    _reactor.loop(timeout, use_poll, _map(map), count, poller)


loop.__doc__ = _reactor.loop.__doc__


class dispatcher(_Dispatcher):
    """asyncore.dispatcher: netloop's ``Dispatcher`` with asyncore's printed logging."""

    # asyncore's class defaults connected, accepting and addr are instance attributes here,
    # set by __init__ on every path (keeping what a subclass set before calling it): on
    # CPython 3.12+ a class attribute that an instance attribute of the same name shadows
    # makes every read and store of it take the generic lookup (the legacy echo server paid
    # about 2,900 instructions per connection on 3.13 for these three). Only reading them
    # from the class itself differs. (Slots would keep the names on the class, but a slot
    # added below a class with a __dict__ costs far more: 3.13 then specializes none of the
    # instance's attribute reads, 10,700 instructions per ping-pong request against 7,900.)
    # recv() with nothing to read raises BlockingIOError, as asyncore's did: b"" means end of
    # input or a reset only (handle_close() has been called), and code that reads until
    # BlockingIOError, or takes b"" for the peer gone, must not be told otherwise.
    _nl_recv_raises_would_block = True

    def _default_map(self) -> Any:
        return socket_map

    def _new_socket(self, family: int, type: int) -> Any:
        # Through this module's global, looked up now: code that sets `asyncore.socket` to a
        # mock module (CPython's test_smtpd does) gets mock sockets, as with asyncore.
        return socket.socket(family, type)

    def log(self, message: Any) -> None:
        sys.stderr.write("log: %s\n" % str(message))

    def log_info(self, message: Any, type: str = "info") -> None:
        if type not in self.ignore_log_types:
            print("%s: %s" % (type, message))


class dispatcher_with_send(_BufferedDispatcher, dispatcher):
    """asyncore.dispatcher_with_send, with a send queue that never copies its backlog.

    As in asyncore the queue has no limit (``write_high_water = None``); set watermarks with
    ``set_write_buffer_limits()`` to stop reading from a peer that does not read. Unlike
    asyncore, output queued when the peer closes its side is sent before ``handle_close()``.
    """

    write_high_water = None

    def _nl_send_nothing(self) -> None:
        # asyncore's initiate_send() sent out_buffer[:65536] even when it was empty, so the
        # write event after a connect, and a send(b""), called socket.send(b""). Nothing on a
        # plain socket; on an ssl.SSLSocket made with do_handshake_on_connect=False that a
        # handle_connect() set, it starts the handshake (the ClientHello goes out) and raises
        # SSLWantReadError, which programs that drive do_handshake() from their events catch
        # and rely on (emailproxy: without it neither side spoke). As asyncore: would-block
        # is nothing, a gone peer closes, anything else reaches the caller.
        _Dispatcher.send(self, b"")


if os.name == "posix":
    class file_wrapper(_FileWrapper):
        """asyncore.file_wrapper."""

    class file_dispatcher(_FileDispatcher, dispatcher):
        """asyncore.file_dispatcher."""

        wrapper_class = file_wrapper


def close_all(map: Optional[Any] = None, ignore_all: bool = False) -> None:
    map = _map(map)
    for x in list(map.values()):
        try:
            x.close()
        except OSError as err:
            if err.errno == EBADF:
                pass
            elif not ignore_all:
                raise
        except _reraised_exceptions:
            raise
        except BaseException:
            if not ignore_all:
                raise
    map.clear()
    lp = _reactor._lookup(map)
    if lp is not None:
        lp._maybe_release()
