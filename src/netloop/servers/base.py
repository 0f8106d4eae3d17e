"""BaseServer on the reactor: socketserver's request pipeline, driven by a netloop loop.

The server's socket is a channel of a loop (``_Listener``). When the loop reports it readable,
the server takes a bounded burst of requests (``get_request()`` until it would block, at most
``ACCEPT_BURST``), and for each one runs socketserver's pipeline unchanged: ``verify_request``,
``process_request`` (which ThreadingMixIn and ForkingMixIn move off the loop), ``handle_error``
and ``shutdown_request``, with the standard library's exception rules.

Which loop. A server made with no ``loop=``/``map=`` gets a private map and loop of its own,
so the usual socketserver patterns keep working unchanged: one server per thread, each in its
own ``serve_forever()``, or ``handle_request()`` called in a loop. The global ``socket_map`` is
deliberately not the default: two servers in two threads would then share one loop, which only
one thread may run, and a server never closed would stay in every later ``asyncore.loop()``.
Pass ``loop=`` (a ``netloop.Loop``) or ``map=`` (a channel map, e.g. ``netloop.socket_map``) to
put several servers and any dispatchers on one loop; then ``serve_forever()`` of any of them,
``Loop.run()`` or ``netloop.loop(map=...)`` serves them all in one thread. ``set_loop()`` moves
a server whose class cannot pass the keyword through its constructor.

A private loop holds its kernel objects (poller, wake-up pipe) only while ``serve_forever()`` or
``handle_request()`` runs, as socketserver held its selector, so an idle server costs its socket
alone, and one that is never closed is collected like any other object.

``service_actions()`` runs after every pass of the server's own ``serve_forever()``. A server on
a shared loop that someone else runs gets it after each burst of requests it handles and, if its
class overrides ``service_actions`` (ForkingMixIn does, to reap children), every
``service_interval`` seconds from a loop timer.

Shutdown. ``shutdown()`` from another thread wakes the loop through its wake-up pipe and returns
as soon as ``serve_forever()`` has returned, not after ``poll_interval``. Called on the loop's own
thread (from a request handler run by a synchronous server, a dispatcher, a timer or a signal
handler added with ``Loop.add_signal_handler``), it does not wait, which would deadlock: it
stops the server and ``serve_forever()`` returns after the current pass. Called while
``serve_forever()`` is not running, it stops accepting and returns at once (socketserver would
block until some later ``serve_forever()`` ended). Once ``shutdown()`` has begun, no request is
taken: the burst checks before every ``get_request()``, and the socket leaves the loop, so
connections wait in the kernel's backlog for a later ``serve_forever()``/``handle_request()``.

Deliberate differences from socketserver, each for robustness:

- Errors of ``get_request()`` are sorted: "would block" ends the burst; a connection or datagram
  that vanished is skipped; lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) logs
  one line and rests the socket ``ACCEPT_BACKOFF`` seconds, where socketserver polled it again at
  once (100% CPU); repeated other failures also rest it instead of spinning. The server's socket
  is never closed because of a client.
- ``handle_error()`` prints one line, not a traceback, for a client that reset the connection or
  timed out (``ConnectionError``, ``TimeoutError``); other exceptions print as socketserver did.
- A socket timeout of 0.0 on the server's socket (netloop makes TCP listeners non-blocking) does
  not count as a ``handle_request()`` timeout.

Connection limits (``set_connection_limits()``, as on a ``Dispatcher`` listener). Each request
taken counts from ``get_request()`` until its life ends: when ``process_request()`` returns for a
synchronous server, when the handler's thread has finished (``ThreadingMixIn``), when the child
process has been reaped (``ForkingMixIn``); a TLS request counts from its handshake on, a PROXY
protocol request from the reading of its header on. A request over a limit is shut down at once
(``shutdown_request()``, as a request ``verify_request()`` refuses, so a TCP client sees the
connection closed), with one warning per episode of refusals on the ``netloop.servers`` logger.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import sys
import threading
import traceback
import weakref
from time import monotonic as _time
from typing import Any, Callable, Dict, List, Optional, TypeVar

from ..dispatcher import ACCEPT_BACKOFF, ACCEPT_BURST, Dispatcher
from ..errors import ACCEPT_RESOURCE, ACCEPT_RETRY, WOULD_BLOCK
from ..limits import HostTally, check_limits
from ..reactor import ChannelMap, Loop
from ..reactor import get_loop as _map_loop
from ..timers import TimerHandle

__all__ = ["BaseServer"]

logger = logging.getLogger("netloop.servers")

_S = TypeVar("_S", bound="BaseServer")


class _Ticket:
    """One request counted against the server's connection limits, until released."""

    __slots__ = ("host", "ref", "live")

    def __init__(self, host: Any, ref: Any) -> None:
        self.host = host
        self.ref = ref      # weak reference to the request socket (None for datagrams)
        self.live = True


