"""The dispatcher: a socket wrapped as a channel of a loop, with asyncore's ``handle_*`` API.

``Dispatcher`` behaves as Python 3.11's ``asyncore.dispatcher`` (the same methods, attributes
and event routing) with these differences, each deliberate:

- Interest is registered with the loop, not asked every pass: the class's ``readable()`` and
  ``writable()`` are "known" (``_nl_known``) unless a subclass overrides one, and the dispatcher
  tells its loop when the answer changes (see ``reactor``).
- ``accept()`` failing for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) logs
  one clear line and pauses the listener briefly instead of raising, which in asyncore reached
  ``handle_error()`` and closed the listening socket (or, if caught, spun at 100% CPU).
- The default ``handle_accept()`` accepts a bounded burst per readiness event, not one. On
  Linux, a TCP listener's burst is as long as the kernel's accept queue (``TCP_INFO``), so no
  ``accept()`` is made that can only fail (``EAGAIN``).
- A dispatcher made for a socket its loop accepted in the same pass takes ``addr`` from
  ``accept()`` instead of asking ``getpeername()`` (one system call less per connection). If
  the peer already reset, ``connected`` stays True and the first ``recv()`` reports the close,
  where asyncore had set ``connected`` to False; the channel closes either way.
- ``recv()`` of a socket with nothing to read (a spurious wake-up) returns ``b''`` without
  closing, instead of raising into ``handle_error()``.
- ``log_info()`` goes to the ``netloop`` logger; the asyncore facade prints, as asyncore did.
- ``del_channel()`` removes the map's entry only if it is this channel's: a channel whose
  descriptor was closed behind its back cannot remove the new channel that took the number.
- ``map=`` may be a ``Loop`` (its map is used) wherever a map is taken.
"""

from __future__ import annotations

import logging
import mmap as _mmap
import os
import socket as _socket
import _socket as _c_socket
import struct
import sys
import time
import weakref
from errno import (EALREADY, EBADF, EINPROGRESS, EINVAL, EISCONN, ENOTCONN, EWOULDBLOCK,
                   errorcode)

from .errors import (ACCEPT_RESOURCE, ACCEPT_RETRY, DISCONNECTED, RERAISED, WOULD_BLOCK,
                     compact_traceback, strerror)
from .interest import _allow_close_on_reset
from .limits import HostTally, check_limits
from .pollers import READ_MASK, WRITE
from .reactor import (PAUSED_AT_EOF, PAUSED_RESTING, _abandon, _as_map, _describe, _lookup,
                      _loops, _set_paused, get_loop, socket_map)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

    from .reactor import ChannelMap

    _F = TypeVar("_F", bound=Callable[..., Any])

# Imported up front, not on first use: the first line logged is often about running out of
# descriptors, when an import (which opens files) would fail too.
logger = logging.getLogger("netloop")

__all__ = ["Dispatcher", "known_interest", "accept_burst", "accept_queue_length",
           "READ_BUFFER_SIZE", "ACCEPT_BURST", "ACCEPT_BACKOFF", "ACCEPT_EPISODE_GAP",
           "TLS_HANDSHAKE_TIMEOUT"]

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "debug": logging.DEBUG}

#: Connections the default ``handle_accept()`` takes per readiness event. Enough to drain a
#: burst of connects in one pass, small enough that a connect flood cannot starve the
#: connections already open (each pass also serves them).
ACCEPT_BURST = 32
#: Seconds a listener rests after accept() failed for lack of descriptors or memory.
ACCEPT_BACKOFF = 0.1
#: Seconds accept() must have worked before a new failure counts as a new episode (and logs a
#: new line): freed descriptors are often taken again at once by the backlog that waited.
ACCEPT_EPISODE_GAP = 2.0

# How many connections a Linux TCP listener has waiting: for a listening socket, the kernel
# fills tcp_info's tcpi_unacked field (offset 24) with its accept queue's length (what `ss -l`
# shows as Recv-Q), and tcpi_state (offset 0) with TCP_LISTEN (10). One getsockopt() per
# readiness event lets handle_accept() stop after the last connection instead of calling
# accept() until it fails: a failing accept4() allocates a socket and a file before it finds
# the queue empty, and costs 12 us of CPU here against 2 us for the question (Linux 6.18;
# benchmarks/bench_accept_syscalls.py).
_TCP_INFO = getattr(_socket, "TCP_INFO", None) if sys.platform.startswith("linux") else None
_TCP_INFO_LEN = 28
_TCP_LISTEN = 10
_waiting_in_queue = struct.Struct("=24xI").unpack_from