def _weak(request: Any) -> Any:
    try:
        return weakref.ref(request)
    except TypeError:  # a datagram request: (data, socket)
        return None

if hasattr(selectors, "PollSelector"):
    _WaitSelector: Any = selectors.PollSelector
else:  # pragma: no cover
    _WaitSelector = selectors.SelectSelector

# The thread driving each loop through a server's serve_forever()/handle_request(), so that
# work for that loop coming from other threads can be handed to it (Loop.run() records its
# own thread; run_once(), which servers use, does not).
_drivers: "weakref.WeakKeyDictionary[Loop, int]" = weakref.WeakKeyDictionary()


def _loop_thread(lp: Loop) -> Optional[int]:
    ident = _drivers.get(lp)
    if ident is None:
        ident = getattr(lp, "_thread_id", None)
    return ident


def _noop() -> None:
    """Queued with call_soon_threadsafe() to wake a loop blocked in poll."""


def _release_kernel_objects(lp: Loop) -> None:
    # Give back the poller and wake-up pipe of a private loop between two serve_forever() or
    # handle_request() calls; the loop takes new ones on its next pass. Loop offers no public
    # method for this yet, hence the private call.
    if not lp.running and not getattr(lp, "_signal_handlers", None):
        release = getattr(lp, "_release", None)
        if release is not None:
            release()


class _Listener(Dispatcher):
    """The server's socket as a channel: readiness runs the server's request pipeline.

    It never closes the socket: hang-ups and errors are reported to the server, which decides.
    """

    accepting = True  # read interest only

    def __init__(self, server: "BaseServer", map: ChannelMap) -> None:
        Dispatcher.__init__(self, None, map)
        # Dispatcher.__init__ sets the instance attribute to False: without this the listener
        # would also ask for write readiness, which a UDP socket always has (a busy loop).
        self.accepting = True
        self.server = server

    def handle_read_event(self) -> None:
        self.server._nl_ready()

    def handle_write_event(self) -> None:
        pass

    def handle_expt_event(self) -> None:
        pass

    def handle_close(self) -> None:
        self.server._nl_hangup()

    def handle_error(self) -> None:
        # Only exceptions the server's pipeline lets through get here: those socketserver lets
        # out of serve_forever() (BaseException that is not an Exception). Let them out.
        exc = sys.exc_info()[1]
        if exc is not None:
            raise exc

    def __repr__(self) -> str:
        return "<netloop listener of %s at %#x>" % (type(self.server).__name__, id(self.server))