def accept_queue_length(sock: Any) -> int:
    """Connections waiting in the accept queue of ``sock``, a listening TCP socket on Linux;
    -1 where the kernel cannot tell (another system, a Unix or UDP socket, a socket not
    listening, an object that is not a socket)."""
    if _TCP_INFO is None:
        return -1
    try:
        info = sock.getsockopt(_socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
        return _waiting_in_queue(info)[0] if info[0] == _TCP_LISTEN else -1
    except Exception:
        return -1


def accept_burst(sock: Any, limit: int) -> int:
    """How many ``accept()`` calls a readiness event of the listener ``sock`` gets: as many as
    wait in its accept queue, at least 1 and at most ``limit``; -1 where the queue cannot be
    counted (the caller then accepts up to ``limit``, until a call finds nothing)."""
    waiting = accept_queue_length(sock)
    if waiting < 0:
        return -1
    # A readable listener with an empty queue (another process took the connection): one
    # accept(), which finds out, as before.
    return 1 if waiting < 1 else (waiting if waiting < limit else limit)

#: Seconds ``start_tls()`` gives a handshake (and ``unwrap()`` a close_notify exchange) by
#: default before the channel is closed: a silent peer cannot hold a channel forever.
TLS_HANDSHAKE_TIMEOUT = 30.0

#: The size of each loop's shared read buffer: the most one ``recv_view()`` reads. 128 KiB: on a
#: bulk stream one read and one send per 128 KiB instead of two of each per 64 KiB-read pair
#: (a system call costs per call as much as per byte), and the echo of one read still fits a
#: default Unix socket buffer (~208 KiB), so an echo rarely leaves a tail to copy; 256 KiB
#: (uvloop's size) saved no CPU time measurable here on loopback TCP, and through such a
#: buffer cost 9x the user-space instructions (tails copied and queued every read).
READ_BUFFER_SIZE = 128 * 1024

# The most recv_view() asks of recv() where it cannot read into the shared buffer: recv()
# allocates the size it is given on every call, and 64 KiB stays under glibc's mmap threshold.
_COPY_READ_SIZE = 65536
_NO_VIEW = memoryview(b"")


def _view_size(size: int) -> int:
    if size < 1:
        raise ValueError("recv_view() reads at least 1 byte, not %r" % (size,))
    return size if size < READ_BUFFER_SIZE else READ_BUFFER_SIZE


def _read_buffer() -> memoryview:
    """A loop's shared read buffer (``Dispatcher.recv_view``), as a writable memoryview.

    An anonymous private mapping, not a bytearray: its pages take memory only once a read
    reaches them (a server of small messages touches one page, not 256 KiB), and after a
    fork the child writes its own copy (MAP_PRIVATE; mmap's default would be shared).
    """
    if hasattr(_mmap, "MAP_PRIVATE"):
        return memoryview(_mmap.mmap(-1, READ_BUFFER_SIZE, flags=_mmap.MAP_PRIVATE))
    return memoryview(_mmap.mmap(-1, READ_BUFFER_SIZE))  # pragma: no cover (Windows)


# The peer host string of the last connection accepted (see Dispatcher.accept).
_LAST_HOST: List[Any] = [None]
# A weak reference to the loop of the listener that accepted last (see Dispatcher.accept).
_LAST_LOOP: List[Any] = [None]

# The C socket type's own family/type (socket.socket wraps them in enum conversions), and
# its close (socket.socket.close() reaches it through two Python calls).
# (From the C module: gevent's monkey patching replaces socket.SocketType too.)
_C_SOCKET: Any = _c_socket.socket
_FAMILY = _C_SOCKET.family.__get__
_TYPE = _C_SOCKET.type.__get__
_CLOSE = _C_SOCKET.close
_NEW_SOCKET = _C_SOCKET.__new__
_INIT_SOCKET = _C_SOCKET.__init__


def _plain_socket_class() -> Any:
    """The standard library's socket.socket (socket.py's subclass of the C type), even when
    socket.socket was replaced before netloop was imported (eventlet's or gevent's monkey
    patching, with a class that is no subclass of the C type, or one whose own __init__ the
    fast paths would skip); None if it cannot be found (the fast paths are then never taken)."""
    cls = _socket.socket
    if isinstance(cls, type) and cls.__module__ == "socket" and _C_SOCKET in cls.__bases__:
        return cls
    for sub in _C_SOCKET.__subclasses__():
        if sub.__module__ == "socket" and sub.__qualname__ == "socket":
            return sub
    return None


# The class accept()'s fast path builds, as it was when this module was imported: the four
# methods above belong to it. A program that replaces socket.socket (gevent's and
# eventlet's monkey patching do, with a class that is no subclass of the C type) makes
# listeners of another class, which take socket.accept()'s way (as asyncore's accept() did).
_PLAIN_SOCKET = _plain_socket_class()


class _NoSpare:
    def __enter__(self) -> bool:
        return False

    def __exit__(self, *exc: Any) -> None:
        pass


_NO_SPARE = _NoSpare()


def known_interest(fn: _F) -> _F:
    """Mark a ``readable``/``writable`` implementation whose answer the class reports itself.

    A class whose two predicates are both marked must define ``_nl_mask()`` to give the same
    answer as a poller mask, and call ``_update_interest()`` whenever that answer may change.
    """
    fn._nl_known = True  # type: ignore[attr-defined]
    return fn


_REPR_MODULES = {"netloop.asyncore": "asyncore", "netloop.asynchat": "asynchat"}


class Dispatcher:
    """A non-blocking socket served by a loop, with asyncore's event handlers.

    ``Dispatcher(sock=None, map=None)``: with ``sock`` (a connected or listening socket, made
    non-blocking here) the channel serves it at once; without, call ``create_socket()`` and
    then ``connect()`` or ``bind()`` and ``listen()``. ``map`` is the channel map of the loop
    that serves it (``loop.map``); by default the global ``socket_map``.

    Subclasses override the ``handle_*()`` methods. The defaults of the ones an application
    must provide log an "unhandled ... event" warning, which ``ignore_log_types`` drops unless
    it is changed (as in asyncore).
    """

    debug = False
    # connected, accepting, addr, socket: instance attributes only (set by __init__ on every
    # path), read or stored for every event or connection. CPython 3.12+ never specializes a
    # read or a store of an instance attribute that a class attribute of the same name
    # shadows (it takes the generic lookup, ~300 instructions, where a specialized one costs
    # ~10); 3.11 reads a class default through an instance the slow way too. (A class
    # default that instances only read, never store, costs nothing: connecting, closing.)
    connected: bool
    accepting: bool
    connecting = False
    closing = False
    addr: Any
    ignore_log_types = frozenset({"warning"})
    socket: Any
    _fileno: Optional[int]          # instance only (set by __init__), read by close()
    _nl_loop: Any                   # the loop serving the channel (instance only, as above)
    _nl_known = True
    _nl_plain_read = True     # handle_read_event is this class's own: the loop may skip it
    # The two above as the loop's _add reads them, in one class attribute read (each read of
    # a class attribute costs ~190 instructions on 3.11, for every channel registered).
    _nl_registration = (True, True)
    # set_socket, add_channel and del_channel are this class's own: __init__ and close() do
    # their work in line (one connection set up and torn down makes three calls fewer).
    _nl_plain_map = True
    # Close a connection the peer reset (the poller reports an error with the hang-up) with
    # handle_close() alone, without calling handle_read(): for a class whose handle_read()
    # would only find the reset (its read failing), and that wants nothing the peer sent
    # before it (an echo cannot answer a peer that is gone). Set in the class body.
    _nl_close_on_reset = False
    # Why reading is paused: reactor.PAUSED_* bits (0: reads). An instance attribute only, set
    # by __init__ (read at every registration and close: a class default is read the slow way).
    _nl_paused: int
    # The loop, once it has seen this channel connected and not accepting at a read event,
    # with a class that reads plainly (not in the loop's indirect set): that loop's read events
    # for it then go straight to handle_read(), after this one test (Interest._dispatch). False
    # again whenever the channel's interest may have changed (Interest._update: connect,
    # listen, TLS, pauses), when it registers and when it leaves the map. An instance attribute
    # only, set by __init__.
    _nl_direct: Any
    # On a listener: ask the kernel how many connections wait (_nl_accept_burst); cleared for a
    # socket that cannot tell.
    _nl_count_queue = _TCP_INFO is not None
    _nl_starved = False             # accept() is failing for lack of descriptors (logged once)
    _nl_recovered = -1e9            # time.monotonic() when accept() last worked again
    #: On a listener: take pending connections only to close them while the process is out of
    #: descriptors (through the loop's reserved one), instead of leaving them in the backlog.
    shed_when_exhausted = False
    #: On a listener: the most connections it holds open at once, and from one client address
    #: (None: no limit). Set with ``set_connection_limits()``.
    max_connections: Optional[int] = None
    max_per_address: Optional[int] = None
    _nl_limited = False             # a listener with a connection limit
    _nl_refusing = False            # refusing over a limit (logged once per episode)
    _nl_owner: Any                  # on an accepted channel: the listener counting it (instance)
    _nl_owner_key = 0
    _nl_timers: Any = None          # this channel's own timers, cancelled on close
    _nl_idle: Any                   # the idle-timeout timer, when one is set (instance only)
    # (instance only, set by set_idle_timeout(): _nl_last is stored for every read and send)
    _nl_idle_after: float
    _nl_last: float                 # loop time of the last byte in either direction
    # recv() with nothing to read: False gives b"" (netloop's rule), True lets the
    # BlockingIOError out (asyncore's; the asyncore facade sets it, where b"" means only end of
    # input or a reset).
    _nl_recv_raises_would_block = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._nl_known = (getattr(cls.readable, "_nl_known", False)
                         and getattr(cls.writable, "_nl_known", False))
        cls._nl_plain_read = cls.handle_read_event is Dispatcher.handle_read_event
        cls._nl_registration = (cls._nl_plain_read, cls._nl_known)
        if cls._nl_close_on_reset:
            _allow_close_on_reset()
        cls._nl_plain_map = (cls.set_socket is Dispatcher.set_socket
                             and cls.add_channel is Dispatcher.add_channel
                             and cls.del_channel is Dispatcher.del_channel)

    def __init__(self, sock: Optional[_socket.socket] = None,
                 map: Optional[ChannelMap] = None) -> None:
        given = map  # passed on to set_socket() as given, as asyncore did (None stays None)
        if map is None:
            map = self._default_map()
        elif type(map) is not dict:
            map = _as_map(map)  # a Loop stands for its map; anything else fails clearly
        self._map = map
        # Instance attributes only, with no class default (see the class body): read for
        # every event. (Without a socket, what a subclass set before calling this is kept, as
        # asyncore, which only read a class default here, did.)
        if sock or not hasattr(self, "accepting"):
            self.accepting = False
        self._nl_idle = None
        self._nl_owner = None
        self._nl_paused = 0
        self._nl_loop = None  # set by the loop when it registers the channel (set_socket)
        self._nl_direct = False  # see _nl_direct in the class body
        if sock:
            # The socket may come from a blocking source (accept() of a blocking listener).
            sock.setblocking(False)
            self.connected = True
            if self._nl_plain_map:
                # set_socket(sock, map) and add_channel(map), in line (keep in step with them)
                self.socket = sock
                fd = self._fileno = sock.fileno()
                old = map.get(fd)
                map[fd] = self
                ref = _LAST_LOOP[0]
                lp: Any = ref() if ref is not None else None
                if lp is None or lp.map is not map or not lp._acquired:
                    # (The usual answer for a connection just accepted, but not necessarily:
                    # another thread's loop may have accepted since.)
                    ref = _loops.get(id(map))
                    lp = ref() if ref is not None else None
                if lp is not None and lp._acquired:
                    lp._add(fd, self)  # sets self._nl_loop = lp
                else:
                    if old is not None and old is not self:
                        (lp if lp is not None else get_loop(map))._retire_stale(fd, old, self)
                    lp = None
            else:
                self._fileno = None
                # asyncore called set_socket(sock, map) with the caller's map: None when none
                # was given, so add_channel(None) reads self._map, which an add_channel()
                # override may have redirected (lazr.smtptest's Channel and Server do).
                self.set_socket(sock, given if given is None else map)
                lp = self._nl_loop
            accepted = lp._accepted if lp is not None else None
            if accepted is not None and accepted[0] is sock:
                self.addr = accepted[1]  # what getpeername() would answer
                owner = lp._accepted_by
                if owner is not None:
                    owner._nl_adopt(self, sock)
                return
            try:
                self.addr = sock.getpeername()
            except OSError as err:
                if not hasattr(self, "addr"):  # (as asyncore: a subclass's own is kept)
                    self.addr = None
                if err.errno in (ENOTCONN, EINVAL):
                    # Not connected (yet): a socket handed over before connect().
                    self.connected = False
                    self._update_interest()
                else:
                    # Broken in some other way: do not leave it in the map to be polled.
                    self.del_channel(map)
                    raise
        else:
            self._fileno = None
            self.socket = None
            # What a subclass set before calling this is kept, as asyncore (which only read
            # class defaults here) did. (hasattr, not self.__dict__: reading __dict__ would
            # slow every later attribute read of this instance on 3.11.)
            if not hasattr(self, "connected"):
                self.connected = False
            if not hasattr(self, "addr"):
                self.addr = None

    def _default_map(self) -> ChannelMap:
        """The map used when none is given (the facade answers with its ``socket_map``)."""
        return socket_map

    def __repr__(self) -> str:
        cls = self.__class__
        module = _REPR_MODULES.get(cls.__module__, cls.__module__)
        status = [module + "." + cls.__qualname__]
        # getattr: also for a channel whose __init__ failed or has not run (in a log line)
        addr = getattr(self, "addr", None)
        if getattr(self, "accepting", False) and addr:
            status.append("listening")
        elif getattr(self, "connected", False):
            status.append("connected")
        if addr is not None:
            try:
                status.append("%s:%d" % addr)
            except TypeError:
                status.append(repr(addr))
        return "<%s at %#x>" % (" ".join(status), id(self))

    # ------------------------------------------------------------------ the map
    def add_channel(self, map: Optional[ChannelMap] = None) -> None:
        """Enter this channel in ``map`` (default: the map it was made with), under its descriptor,
        so the loop serving that map watches it. Called by ``set_socket()``; call it yourself
        only for a channel taken out with ``del_channel()``.

        A dispatcher with no socket yet is stored under None, as asyncore did, and never
        watched. The loop asks ``readable()``/``writable()`` at the start of its next pass,
        not here. ``map`` may also be a ``Loop`` (its map is used).
        """
        if map is None:
            map = self._map
        elif type(map) is not dict:
            map = _as_map(map)
        fd: Any = self._fileno  # None for a dispatcher with no socket, as in asyncore
        if fd is None:
            map[fd] = self  # type: ignore[index]  # asyncore kept it under None
            return
        old = map.get(fd)
        map[fd] = self
        lp = _lookup(map)
        if lp is not None and lp._acquired:
            lp._add(fd, self)  # retires a stale channel it had registered under fd
        elif old is not None and old is not self:
            # No loop watches the map now; still, a channel held there under this number lost
            # its descriptor behind its back: retire it without closing the new one.
            (lp if lp is not None else get_loop(map))._retire_stale(fd, old, self)

    def del_channel(self, map: Optional[ChannelMap] = None) -> None:
        """Take this channel out of ``map`` (default: its own map): the loop stops watching its
        descriptor. The socket stays open; ``close()`` calls this and then closes it.
        """
        fd: Any = self._fileno
        if map is None:
            map = self._map
        elif type(map) is not dict:
            map = _as_map(map)
        if map.get(fd) is self:
            # Only this channel's own entry: a new channel that took the number (after this
            # one's descriptor was closed behind its back) keeps its place.
            del map[fd]
        self._fileno = None
        lp = self._nl_loop
        if lp is None:
            lp = _lookup(map)
        if lp is not None and lp._acquired:
            held = lp._objs.get(fd)
            if held is None or held is self:  # not a new channel's, that took the number
                lp._discard(fd)

    def _nl_mask(self) -> int:
        """The poller mask matching this class's ``readable()``/``writable()``."""
        if self._nl_paused:  # reading paused (for any reason): writing goes on
            return 0 if self.accepting else WRITE
        return READ_MASK if self.accepting else READ_MASK | WRITE

    def _nl_set_paused(self, reason: int, on: bool) -> None:
        """Set or clear one reason (``reactor.PAUSED_*``) for not reading."""
        _set_paused(self, reason, on)

    def _update_interest(self) -> None:
        """Tell the loop that ``readable()``/``writable()`` may answer differently now."""
        try:
            lp = self._nl_loop
        except AttributeError:
            return  # before __init__ (old subclasses set out_buffer first): no loop to tell
        if lp is not None:
            lp._update(self)

    # ------------------------------------------------------------------ socket set-up
    def create_socket(self, family: int = _socket.AF_INET, type: int = _socket.SOCK_STREAM) -> None:
        """Make a new non-blocking socket of ``family`` and ``type`` and serve it on this channel's
        map (``set_socket()``). The usual start of a client (then ``connect()``) or a server
        (then ``bind()`` and ``listen()``).
        """
        self.family_and_type = family, type
        sock = self._new_socket(family, type)
        sock.setblocking(False)
        self.set_socket(sock)

    def _new_socket(self, family: int, type: int) -> Any:
        """Make the socket ``create_socket()`` wraps (the facade makes it through its module's
        ``socket`` global, which legacy tests replace with a mock)."""
        return _socket.socket(family, type)

    def set_socket(self, sock: Any, map: Optional[ChannelMap] = None) -> None:
        """Serve ``sock``, an existing socket, on this channel: remember it and add the channel to
        ``map`` (default: its own map). The socket should already be non-blocking.
        """
        if getattr(self, "_nl_paused", 0) & PAUSED_AT_EOF:
            # The end of input of this channel's previous socket is not this one's: read it.
            # (A client whose handle_close() keeps the channel and later reconnects on a new
            # socket with create_socket(), as irc-bot's SimpleIRCBot does.) The bit only:
            # _set_paused() would have the loop watch the old descriptor again; add_channel()
            # below watches the new one with this mask.
            self._nl_paused &= ~PAUSED_AT_EOF
        fd = sock.fileno()
        if fd == getattr(self, "_fileno", None) and sock is not getattr(self, "socket", None):
            # The previous socket was closed by hand and this one took its number, which the
            # loop still watches for this channel: for epoll that watch ended with the old
            # file. Forget it, so that add_channel() watches the new file.
            lp = getattr(self, "_nl_loop", None)
            if lp is not None and lp._acquired and lp._objs.get(fd) is self:
                lp._discard(fd)
        self.socket = sock
        self._fileno = fd
        self.add_channel(map)

    def set_reuse_addr(self) -> None:
        """Let a server rebind its port at once after a restart (SO_REUSEADDR), if possible."""
        try:
            self.socket.setsockopt(
                _socket.SOL_SOCKET, _socket.SO_REUSEADDR,
                self.socket.getsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR) | 1)
        except OSError:
            pass

    # ------------------------------------------------------------------ predicates
    @known_interest
    def readable(self) -> bool:
        """Whether the loop should report this channel readable. The default is always True
        (netloop knows it without asking). Override it, as in asyncore, for a channel that
        should not read for a while; the loop then asks it before each pass (see the README on
        interest).
        """
        return True

    @known_interest
    def writable(self) -> bool:
        """Whether the loop should report this channel writable. The default is always True, as in
        asyncore: a plain ``Dispatcher`` that never writes should override it
        (``BufferedDispatcher`` and ``ChatChannel`` answer from their output queue).
        """
        return True

    # ------------------------------------------------------------------ socket operations
    def listen(self, num: int) -> Any:
        """Start accepting connections with a backlog of ``num``: the channel becomes a listener,
        and each readiness event calls ``handle_accept()``. Returns what ``socket.listen()``
        returns.
        """
        self.accepting = True
        if os.name == "nt" and num > 5:  # pragma: no cover
            num = 5
        result = self.socket.listen(num)
        self._update_interest()
        return result

    def bind(self, addr: Any) -> Any:
        """Bind the socket to ``addr`` (``(host, port)``; port 0 picks a free one) and remember it
        in ``self.addr``. Returns what ``socket.bind()`` returns.
        """
        self.addr = addr
        return self.socket.bind(addr)

    def connect(self, address: Any) -> None:
        """Start connecting to ``address`` without blocking.

        When the connection is made the loop calls ``handle_connect()``. A connection that
        fails later (refused, unreachable) raises ``OSError`` from ``handle_connect_event()``,
        which ends in ``handle_error()`` (by default: log and close). A failure known at once
        raises ``OSError`` here.
        """
        self.connected = False
        self.connecting = True
        err = self.socket.connect_ex(address)
        if err in (EINPROGRESS, EALREADY, EWOULDBLOCK) or err == EINVAL and os.name == "nt":
            self.addr = address
            self._update_interest()
            return
        if err in (0, EISCONN):
            self.addr = address
            self.handle_connect_event()
        else:
            raise OSError(err, errorcode[err])

    def accept(self) -> Optional[Tuple[Any, Any]]:
        """One ``(conn, address)`` from the backlog, or None when there is none to take."""
        sock = self.socket
        try:
            if type(sock) is _PLAIN_SOCKET and sock.gettimeout() == 0.0:
                # socket.accept() without its per-call enum conversions of family and type
                # (the same socket results: a non-blocking listener gives the new socket the
                # default timeout, as socket.accept() does).
                fd, addr = sock._accept()
                # socket.socket(family, type, proto, fileno=fd), without the Python frame of
                # its __init__ and the keyword argument: the C initializer, then the two
                # attributes that __init__ sets (the same on 3.9 to 3.13).
                conn = _NEW_SOCKET(_PLAIN_SOCKET)
                _INIT_SOCKET(conn, _FAMILY(sock), _TYPE(sock), sock.proto, fd)
                conn._io_refs = 0
                conn._closed = False
            else:
                conn, addr = sock.accept()
        except TypeError:
            return None
        except OSError as why:
            if why.errno in ACCEPT_RETRY:
                return None
            if why.errno in ACCEPT_RESOURCE:
                self._accept_exhausted(why)
                return None
            raise
        if self._nl_starved:
            self._nl_starved = False
            self._nl_recovered = time.monotonic()
            self.log_info("accept() works again", "info")
            if self._nl_loop is not None:
                self._nl_loop._take_reserve()  # if the episode cost the loop its reserve
        if type(addr) is tuple:
            # Connections from the host of the previous one (a load balancer, a proxy, a busy
            # client) share its address string: the kernel's answer is a new ~60-byte string
            # each time, kept for the connection's life (0.6 MB at 10,000). One comparison, no
            # hashing: a table of hosts cost 1,400 instructions per connection.
            host = addr[0]
            if host == _LAST_HOST[0]:
                shared = _LAST_HOST[0]
                addr = (shared, addr[1]) if len(addr) == 2 else (shared,) + addr[1:]
            else:
                _LAST_HOST[0] = host
        lp = self._nl_loop
        if lp is not None:
            # A handler made for conn in this pass takes addr from here, saving getpeername(),
            # and finds its loop through _LAST_LOOP, saving the lookup by its map's id (~800
            # instructions).
            pair = lp._accepted = (conn, addr)
            lp._pass_work = True  # the pass drops it at its end
            _LAST_LOOP[0] = lp._weak
            return pair
        return conn, addr

    def _accept_exhausted(self, why: OSError) -> None:
        # The pending connection stays in the backlog: retry when descriptors may be free,
        # without polling a level-triggered listener in a tight loop meanwhile. One line per
        # episode: a retry every ACCEPT_BACKOFF must not flood the log.
        lp = self._nl_loop
        first = not self._nl_starved
        self._nl_starved = True
        # A failure soon after accept() worked again continues the episode that had just ended
        # (the descriptors freed were taken at once by the backlog that waited): no new line.
        if first and time.monotonic() - self._nl_recovered >= ACCEPT_EPISODE_GAP:
            # Logged with the loop's reserved descriptor free, for handlers that need one.
            with lp.spare_descriptor() if lp is not None else _NO_SPARE:
                self.log_info("accept() failed: %s; %s every %.1fs until it works"
                              % (why, "shedding pending connections and retrying"
                                 if self.shed_when_exhausted else "retrying", ACCEPT_BACKOFF),
                              "error")
        if lp is not None:
            if self.shed_when_exhausted:
                self._nl_shed(lp)
            self._nl_rest()

    def _nl_rest(self) -> None:
        # Stop reading from the listener for ACCEPT_BACKOFF (a reason of its own, apart from
        # pause_reading()); the channel's timer goes with it if it closes.
        self._nl_set_paused(PAUSED_RESTING, True)
        self.call_later(ACCEPT_BACKOFF, self._nl_set_paused, PAUSED_RESTING, False)

    def _nl_shed(self, lp: Any) -> None:
        # Out of descriptors: accept what is pending through the loop's reserved descriptor and
        # close it at once, so those clients learn now instead of waiting in the backlog.
        with lp.spare_descriptor() as freed:
            if not freed:
                return
            for _ in range(ACCEPT_BURST):
                try:
                    conn, _ = self.socket.accept()
                except OSError:
                    break
                conn.close()

    # ------------------------------------------------------------------ connection limits
    def set_connection_limits(self, max_connections: Optional[int] = None,
                              max_per_address: Optional[int] = None) -> None:
        """Limit the connections this listener holds open at once: in all
        (``max_connections``) and from one client address (``max_per_address``; IP addresses
        only). None means no limit.

        A connection over a limit is accepted and closed at once (the client sees the
        connection closed, not a hang), with one log line per episode of refusals. A
        connection counts from ``accept()`` until the dispatcher made for it in
        ``handle_accepted()`` closes; a socket handed elsewhere counts until it is closed.
        """
        limited = check_limits(max_connections, max_per_address)
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self._nl_limited = limited
        if self.__dict__.get("_nl_held") is None:
            self._nl_held: Dict[int, Any] = {}       # id(socket) -> client host
            self._nl_tally = HostTally()             # connections held, in all and per host
            self._nl_loose: Dict[int, Any] = {}      # id -> weakref: sockets not made channels
            self._nl_pending: Any = None

    @property
    def connection_count(self) -> int:
        """Connections this listener holds open (counted only while limits are set)."""
        held = self.__dict__.get("_nl_held")
        if not held:
            return 0
        self._nl_prune()
        return len(held)

    def _nl_admit(self, conn: Any, addr: Any) -> bool:
        host = addr[0] if type(addr) is tuple and addr else None
        tally = self._nl_tally
        if not tally.admits(self, host, self._nl_prune, _describe, logger):
            try:
                conn.close()
            except OSError:
                pass
            return False
        key = id(conn)
        self._nl_held[key] = host
        tally.add(host)
        self._nl_pending = (key, weakref.ref(conn))
        lp = self._nl_loop
        if lp is not None:
            lp._accepted_by = self
            lp._pass_work = True
        return True

    def _nl_adopt(self, channel: Dispatcher, sock: Any) -> None:
        # The dispatcher made for a counted connection: it reports its close (exactly).
        pending = self._nl_pending
        if pending is not None and pending[0] == id(sock):
            self._nl_pending = None
            channel._nl_owner = self
            channel._nl_owner_key = pending[0]

    def _nl_settle(self) -> None:
        # After handle_accepted(): a counted socket no dispatcher adopted is checked for being
        # closed when a limit is reached.
        pending = self._nl_pending
        if pending is not None:
            self._nl_pending = None
            self._nl_loose[pending[0]] = pending[1]
        lp = self._nl_loop
        if lp is not None:
            lp._accepted_by = None

    def _nl_release(self, key: int) -> None:
        held = self.__dict__.get("_nl_held")
        if held is None or key not in held:
            return
        self._nl_tally.remove(held.pop(key))
        self._nl_loose.pop(key, None)

    def _nl_prune(self) -> None:
        loose = self.__dict__.get("_nl_loose")
        if loose:
            for key, ref in list(loose.items()):
                sock = ref()
                if sock is None or sock.fileno() < 0:
                    self._nl_release(key)

    def send(self, data: Any) -> int:
        """Send what the socket takes of ``data`` now and return that count: 0 when the socket
        would block, or when the peer is gone (``handle_close()`` has then been called). The
        rest is the caller's to send later; ``BufferedDispatcher.send()`` queues it instead.
        """
        try:
            sent = self.socket.send(data)
            if self._nl_idle is not None and sent:
                self._nl_last = self._nl_idle._queue.clock()
            return sent  # type: ignore[no-any-return]
        except OSError as why:
            self._nl_send_failed(why)
            return 0

    def recv(self, buffer_size: int) -> bytes:
        """Read up to ``buffer_size`` bytes.

        Returns ``b''`` when there is nothing to read yet (a spurious wake-up), at the end of
        input (``handle_read_eof()`` has been called: by default ``handle_close()``), and
        when the connection was reset (``handle_close()`` has been called).
        """
        try:
            data = self.socket.recv(buffer_size)
        except OSError as why:
            # _nl_read_failed()'s rule, in line: a reset peer ends every connection a client
            # resets, and this saves a Python call on that path.
            if why.errno in DISCONNECTED:
                self.handle_close()
            elif (not (why.errno in WOULD_BLOCK or isinstance(why, BlockingIOError))
                  or self._nl_recv_raises_would_block):
                raise
            return b""
        if not data:
            # A readable socket that gives 0 bytes: the peer closed its side.
            self._nl_read_eof()
            return b""
        if self._nl_idle is not None:
            self._nl_last = self._nl_idle._queue.clock()
        return data  # type: ignore[no-any-return]

    def recv_view(self, buffer_size: Optional[int] = None) -> memoryview:
        """Read into the loop's shared read buffer; a view of the bytes read.

        The bulk-transfer form of ``recv()``: one buffer of ``READ_BUFFER_SIZE`` (128 KiB) per
        loop is reused by every channel, so a read makes no new object of its size (``recv()``
        allocates ``buffer_size`` bytes for each call, and above the C allocator's mmap
        threshold, 128 KiB with glibc, that is a fresh mapping and its page faults per read).
        ``buffer_size``: read at most this many bytes (at least 1; None, the default, and
        anything larger mean the whole buffer).

        **The view is valid only until the next ``recv_view()`` on the same loop** (by any
        channel), that is, while the handler that read it runs: use it there, or copy it
        (``bytes(view)``). ``BufferedDispatcher.send(view)`` is safe: what the socket does not
        take at once is copied into the queue. ``push()`` of a chat channel, a list of your own
        or anything else that keeps the object must be given ``bytes(view)``.

        Returns an empty view where ``recv()`` returns ``b''``: nothing to read yet, the end
        of input (``handle_read_eof()`` has been called) or a reset (``handle_close()`` has
        been called). A TLS channel reads at most 64 KiB (``TLSSocket.recv_into()``). A socket
        without ``recv_into()``, or a channel not yet served by a loop, reads with ``recv()``,
        at most 64 KiB (the view is then of bytes of its own).
        """
        try:
            view: memoryview = self._nl_loop._read_view
            if view is None:
                view = self._nl_loop._read_view = _read_buffer()
            if buffer_size is None:
                got = self.socket.recv_into(view)
            else:
                got = self.socket.recv_into(view, _view_size(buffer_size))
        except AttributeError:
            # No loop yet (_nl_loop is None), or a socket with no recv_into() (a wrapper):
            # read with recv() (which fails as it always did for a channel with no socket).
            size = _COPY_READ_SIZE if buffer_size is None else _view_size(buffer_size)
            try:
                return memoryview(self.recv(size if size < _COPY_READ_SIZE else _COPY_READ_SIZE))
            except BlockingIOError:  # the asyncore facade's recv() lets it out
                return _NO_VIEW
        except OSError as why:
            self._nl_read_failed(why)
            return _NO_VIEW
        if not got:
            self._nl_read_eof()
            return _NO_VIEW
        if self._nl_idle is not None:
            self._nl_last = self._nl_idle._queue.clock()
        return view[:got]

    def _nl_read_failed(self, why: OSError) -> None:
        # A read raised ``why`` (called in its except clause): a reset or abort closes the
        # channel (handle_close()), "would block" means nothing to read yet, anything else
        # propagates. Shared by recv(), recv_view() and handlers that read in line.
        if why.errno in DISCONNECTED:
            self.handle_close()
        elif not (why.errno in WOULD_BLOCK or isinstance(why, BlockingIOError)):
            raise

    def _nl_send_failed(self, why: OSError) -> bool:
        # A send raised ``why`` (called in its except clause): True when the peer is gone
        # (handle_close() has been called), False when the socket would block (nothing was
        # taken); anything else propagates.
        if why.errno in WOULD_BLOCK or isinstance(why, BlockingIOError):
            return False
        if why.errno in DISCONNECTED:
            self.handle_close()
            return True
        raise

    def _nl_read_eof(self) -> None:
        # End of input: tell the channel, and stop reading if it stays open (a socket at EOF
        # is readable for ever: reading on would spin).
        self.handle_read_eof()
        if self._fileno is not None and not (self._nl_paused or 0) & PAUSED_AT_EOF:
            _set_paused(self, PAUSED_AT_EOF, True)

    def handle_read_eof(self) -> None:
        """The peer closed its side of the connection (``recv()`` read end of input).

        The default calls ``handle_close()``; a channel with queued output (``BufferedDispatcher``,
        ``ChatChannel``) first sends what is queued, then calls ``handle_close()``. An override
        may keep the channel open to go on writing (the peer may still read: a half-close); the
        channel reads no more, and should ``close()`` when it is done.
        """
        self.handle_close()

    def close(self) -> None:
        """Close the channel: leave the map, cancel its timers (``call_later()``, idle timeout) and
        close the socket. Safe to call more than once.
        """
        if self._nl_timers:
            self._cancel_timers()
        if self._nl_owner is not None:
            owner, self._nl_owner = self._nl_owner, None
            owner._nl_release(self._nl_owner_key)
        # connecting: a class default, stored only by connect() (storing it here would add a
        # key to every channel), and read only where a connect() may be in progress (a class
        # default is read the slow way on 3.11).
        if not self.connected and self.connecting:
            self.connecting = False
        self.connected = False
        self.accepting = False
        if self._nl_paused:
            self._nl_paused = 0
        if self._nl_plain_map:
            # del_channel(), in line (keep in step with it)
            fd: Any = self._fileno
            map = self._map
            if map.get(fd) is self:
                del map[fd]
            self._fileno = None
            lp = self._nl_loop
            if lp is None:
                lp = _lookup(map)
            if lp is not None and lp._acquired:
                lp._discard(fd)
        else:
            self.del_channel()
        sock = self.socket
        if sock is not None:
            try:
                if type(sock) is _PLAIN_SOCKET and sock._io_refs <= 0:
                    # socket.socket.close(), without its two Python calls
                    sock._closed = True
                    _CLOSE(sock)
                else:
                    sock.close()
            except OSError as why:
                if why.errno not in (ENOTCONN, EBADF):
                    raise

    # ------------------------------------------------------------------ TLS (see netloop.tls)
    def start_tls(self, context: ssl.SSLContext, *, server_side: bool = False,
                  server_hostname: Optional[str] = None,
                  handshake_timeout: Optional[float] = TLS_HANDSHAKE_TIMEOUT) -> None:
        """Speak TLS on this channel from now on: at accept/connect time, or mid-stream.

        The handshake runs on the loop without blocking; ``handle_tls_established()`` is called
        when it completes, and from then on ``recv``/``send``/``handle_read`` work as before,
        over TLS. Output sent or pushed meanwhile is queued and goes out after the handshake;
        plaintext already queued (a STARTTLS "go ahead") is sent in the clear first. If called
        right after ``connect()``, the handshake starts once the connection is made.

        ``server_hostname`` names the server a client expects (needed when the context checks
        host names). ``handshake_timeout`` (seconds, None for none) bounds the handshake. A
        handshake that fails or times out logs one line naming the peer and the reason and
        closes the channel through ``handle_close()``.
        """
        from . import tls
        tls.start(self, context, server_side, server_hostname, handshake_timeout)

    def unwrap(self, timeout: Optional[float] = TLS_HANDSHAKE_TIMEOUT) -> None:
        """Leave TLS (close_notify both ways) and go on in the clear (FTP's CCC, say).

        ``handle_tls_unwrapped()`` is called once the peer has answered; until then nothing is
        read or sent. ``timeout`` bounds the wait (the channel is closed when it runs out).
        """
        from . import tls
        tls.unwrap(self, timeout)

    def handle_tls_established(self) -> None:
        """Called when the TLS handshake started by ``start_tls()`` completes (default: no-op).

        ``self.socket.getpeercert()``, ``.version()``, ``.cipher()`` tell what was agreed.
        """

    def handle_tls_unwrapped(self) -> None:
        """Called when ``unwrap()`` completes: the channel speaks plaintext again."""

    def _nl_before_tls(self) -> bytes:
        """Called by ``start_tls()`` first: drop unread plaintext, and take (and return) the
        output still queued, which must go out in the clear before the handshake."""
        return b""

    # ------------------------------------------------------------------ logging
    def log(self, message: Any) -> None:
        """Log ``message`` at DEBUG level on the ``netloop`` logger (asyncore printed it to stderr;
        the asyncore facade still does).
        """
        logger.debug("log: %s", message)

    def log_info(self, message: Any, type: str = "info") -> None:
        """Log ``message`` on the ``netloop`` logger; ``type`` is ``'info'``, ``'warning'``,
        ``'error'`` or ``'debug'``. Types listed in ``ignore_log_types`` (by default
        ``'warning'``, as in asyncore) are dropped.
        """
        if type not in self.ignore_log_types:
            logger.log(_LEVELS.get(type, logging.INFO), "%s: %s", type, message)

    # ------------------------------------------------------------------ event routing
    def handle_read_event(self) -> None:
        """Called by the loop when the socket is readable: on a listener it calls
        ``handle_accept()``, on a socket still connecting ``handle_connect()`` first, then
        ``handle_read()``. Override ``handle_read()`` and friends rather than this.
        """
        if self.accepting:
            # A listening socket is never connected: readable means a connection is waiting.
            self.handle_accept()
        elif not self.connected:
            if self.connecting:
                self.handle_connect_event()
            self.handle_read()
        else:
            self.handle_read()

    def handle_connect_event(self) -> None:
        """Called when a connection started by ``connect()`` completes: raises ``OSError`` if it
        failed, else calls ``handle_connect()`` and marks the channel connected.
        """
        err = self.socket.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err != 0:
            raise OSError(err, strerror(err))
        self.handle_connect()
        self.connected = True
        self.connecting = False
        self._update_interest()

    def handle_write_event(self) -> None:
        """Called by the loop when the socket is writable: completes a pending connect
        (``handle_connect()``) and then calls ``handle_write()``. Listeners ignore it.
        """
        if self.accepting:
            # A listener is never registered for writing; ignore a stray event.
            return
        if not self.connected:
            if self.connecting:
                self.handle_connect_event()
        self.handle_write()

    def handle_expt_event(self) -> None:
        """Called by the loop on an exceptional condition: a pending socket error closes the
        channel (``handle_close()``); otherwise out-of-band data arrived and ``handle_expt()``
        is called.
        """
        # An exceptional condition is either a pending socket error or out-of-band data.
        err = self.socket.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err != 0:
            self.handle_close()
        else:
            self.handle_expt()

    def handle_error(self) -> None:
        """Called when one of this channel's handlers raised. The default logs the exception
        compactly (one line with the traceback's frames) and closes the channel with
        ``handle_close()``; the loop and the other channels go on.
        """
        nil, t, v, tbinfo = compact_traceback()
        try:
            self_repr = repr(self)
        except Exception:
            self_repr = "<__repr__(self) failed for object at %0x>" % id(self)
        self.log_info("uncaptured python exception, closing channel %s (%s:%s %s)"
                      % (self_repr, t, v, tbinfo), "error")
        self.handle_close()

    def handle_expt(self) -> None:
        """Called when out-of-band (urgent) data arrived. The default logs a warning."""
        self.log_info("unhandled incoming priority event", "warning")

    def handle_read(self) -> None:
        """Called when the socket has data to read: override it to ``recv()`` and handle the data.
        The default logs a warning.
        """
        self.log_info("unhandled read event", "warning")

    def handle_write(self) -> None:
        """Called when the socket can take more data: override it to ``send()``. The default logs a
        warning.
        """
        self.log_info("unhandled write event", "warning")

    def handle_connect(self) -> None:
        """Called once when a connection started by ``connect()`` is made. The default logs a
        warning; override it (even with ``pass``) in a client.
        """
        self.log_info("unhandled connect event", "warning")

    def handle_accept(self) -> None:
        """Called when a listener has connections waiting.

        The default accepts up to ``ACCEPT_BURST`` of them (on Linux, for a TCP listener, as
        many as the kernel says are waiting) and calls ``handle_accepted(sock, addr)`` for
        each; an exception there closes only that connection (on the asyncore facade's loop it
        reaches the listener's ``handle_error()``, as in asyncore). Override
        ``handle_accepted()``, not this.
        """
        # A bounded burst: each accept() is one syscall; draining a few per event saves a pass
        # per connection under a connect storm, and the bound keeps other channels served.
        # A failure in handle_accepted() belongs to that connection (see _nl_setup_failed),
        # except for the asyncore drop-in loop, which let it reach the listener as asyncore.
        # (_nl_limited is read once per burst, and the pair passed as two arguments rather than
        # *pair: each is a few hundred instructions per connection on 3.11.)
        lp = self._nl_loop
        limited = self._nl_limited
        burst = self._nl_accept_burst()
        if lp is not None and not lp._contain:
            for _ in range(burst):
                pair = self.accept()
                if pair is None:
                    break
                conn, addr = pair
                if limited and not self._nl_admit(conn, addr):
                    continue
                self.handle_accepted(conn, addr)
                if limited:
                    self._nl_settle()
                if not self.accepting:
                    break
            return
        for _ in range(burst):
            pair = self.accept()
            if pair is None:
                break
            if limited and not self._nl_admit(*pair):
                continue
            try:
                self.handle_accepted(pair[0], pair[1])
            except RERAISED:
                raise
            except BaseException as err:
                self._nl_setup_failed(pair[0], pair[1], err)
            if limited:
                self._nl_settle()
            if not self.accepting:
                break

    def _nl_accept_burst(self, limit: int = ACCEPT_BURST) -> int:
        """How many ``accept()`` calls this readiness event gets (``accept_burst()``), or
        ``limit`` for a listener whose queue cannot be counted."""
        if self._nl_count_queue:
            burst = accept_burst(self.socket, limit)
            if burst > 0:
                return burst
            self._nl_count_queue = False  # not a TCP listener: never asked again
        return limit

    def _nl_setup_failed(self, sock: Any, addr: Any, err: BaseException) -> None:
        """``handle_accepted()`` raised: close that connection (and any channel half made for
        it) with one log line; the listener goes on. Called inside the ``except`` block."""
        fd = sock.fileno()  # -1 if the handler closed it (or a TLS wrapper took it over)
        if isinstance(err, OSError) and err.errno in DISCONNECTED:
            logger.info("netloop: %s: client %s went away while being set up (%s)",
                        _describe(self), addr, err)
        else:
            logger.error("netloop: %s: exception while setting up the connection from %s; "
                         "closing that connection", _describe(self), addr, exc_info=True)
        lp = self._nl_loop
        maps = [self._map] if lp is None or lp.map is self._map else [self._map, lp.map]
        for map in maps:
            channel = map.get(fd) if fd >= 0 else None
            if channel is not None and channel is not self:
                try:
                    channel.close()
                except RERAISED:
                    raise
                except BaseException:
                    _abandon(channel, lp)
                if map.get(fd) is channel:
                    _abandon(channel, lp)
        try:
            sock.close()
        except OSError:
            pass

    def handle_accepted(self, sock: Any, addr: Any) -> None:
        """Called with each accepted connection (``sock``, the client's ``addr``): make a channel
        for it, e.g. ``Handler(sock, map=self._map)``. The default closes the connection and
        logs a warning.
        """
        sock.close()
        self.log_info("unhandled accepted event", "warning")

    def handle_close(self) -> None:
        """Called when the peer closed the connection or it failed. The default logs a warning and
        calls ``close()``; override it to clean up, and call ``close()`` there too.
        """
        self.log_info("unhandled close event", "warning")
        self.close()


    # ------------------------------------------------------------------ timers of the channel
    def _loop_for_timers(self) -> Any:
        lp = self._nl_loop
        return lp if lp is not None else get_loop(self._map)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Any:
        """``Loop.call_later`` on this channel's loop; the timer is cancelled when it closes."""
        handle = self._loop_for_timers().call_later(delay, fn, *args)
        self._track(handle)
        return handle

    def call_every(self, interval: float, fn: Callable[..., Any], *args: Any) -> Any:
        """``Loop.call_every`` on this channel's loop; the timer is cancelled when it closes."""
        handle = self._loop_for_timers().call_every(interval, fn, *args)
        self._track(handle)
        return handle

    def _track(self, handle: Any) -> None:
        timers = self._nl_timers
        if timers is None:
            timers = self._nl_timers = set()
        # Drop fired one-shot timers so a long-lived channel's set stays small.
        if len(timers) > 32:
            timers.difference_update([h for h in timers if not h.active])
        timers.add(handle)

    def _cancel_timers(self) -> None:
        timers, self._nl_timers = self._nl_timers, None
        for handle in timers:
            handle.cancel()
        self._nl_idle = None

    def set_idle_timeout(self, seconds: Optional[float]) -> None:
        """Call ``handle_idle_timeout()`` after ``seconds`` with no byte in either direction.

        ``None`` turns it off. Costs one timer per channel that has it (re-armed lazily, not
        per byte) and nothing for channels that do not.
        """
        if self._nl_idle is not None:
            self._nl_idle.cancel()
            self._nl_idle = None
        if seconds is None:
            return
        if seconds <= 0:
            raise ValueError("idle timeout must be positive")
        lp = self._loop_for_timers()
        self._nl_idle_after = seconds
        self._nl_last = lp.time()
        self._nl_idle = self.call_later(seconds, self._check_idle)

    def _check_idle(self) -> None:
        idle = self._nl_idle
        if idle is None:
            return
        clock = idle._queue.clock if idle._queue is not None else None
        if clock is None:
            return
        due = self._nl_last + self._nl_idle_after
        now = clock()
        if now >= due:
            self._nl_idle = None
            self.handle_idle_timeout()
        else:
            # Activity since the timer was set: sleep until the new deadline.
            self._nl_idle = self.call_later(due - now, self._check_idle)

    def handle_idle_timeout(self) -> None:
        """No byte moved for the idle timeout: the default logs and closes the channel."""
        self.log_info("idle for %gs, closing %r" % (getattr(self, "_nl_idle_after", 0.0), self),
                      "info")
        self.close()