class BaseServer:
    """The request pipeline of socketserver's ``BaseServer``, served by a netloop loop.

    Run it with ``serve_forever(poll_interval=0.5)`` or ``handle_request()``; stop it with
    ``shutdown()`` and release it with ``server_close()`` (or a ``with`` block). ``get_loop()``
    and ``set_loop()`` say or choose the loop. The hooks a subclass may replace are
    socketserver's: ``server_bind``, ``server_activate``, ``get_request``, ``handle_timeout``,
    ``verify_request``, ``process_request``, ``shutdown_request``, ``close_request``,
    ``service_actions`` and ``handle_error``; ``finish_request`` builds the handler.

    ``loop`` / ``map`` (keyword-only): the loop, or the channel map, to serve this server from
    (default: a private one). See the module's documentation.
    """

    #: Seconds ``handle_request()`` waits for a request (None: no limit).
    timeout: Optional[float] = None
    #: On a shared loop, seconds between two ``service_actions()`` calls from a loop timer when
    #: the class overrides ``service_actions`` (None: only after bursts of requests).
    service_interval: Optional[float] = 0.5
    #: The most requests served at once, in all and from one client address (None: no limit).
    #: Set with ``set_connection_limits()``.
    max_connections: Optional[int] = None
    max_per_address: Optional[int] = None
    _nl_limited = False       # a limit is set: requests are counted
    _nl_refusing = False      # refusing over a limit (logged once per episode)
    _nl_tickets: Optional[Dict[int, _Ticket]] = None  # id(request) -> its ticket, in the pipeline
    _nl_listen_timeout: Optional[Any] = None  # (weakref to socket, its timeout before non-blocking)

    def __init__(self, server_address: Any, RequestHandlerClass: Callable[..., Any], *,
                 loop: Optional[Loop] = None, map: Optional[ChannelMap] = None) -> None:
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        # The names socketserver uses (name-mangled the same way), for code that reads them.
        self.__is_shut_down = threading.Event()
        self.__shutdown_request = False
        self._nl_lock = threading.Lock()          # serving state, between threads
        self._nl_chan_lock = threading.RLock()    # attaching and detaching the listener
        self._nl_listener: Optional[_Listener] = None
        self._nl_own_loop: Optional[Loop] = None
        self._nl_given_loop: Optional[Loop] = None
        self._nl_map: ChannelMap = {}
        self._nl_shared = False
        self._nl_listening = False   # requests may be taken (False once shutdown() began)
        self._nl_serving = False     # serve_forever() is running
        self._nl_driver: Optional[int] = None  # thread in serve_forever()/handle_request()
        self._nl_budget: Optional[int] = None  # 1 while handle_request() runs
        self._nl_events = 0
        self._nl_deferred: Optional[BaseException] = None
        self._nl_fail_streak = 0
        self._nl_exhausted = False  # an EMFILE episode logged, not yet over
        self._nl_timer: Optional[TimerHandle] = None
        self._nl_closed = False
        self._nl_use(loop, map)

    # ------------------------------------------------------------------ the loop
    def _nl_use(self, loop: Optional[Loop], map: Optional[ChannelMap]) -> None:
        if loop is not None:
            if map is not None and map is not loop.map:
                raise ValueError("loop= and map= name different maps")
            self._nl_given_loop = loop
            self._nl_map = loop.map
            self._nl_shared = True
        elif map is not None:
            self._nl_given_loop = None
            self._nl_map = map
            self._nl_shared = True
        else:
            self._nl_given_loop = None
            self._nl_map = {}
            self._nl_shared = False

    def get_loop(self) -> Loop:
        """The loop that serves this server (its private one unless ``loop=``/``map=`` said)."""
        if self._nl_given_loop is not None:
            return self._nl_given_loop
        if self._nl_shared:
            return _map_loop(self._nl_map)
        lp = self._nl_own_loop
        if lp is None:
            try:
                lp = Loop(self._nl_map)
            except ValueError:
                lp = _map_loop(self._nl_map)
            self._nl_own_loop = lp
        listener = self._nl_listener
        if (self._nl_listening and not self._nl_closed and self._nl_driver is None
                and (listener is None or listener._fileno is None)):
            # Activated but not attached yet (see _nl_activate()): whoever runs the private
            # loop itself (get_loop().run_once()) serves the server, as before.
            try:
                self._nl_attach()
            except (OSError, ValueError, TypeError):
                pass  # no usable socket (yet): serve_forever()/handle_request() will say so
        return lp

    def set_loop(self, loop: Optional[Loop] = None, *, map: Optional[ChannelMap] = None) -> None:
        """Serve this server from ``loop`` (or the loop of ``map``; neither: a private loop).

        For classes whose constructor does not pass ``loop=`` through (the standard library's
        servers rebuilt on netloop, say). Not while ``serve_forever()`` or
        ``handle_request()`` runs.
        """
        if self._nl_driver is not None:
            raise RuntimeError("set_loop() while the server is being served")
        listener = self._nl_listener
        attached = listener is not None and listener._fileno is not None
        if attached:
            self._nl_on_loop_thread(self._nl_detach)
        own = self._nl_own_loop
        if own is not None and not own.running:
            own.close()
        self._nl_own_loop = None
        self._nl_listener = None
        self._nl_use(loop, map)
        if attached or (self._nl_listening and self._nl_shared):
            self._nl_on_loop_thread(self._nl_attach)

    def _nl_current_loop(self) -> Optional[Loop]:
        """The loop if one exists already (never makes a private one)."""
        if self._nl_given_loop is not None or self._nl_shared:
            return self.get_loop()
        return self._nl_own_loop

    def _nl_on_loop_thread(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` now, or, if the loop is running in another thread, between two of its
        passes (waiting for it to be done)."""
        lp = self._nl_current_loop()
        me = threading.get_ident()
        owner = _loop_thread(lp) if lp is not None else None
        # A loop driven by someone's own run_once() calls has no known thread: act at once, as
        # socketserver would (the caller must then be that thread, or the loop idle).
        if lp is None or not lp.running or owner is None or owner == me:
            fn()
            return
        done = threading.Event()
        claim_lock = threading.Lock()
        claimed: List[bool] = []

        def claim() -> bool:
            with claim_lock:
                if claimed:
                    return False
                claimed.append(True)
                return True

        def on_loop() -> None:
            if claim():
                try:
                    fn()
                finally:
                    done.set()

        lp.call_soon_threadsafe(on_loop)
        # Bounded waits: if the loop stops without running the call, do it here instead.
        while not done.wait(0.05):
            if not lp.running and claim():
                try:
                    fn()
                finally:
                    done.set()

    def _nl_activate(self) -> None:
        """Start taking requests: called by ``server_activate()`` of the socket servers."""
        self._nl_listening = True
        if not self._nl_shared:
            # A private loop runs only in serve_forever()/handle_request() or after
            # get_loop(), which attach the socket. socketserver's constructor does no more
            # than bind() and listen(): a socket that is not yet usable here (a test's mock)
            # must not fail the constructor.
            return
        self._nl_on_loop_thread(self._nl_attach)

    def _nl_attach(self) -> None:
        with self._nl_chan_lock:
            listener = self._nl_listener
            if listener is None or listener._map is not self._nl_map:
                listener = self._nl_listener = _Listener(self, self._nl_map)
            fd = self.fileno()  # type: ignore[attr-defined]
            if listener._fileno is not None:
                if listener._fileno == fd and listener.socket is getattr(self, "socket", None):
                    return
                # ``socket`` was replaced since it was attached (as socketserver allows before
                # serve_forever(): a listener handed over by fromfd(), an SSL wrapper): watch
                # the socket the server has now, not a number that may be closed or reused.
                self._nl_detach()
            if fd < 0:
                raise ValueError("the server's socket is closed")
            # An open socket is being served: the server is no longer closed, even if
            # server_close() ran before (socketserver's server_close() only closes the socket,
            # and code such as werkzeug's reloader then assigns a new one to ``socket``).
            self._nl_closed = False
            listener.socket = getattr(self, "socket", None)
            listener._nl_paused = False
            listener._fileno = fd
            listener.add_channel(self._nl_map)
            if (self._nl_shared and self.service_interval
                    and type(self).service_actions is not BaseServer.service_actions):
                self._nl_timer = self.get_loop().call_every(self.service_interval,
                                                            self._nl_service_tick)

    def _nl_detach(self) -> None:
        with self._nl_chan_lock:
            timer = self._nl_timer
            if timer is not None:
                timer.cancel()
                self._nl_timer = None
            listener = self._nl_listener
            if listener is not None and listener._fileno is not None:
                listener.del_channel()

    def _nl_pause(self) -> None:
        listener = self._nl_listener
        if listener is not None and listener._fileno is not None:
            lp = listener._nl_loop or self._nl_current_loop()
            if lp is not None:
                lp.pause_reading(listener, ACCEPT_BACKOFF)

    def _nl_release_private(self) -> None:
        lp = self._nl_own_loop
        if lp is not None and not self._nl_shared:
            if self._nl_closed:
                if not lp.running:
                    lp.close()
                    self._nl_own_loop = None
            else:
                _release_kernel_objects(lp)

    def _nl_service_tick(self) -> None:
        if self._nl_closed:
            return
        try:
            self.service_actions()
        except Exception:
            logger.error("netloop: %r: exception in service_actions()", self, exc_info=True)

    # ------------------------------------------------------------------ readiness
    def _nl_ready(self) -> None:
        """The server's socket is readable (called by the listener, on the loop's thread)."""
        if not self._nl_listening or self._nl_closed:
            # shutdown() has begun: stop watching; what is pending stays in the kernel.
            self._nl_detach()
            return
        if self._nl_budget is not None:
            self._nl_events += 1
        own = self._nl_driver == threading.get_ident()
        try:
            self._nl_serve_ready(self._nl_budget or ACCEPT_BURST)
            if not own:
                self.service_actions()
        except Exception as exc:
            if own:
                # socketserver lets these out of serve_forever()/handle_request(): so do we,
                # once the loop's pass is over.
                if self._nl_deferred is None:
                    self._nl_deferred = exc
            else:
                logger.error("netloop: %r: exception while taking requests; still serving",
                             self, exc_info=True)

    def _nl_can_burst(self) -> bool:
        """True if ``get_request()`` raises instead of blocking when nothing is pending."""
        return False

    def _nl_burst(self, limit: int) -> int:
        """How many ``get_request()`` calls one readiness event gets (at most ``limit``): one
        for a socket that may block; else, on Linux, as many as wait in a TCP listener's
        accept queue (the listener's ``_nl_accept_burst()``: the call after the last would
        only fail, and a failing accept() is the dearest system call of a connection)."""
        if not self._nl_can_burst():
            return 1
        listener = self._nl_listener
        return limit if listener is None else listener._nl_accept_burst(limit)

    def _nl_serve_ready(self, limit: int) -> None:
        # A bounded burst: one get_request() per loop pass would cost a pass per connection
        # under a connect storm; an unbounded one would let a flood starve every other channel
        # of the loop. A socket that may block takes one request per readiness event, as
        # socketserver did.
        burst = self._nl_burst(limit)
        for _ in range(burst):
            if not self._nl_listening:
                break
            try:
                request, client_address = self.get_request()
            except OSError as err:
                if self._nl_request_failed(err):
                    continue
                break
            self._nl_fail_streak = 0
            self._nl_exhausted = False  # the next EMFILE episode is logged again
            if self._nl_limited and not self._nl_admit(request, client_address):
                continue
            self._nl_process(request, client_address)

    def _nl_request_failed(self, err: OSError) -> bool:
        """Sort a ``get_request()`` failure; True means: try the next request now."""
        code = err.errno
        if isinstance(err, (BlockingIOError, socket.timeout)) or code in WOULD_BLOCK:
            self._nl_fail_streak = 0
            return False
        if code in ACCEPT_RETRY or code == errno.EMSGSIZE:
            # One client's connection vanished, or its datagram was refused: skip it.
            self._nl_fail_streak = 0
            return True
        if code in ACCEPT_RESOURCE:
            if self._nl_exhausted:
                self._nl_pause()  # this episode was logged already (one line, as listeners)
                return False
            self._nl_exhausted = True
            logger.error("netloop: %s %s: cannot take a request: %s; resting %.1fs (the server's "
                         "socket stays open)", type(self).__name__, self._nl_where(), err,
                         ACCEPT_BACKOFF)
            self._nl_pause()
            return False
        sock = getattr(self, "socket", None)
        if sock is not None and sock.fileno() < 0:
            self._nl_detach()
            return False
        logger.debug("netloop: %s %s: get_request() failed: %s", type(self).__name__,
                     self._nl_where(), err)
        self._nl_fail_streak += 1
        if self._nl_fail_streak >= ACCEPT_BURST:
            logger.warning("netloop: %s %s: get_request() failed %d times in a row (last: %s); "
                           "resting %.1fs", type(self).__name__, self._nl_where(),
                           self._nl_fail_streak, err, ACCEPT_BACKOFF)
            self._nl_fail_streak = 0
            self._nl_pause()
            return False
        return True

    def _nl_hangup(self) -> None:
        """The poller reported an error or hang-up on the server's socket."""
        sock = getattr(self, "socket", None)
        if self._nl_closed or sock is None or sock.fileno() < 0:
            self._nl_detach()
            return
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            what = errno.errorcode.get(err, str(err)) if err else "a hang-up"
        except OSError as exc:
            what = str(exc)
        logger.warning("netloop: %s %s: the server's socket reported %s; resting %.1fs",
                       type(self).__name__, self._nl_where(), what, ACCEPT_BACKOFF)
        self._nl_pause()

    def _nl_where(self) -> str:
        return repr(self.server_address)

    def _nl_process(self, request: Any, client_address: Any) -> None:
        """socketserver's handling of one request taken by ``get_request()``."""
        try:
            try:
                accepted = self.verify_request(request, client_address)
            except BaseException:
                self.shutdown_request(request)
                raise
            if accepted:
                try:
                    self.process_request(request, client_address)
                except Exception:
                    self.handle_error(request, client_address)
                    self.shutdown_request(request)
                except BaseException:
                    self.shutdown_request(request)
                    raise
            else:
                self.shutdown_request(request)
        finally:
            if self._nl_tickets:
                # Not claimed by a mixin that serves it elsewhere: its life ends here.
                self._nl_release(self._nl_claim(request))

    # ------------------------------------------------------------------ connection limits
    def set_connection_limits(self, max_connections: Optional[int] = None,
                              max_per_address: Optional[int] = None) -> None:
        """Limit the requests this server serves at once: in all (``max_connections``) and
        from one client address (``max_per_address``; IP addresses only). None means no limit.

        A request over a limit is taken and shut down at once (the client sees the connection
        closed, not a hang), with one warning per episode of refusals. A request counts from
        ``get_request()`` until its handler has finished: in its thread (``ThreadingMixIn``), in
        its child process, once reaped (``ForkingMixIn``). Requests are counted only while a
        limit is set.
        """
        limited = check_limits(max_connections, max_per_address)
        if self._nl_tickets is None:
            self._nl_count_lock = threading.Lock()
            self._nl_tally = HostTally()  # requests held, in all and per host (under the lock)
            self._nl_tickets = {}
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self._nl_limited = limited

    @property
    def connection_count(self) -> int:
        """Requests this server is serving (counted only while limits are set)."""
        if self._nl_tickets is None:
            return 0
        self._nl_reclaim()
        return self._nl_tally.total

    def _nl_admit(self, request: Any, client_address: Any) -> bool:
        """Count a request taken, or refuse it (shut it down) if a limit is reached."""
        addr = client_address
        host = addr[0] if type(addr) is tuple and addr else None
        tally = self._nl_tally
        if not tally.admits(self, host, self._nl_reclaim, _describe_server, logger):
            try:
                self.shutdown_request(request)
            except OSError:
                pass
            return False
        tickets = self._nl_tickets
        assert tickets is not None
        old = tickets.get(id(request))
        if old is not None:
            self._nl_release(old)  # a closed request whose id was reused
        with self._nl_count_lock:
            tally.add(host)
        tickets[id(request)] = _Ticket(host, _weak(request))
        return True

    def _nl_claim(self, request: Any) -> Optional[_Ticket]:
        """Take the ticket of ``request`` out of the pipeline (None if it has none): whoever
        claims it releases it when the request's life ends."""
        tickets = self._nl_tickets
        if not tickets:
            return None
        return tickets.pop(id(request), None)

    def _nl_pass_on(self, request: Any, ticket: Optional[_Ticket]) -> None:
        """Put a claimed ticket back in the pipeline, for ``request`` (a TLS socket, say)."""
        tickets = self._nl_tickets
        if ticket is not None and tickets is not None:
            ticket.ref = _weak(request)
            tickets[id(request)] = ticket

    def _nl_release(self, ticket: Optional[_Ticket]) -> None:
        """The request of ``ticket`` has ended: it no longer counts (idempotent)."""
        if ticket is None:
            return
        with self._nl_count_lock:
            if not ticket.live:
                return
            ticket.live = False
            self._nl_tally.remove(ticket.host)

    def _nl_reclaim(self) -> None:
        """Release what ended unseen: requests still in the pipeline whose socket was closed
        (a PROXY header refused, a request closed by an override). ForkingMixIn reaps too."""
        tickets = self._nl_tickets
        if not tickets:
            return
        for key, ticket in list(tickets.items()):
            ref = ticket.ref
            if ref is None:
                continue
            sock = ref()
            try:
                closed = sock is None or sock.fileno() < 0
            except (OSError, ValueError):
                closed = True
            if closed and tickets.get(key) is ticket:
                tickets.pop(key, None)
                self._nl_release(ticket)

    def _nl_raise_deferred(self) -> None:
        exc = self._nl_deferred
        if exc is not None:
            self._nl_deferred = None
            raise exc

    # ------------------------------------------------------------------ serving
    def server_activate(self) -> None:
        """Called by the constructor to activate the server; may be overridden."""

    def serve_forever(self, poll_interval: Optional[float] = 0.5) -> None:
        """Serve requests (and every other channel of the loop) until ``shutdown()``.

        ``poll_interval`` caps each pass's wait (on Linux by one periodic timer, not a timeout
        on each poll); ``service_actions()`` runs after every pass.
        ``shutdown()`` needs no pass to end: it wakes the loop.
        """
        lp = self.get_loop()
        me = threading.get_ident()
        with self._nl_lock:
            if self._nl_driver is not None:
                raise RuntimeError("this server is already being served")
            if lp.running:
                raise RuntimeError("%r is already running (in this or another thread); it serves "
                                   "this server already" % (lp,))
            self.__is_shut_down.clear()
            stop_now = self.__shutdown_request
            self._nl_serving = True
            self._nl_driver = me
            if not stop_now:
                self._nl_listening = True
        previous = _drivers.get(lp)
        _drivers[lp] = me
        ticking = False
        try:
            if not stop_now:
                self._nl_attach()
                # As for asyncore's loop(): one periodic timer bounds the waits where the system
                # has one, not a timeout on every poll (a kernel timer armed per sleep; see
                # Loop._arm_tick). service_actions() still runs at least every poll_interval.
                # (Nothing else runs this loop meanwhile: a timer it holds is this call's.)
                ticking = True  # (ended below even if arming it fails: it records the period)
                lp._start_tick(poll_interval)
                while not self.__shutdown_request:
                    lp.run_once(None if lp._tick_fd >= 0 else poll_interval)
                    self._nl_raise_deferred()
                    if self.__shutdown_request:
                        break
                    self.service_actions()
        finally:
            if ticking:
                lp._end_tick()
            if previous is None:
                _drivers.pop(lp, None)
            else:
                _drivers[lp] = previous
            with self._nl_lock:
                shut = self.__shutdown_request
                self.__shutdown_request = False
                self._nl_serving = False
                self._nl_driver = None
            if shut and not stop_now:
                self._nl_detach()
            self._nl_release_private()
            self.__is_shut_down.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever()``; from another thread, return once it has returned.

        No request is taken after this call. On the loop's own thread (in a handler of a
        synchronous server, say) it only asks: ``serve_forever()`` returns after the current
        pass. If ``serve_forever()`` is not running it returns at once.
        """
        with self._nl_lock:
            self.__shutdown_request = True
            self._nl_listening = False
            serving = self._nl_serving
            driver = self._nl_driver
        if serving:
            if driver == threading.get_ident():
                return
            self.get_loop().call_soon_threadsafe(_noop)
            self.__is_shut_down.wait()
        else:
            self._nl_on_loop_thread(self._nl_detach)

    def service_actions(self) -> None:
        """Called after each pass of ``serve_forever()``; override for periodic work."""

    def handle_request(self) -> None:
        """Handle one request, waiting at most ``timeout`` seconds for it.

        With no request in time, ``handle_timeout()`` is called (and its result returned). The
        wait is a pass of the server's loop, so other channels of a shared loop are served
        meanwhile.
        """
        timeout = self._nl_request_timeout()
        deadline = None if timeout is None else _time() + timeout
        lp = self.get_loop()
        me = threading.get_ident()
        with self._nl_lock:
            busy = self._nl_driver is not None or lp.running
            if not busy:
                self._nl_driver = me
                self._nl_listening = True
        if busy:
            # The loop is running already (we are inside one of its callbacks, or another
            # thread runs it): wait for this server's socket alone, as socketserver did.
            return self._nl_handle_request_alone(timeout, deadline)
        previous = _drivers.get(lp)
        _drivers[lp] = me
        self._nl_budget = 1
        self._nl_events = 0
        try:
            self._nl_attach()
            while True:
                wait = None if deadline is None else max(0.0, deadline - _time())
                lp.run_once(wait)
                self._nl_raise_deferred()
                if self._nl_events:
                    return None
                if deadline is not None and _time() >= deadline:
                    return self.handle_timeout()
        finally:
            self._nl_budget = None
            if previous is None:
                _drivers.pop(lp, None)
            else:
                _drivers[lp] = previous
            with self._nl_lock:
                self._nl_driver = None
            self._nl_release_private()

    def _nl_request_timeout(self) -> Optional[float]:
        sock = getattr(self, "socket", None)
        # A timeout set on the server's socket also bounds the wait (as in socketserver, for
        # code that used socket.settimeout() before BaseServer.timeout existed). 0.0 is
        # netloop's own non-blocking mode, not such a bound.
        timeout = sock.gettimeout() if sock is not None else None
        if timeout == 0.0:
            # The timeout this socket had before netloop made it non-blocking, if any.
            remembered = self._nl_listen_timeout
            if remembered is not None and remembered[0]() is sock:
                timeout = remembered[1]
        if not timeout:
            return self.timeout
        if self.timeout is not None:
            return min(float(timeout), self.timeout)
        return float(timeout)

    def _nl_handle_request_alone(self, timeout: Optional[float],
                                 deadline: Optional[float]) -> None:
        with _WaitSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            while True:
                if selector.select(timeout):
                    return self._handle_request_noblock()
                if deadline is not None:
                    timeout = deadline - _time()
                    if timeout < 0:
                        return self.handle_timeout()

    def _handle_request_noblock(self) -> None:
        """Take and handle one request; the socket is known to be ready."""
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        if self._nl_limited and not self._nl_admit(request, client_address):
            return
        self._nl_process(request, client_address)

    def handle_timeout(self) -> None:
        """Called when ``handle_request()`` saw no request within ``timeout``."""

    def get_request(self) -> Any:
        """Return ``(request, client_address)``; servers of a kind must define it."""
        raise NotImplementedError

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Return True to handle the request, False to drop it; may be overridden."""
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        """Handle the request, then shut it down (the mixins override this)."""
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handle one request by making an instance of ``RequestHandlerClass``."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request: Any) -> None:
        """Shut down and close one request."""
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Release one request's resources."""

    def server_close(self) -> None:
        """Stop watching the server's socket and release the private loop."""
        self._nl_closed = True
        self._nl_listening = False
        self._nl_on_loop_thread(self._nl_detach)
        self._nl_release_private()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Report an exception raised while handling a request; the server goes on.

        A client that reset the connection or timed out gets one line on stderr; any other
        exception a traceback between two rules, as socketserver printed it.
        """
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            print("netloop: request from %s ended early: %s: %s"
                  % (client_address, type(exc).__name__, exc), file=sys.stderr)
            return
        print("-" * 40, file=sys.stderr)
        print("Exception occurred during processing of request from", client_address,
              file=sys.stderr)
        traceback.print_exc()
        print("-" * 40, file=sys.stderr)

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *args: Any) -> None:
        self.server_close()


def _describe_server(server: BaseServer) -> str:
    """A server as its connection-limit warning names it."""
    return "%s %s" % (type(server).__name__, server._nl_where())
