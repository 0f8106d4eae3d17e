"""TLS for stream dispatchers: a handshake driven by the loop, then the plain recv/send API.

``Dispatcher.start_tls()`` calls ``start()`` here. The channel goes through up to four states,
each of which owns the channel's interest and its read/write events while it lasts (it puts
``handle_read_event``, ``handle_write_event``, ``readable``, ``writable`` and ``_nl_mask`` on the
*instance*, so the class's own methods, and the loop's fast paths, are untouched, and nothing is
added to the hot path of channels that never use TLS):

1. *drain*: plaintext queued before STARTTLS (the "go ahead" reply) is sent in the clear first;
   the channel does not read meanwhile (what arrives now is the peer's TLS hello).
2. *connect*: a client that called ``start_tls()`` right after ``connect()`` waits for TCP.
3. *handshake*: ``do_handshake()`` is retried on the readiness it asked for (want-read: read
   interest only; want-write: write interest only), so it never spins and never stalls. A timer
   (``handshake_timeout``, 30 s by default) closes a peer that stops half-way.
4. *unwrap* (``Dispatcher.unwrap()``): close_notify both ways, then the plain socket is back.

Data mode has no state object: the channel's socket is a ``TLSSocket``, whose ``recv``/``send``
answer as a non-blocking plain socket does (``BlockingIOError`` / ``0`` for "not now", ``b""``
at the end), so the dispatcher, buffered and chat code run over it unchanged.

Why ``ssl.SSLSocket`` (``wrap_socket(do_handshake_on_connect=False)``) and not ``ssl.MemoryBIO``:
the descriptor stays the same (same map key, same poller registration, nothing re-registered),
OpenSSL reads and writes the kernel socket itself (no Python-level pumping of two BIOs and no
extra copy of each record through bytes objects: the fewest Python calls per request, which is
what CPU per request is made of), and CPython's own ftplib/poplib/imaplib/smtplib test servers
use SSLSocket the same way on asyncore. What SSLSocket gets wrong for an event loop is handled
here: it refuses ``sendmsg()`` (``TLSSocket.sendmsg`` gathers small chunks into one TLS write);
its errors are SSL exceptions, not errnos (translated); and bytes it has decrypted but not handed
out make no readiness event, so after a read that leaves ``pending() > 0`` the read is
dispatched again from the loop's ready queue instead of waiting on the socket (a classic hang).
Renegotiation (TLS 1.2) and key updates (1.3) surface as want-write during a read or want-read
during a write: the blocked direction gets the interest it needs until it can go on. What
OpenSSL 3 does (tests/test_tls.py forces each case): a key update the peer asks for is answered
at the next write, never inside a read, and so is a client's renegotiation asked by a server's
HelloRequest (want-read during that write); a read wants to write when a server that allows
client renegotiation (refused by default since OpenSSL 3) reads a ClientHello while its send
buffer is full. A partial record left by a write that could not finish defers these until it is
flushed. A read that had to wait for writability is finished when the socket becomes writable,
even if reading was paused meanwhile (it began before the pause).

Reading paused (``pause_reading()``, a full output queue) holds back application data only: the
reads TLS makes for its own sake (handshake, unwrap, a write waiting on renegotiation) go on, for
channels of every class. Holding them would stall a handshake into its timeout, and a channel
whose queue filled before its handshake ended (paused by that queue) would never drain it.

Failures of the handshake (verification, protocol, a peer that leaves or stays silent) log one
line naming the peer and the reason, and close that channel through ``handle_close()``; the loop
goes on. ``close()`` of an established channel sends close_notify once, without waiting for the
peer's (non-blocking, bounded); a peer that closes without close_notify is a truncation,
reported as the end of input with ``tls_truncated`` set on the socket (Python 3.10+: 3.9's ssl
module reads it as a clean end).
"""

from __future__ import annotations

import errno
import socket as _socket
import ssl

from .dispatcher import TLS_HANDSHAKE_TIMEOUT as HANDSHAKE_TIMEOUT
from .errors import RERAISED
from .pollers import READ_MASK, WRITE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional

__all__ = ["TLSSocket", "start", "unwrap", "HANDSHAKE_TIMEOUT"]

#: The largest plaintext a TLS record carries: a read that returns this much may have more
#: records behind it, already in the kernel, worth reading in the same call.
_RECORD = 16384
#: A TLS write gathers small queued chunks up to this many bytes (one record run, one syscall).
_GATHER = 65536

_TCP_FAMILIES = (_socket.AF_INET, _socket.AF_INET6)


def _nodelay(sock: Any) -> None:
    """TCP_NODELAY on a server's TLS connection. A TLS 1.3 server writes its session tickets
    (two by default) as separate records right after the handshake: with Nagle's algorithm
    the second one, and the first reply behind it, waited for the client's delayed ACK, 40 ms
    on Linux for every new connection. A TLS write already gathers small chunks into one
    record run (``_GATHER``), so Nagle has nothing left to coalesce (asyncio sets it on every
    TCP transport)."""
    try:
        if sock.type == _socket.SOCK_STREAM:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    except OSError:
        pass


_WantRead = ssl.SSLWantReadError
_WantWrite = ssl.SSLWantWriteError
_Ended = (ssl.SSLZeroReturnError, ssl.SSLEOFError)
_SSLError = ssl.SSLError

_INSTANCE_HOOKS = ("handle_read_event", "handle_write_event", "readable", "writable", "_nl_mask",
                   "_nl_own_reads")


def _peer(ch: Any) -> str:
    addr = ch.addr
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return ("[%s]:%s" if ":" in str(host) else "%s:%s") % (host, addr[1])
    return repr(addr) if addr else "an unnamed peer"


def _reason(err: BaseException) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return "certificate verification failed: %s" % (err.verify_message or err.reason)
    if isinstance(err, _Ended) or isinstance(err, ssl.SSLSyscallError):
        return "the peer closed the connection"
    if isinstance(err, _SSLError) and err.reason:
        return str(err.reason).lower().replace("_", " ")
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _truncation(err: BaseException) -> bool:
    # The peer closed the TCP connection without close_notify. Python 3.10+ raises SSLEOFError
    # for it; 3.9 with OpenSSL 3 raises a plain SSLError with this reason (or SSLSyscallError).
    return (isinstance(err, ssl.SSLSyscallError)
            or getattr(err, "reason", None) == "UNEXPECTED_EOF_WHILE_READING")


def _not_yet(data: Any) -> int:
    return 0  # a send during the handshake: the caller queues it, and it goes out after


def _nothing_yet(size: int) -> bytes:
    raise BlockingIOError(errno.EAGAIN, "TLS handshake in progress")


class TLSSocket:
    """The socket of a channel that speaks TLS: a non-blocking socket's ``recv``/``send``.

    ``recv`` raises ``BlockingIOError`` when no application data is ready (as a non-blocking
    socket does), returns ``b""`` at the end (close_notify, or a truncation: then
    ``tls_truncated`` is True), and raises ``ConnectionAbortedError`` for a TLS protocol error
    (logged once). ``send`` returns how many bytes TLS took (0: not now). ``sendmsg`` gathers
    small chunks into one TLS write. Everything else (``getpeercert()``, ``version()``,
    ``cipher()``, ``getpeername()``...) is the ``ssl.SSLSocket``'s, reachable as ``ssl_socket``.
    """

    _nl_gather = True   # chat may hand several chunks to sendmsg()
    tls_truncated = False

    def __init__(self, ssl_socket: ssl.SSLSocket, channel: Any) -> None:
        self.ssl_socket = ssl_socket
        self._channel = channel
        self._obj: Any = ssl_socket._sslobj  # type: ignore[attr-defined]
        self._read: Callable[[int], bytes] = _nothing_yet
        self._write: Callable[[Any], int] = _not_yet
        self._established = False
        self._broken = False      # a fatal TLS error: no close_notify may follow
        self._pumping = False
        self._blocked: Optional[_Blocked] = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ssl_socket, name)

    def __repr__(self) -> str:
        return "<netloop.tls.TLSSocket %r>" % (self.ssl_socket,)

    def _establish(self) -> None:
        obj = self._obj
        self._read = obj.read
        self._write = obj.write
        self._established = True

    def fileno(self) -> int:
        return self.ssl_socket.fileno()

    def recv(self, size: int, flags: int = 0) -> bytes:
        """Up to ``size`` bytes of application data (see the class docstring)."""
        try:
            data = self._read(size)
        except _WantRead:
            raise BlockingIOError(errno.EAGAIN, "no TLS application data yet") from None
        except _WantWrite:
            self._block(WRITE)
            raise BlockingIOError(errno.EAGAIN, "TLS needs to write first") from None
        except ssl.SSLEOFError:
            self.tls_truncated = True
            self._broken = True
            return b""
        except ssl.SSLZeroReturnError:
            return b""
        except _SSLError as err:
            if _truncation(err):
                self.tls_truncated = True
                self._broken = True
                return b""
            raise self._fatal(err) from None
        except ConnectionResetError:
            # A reset ends the stream without close_notify too (and Python 3.9 reports a plain
            # EOF without one this way).
            self.tls_truncated = True
            self._broken = True
            raise
        got = len(data)
        if got == _RECORD and size > got:
            # A full record: more may be waiting in the kernel. Take them in this call (one
            # event and one handler call per 64 KiB instead of per 16 KiB).
            parts = [data]
            read = self._read
            while got < size:
                try:
                    more = read(size - got)
                except _SSLError:
                    break  # want-read, or an end the next recv() reports
                if not more:
                    break
                parts.append(more)
                got += len(more)
                if len(more) < _RECORD:
                    break
            data = b"".join(parts)
        if not self._pumping and self._obj.pending():
            self._pump_later()
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """``recv()`` into ``buffer`` (for ``Dispatcher.recv_view()``): the count it put there.

        At most 64 KiB per call (or ``nbytes``), read by ``recv()`` and copied: the errors are
        ``recv()``'s, and the copy costs little beside the decryption. (Not the SSLSocket's
        own, whose errors are SSL exceptions where a non-blocking socket's are not.)
        """
        size = nbytes or len(buffer)
        data = self.recv(size if size < _GATHER else _GATHER)
        got = len(data)
        if got:
            buffer[:got] = data
        return got

    def send(self, data: Any, flags: int = 0) -> int:
        """Write ``data`` through TLS: how many bytes it took (0 when the socket is full)."""
        try:
            return self._write(data)
        except _WantWrite:
            return 0
        except _WantRead:
            self._block(READ_MASK)
            return 0
        except _Ended:
            self._broken = True
            raise BrokenPipeError(errno.EPIPE, "the TLS peer closed the connection") from None
        except _SSLError as err:
            raise self._fatal(err) from None

    def sendall(self, data: Any, flags: int = 0) -> None:
        raise OSError(errno.EINVAL, "sendall() on a non-blocking TLS channel")

    def sendmsg(self, buffers: Any, *args: Any) -> int:
        """``send`` of several chunks gathered into one TLS write (SSLSocket has no sendmsg)."""
        first = buffers[0]
        size = first.nbytes if type(first) is memoryview else len(first)
        if len(buffers) == 1 or size >= _RECORD:
            return self.send(first)
        take: List[Any] = []
        for chunk in buffers:
            take.append(chunk)
            size += chunk.nbytes if type(chunk) is memoryview else len(chunk)
            if size >= _GATHER:
                break
        # What a retry after "not now" passes starts with the same bytes and is never shorter
        # (the queue's head is unchanged and it only grows), as OpenSSL requires of a retry.
        return self.send(b"".join(take))

    def _fatal(self, err: BaseException) -> OSError:
        self._broken = True
        ch = self._channel
        if ch is not None:
            ch.log_info("TLS error with %s: %s; closing" % (_peer(ch), _reason(err)), "error")
        return ConnectionAbortedError(errno.ECONNABORTED, "TLS error: %s" % _reason(err))

    def close(self) -> None:
        """Send close_notify (once, not waiting for the peer's) and close the socket."""
        self._channel = None
        blocked = self._blocked
        if blocked is not None:
            blocked.release()
        if self._established and not self._broken:
            try:
                self._obj.shutdown()
            except (_SSLError, OSError, ValueError):
                pass  # sent (want-read: the peer's close_notify is not awaited), or cannot be
        self.ssl_socket.close()

    def detach_from_channel(self) -> None:
        """Forget the channel (the SSL socket lives on elsewhere, e.g. in a request handler)."""
        self._channel = None

    def detach(self) -> int:
        self._channel = None
        return self.ssl_socket.detach()

    # -------------------------------------------------------------- decrypted, not handed out
    def _nl_resumed(self) -> None:
        # Reading resumes after a pause (reactor._set_paused): what waits inside the SSL object
        # makes no readiness event, so it is dispatched from here.
        if self._established and not self._pumping and self._obj.pending():
            self._pump_later()

    def _pump_later(self) -> None:
        ch = self._channel
        lp = ch._nl_loop if ch is not None else None
        if lp is None:
            return
        self._pumping = True
        lp.call_soon(self._pump)

    def _pump(self) -> None:
        self._pumping = False
        ch = self._channel
        if ch is None or ch.socket is not self or not ch.connected or ch._nl_paused:
            return
        try:
            ch.handle_read_event()
        except RERAISED:
            raise
        except BaseException:
            ch.handle_error()

    # -------------------------------------------------------------- renegotiation, key update
    def _block(self, want: int) -> None:
        ch = self._channel
        if ch is not None and self._blocked is None:
            self._blocked = _Blocked(self, ch, want)


class _Plain:
    """The channel's socket before the wrap (drain, connect): sends wait, nothing is read."""

    def __init__(self, sock: Any) -> None:
        self.raw = sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def fileno(self) -> int:
        return self.raw.fileno()  # type: ignore[no-any-return]

    def send(self, data: Any, flags: int = 0) -> int:
        return 0

    def sendmsg(self, buffers: Any, *args: Any) -> int:
        return 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        raise BlockingIOError(errno.EAGAIN, "TLS handshake not started yet")

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        raise BlockingIOError(errno.EAGAIN, "TLS handshake not started yet")

    def close(self) -> None:
        self.raw.close()


class _State:
    """Owns a channel's interest and read/write events while it lasts (see the module doc)."""

    def __init__(self, ch: Any) -> None:
        self.ch = ch
        self.want = READ_MASK

    def install(self) -> None:
        ch = self.ch
        lp = ch._nl_loop
        if lp is not None and ch._fileno is not None:
            # The loop calls handle_read() itself for a connected channel of a plain class:
            # while a state lasts, its read events must come here.
            lp._indirect.add(ch._fileno)
            ch._nl_direct = False  # (the loop tests it before the indirect set)
        ch.handle_read_event = self.on_read
        ch.handle_write_event = self.on_write
        ch.readable = self.readable
        ch.writable = self.writable
        ch._nl_mask = self.mask
        ch._nl_own_reads = True  # reads while paused, as self.mask does (see interest._ask)
        ch._update_interest()

    def release(self) -> None:
        ch = self.ch
        d = ch.__dict__
        for name in _INSTANCE_HOOKS:
            d.pop(name, None)
        lp = ch._nl_loop
        fd = ch._fileno
        if lp is not None and type(ch)._nl_plain_read and lp._objs.get(fd) is ch:
            lp._indirect.discard(fd)

    def mask(self) -> int:
        return self.want

    def readable(self) -> bool:
        return bool(self.want & READ_MASK)

    def writable(self) -> bool:
        return bool(self.want & WRITE)

    def on_read(self) -> None:
        raise NotImplementedError

    def on_write(self) -> None:
        raise NotImplementedError


class _Blocked(_State):
    """Data mode, one direction waiting on the other (renegotiation, key update): a read that
    needs to write waits for writability; a write that needs to read waits for input."""

    def __init__(self, tsock: TLSSocket, ch: Any, want: int) -> None:
        _State.__init__(self, ch)
        self.tsock = tsock
        self.want = want
        self.install()

    def release(self) -> None:
        _State.release(self)
        self.tsock._blocked = None

    def _resume(self) -> None:
        self.release()
        ch = self.ch
        ch._update_interest()
        # Retry both directions: the one that was blocked, and whatever the other has.
        cls = type(ch)
        cls.handle_read_event(ch)
        if ch.connected and ch.socket is self.tsock and self.tsock._blocked is None:
            cls.handle_write_event(ch)

    def on_read(self) -> None:
        if self.want & READ_MASK:
            self._resume()

    def on_write(self) -> None:
        if self.want & WRITE:
            self._resume()


class _Start(_State):
    """drain -> connect -> handshake (see the module doc)."""

    def __init__(self, ch: Any, context: ssl.SSLContext, server_side: bool,
                 server_hostname: Optional[str], timeout: Optional[float]) -> None:
        _State.__init__(self, ch)
        self.context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.tsock: Optional[TLSSocket] = None
        self.timer: Any = None
        self.timeout = timeout
        self.phase = ""
        self.plain = memoryview(b"")

    def begin(self, plain: bytes) -> None:
        ch = self.ch
        if self.timeout is not None:
            self.timer = ch.call_later(self.timeout, self.on_timeout)
        if plain:
            self.phase = "drain"
            self.plain = memoryview(plain)
            ch.connected = False  # from now on sends queue for TLS, and nothing is read
            ch.socket = _Plain(ch.socket)
            self.want = WRITE
            self.install()
        elif ch.connecting and not ch.connected:
            self.phase = "connect"
            ch.socket = _Plain(ch.socket)
            self.want = READ_MASK | WRITE
            self.install()
        else:
            self.install()
            self.wrap()

    def on_read(self) -> None:
        phase = self.phase
        if phase == "handshake":
            self.step()
        elif phase == "connect":
            self.connected()
        # drain: nothing is read until the handshake (it would be the peer's TLS hello)

    def on_write(self) -> None:
        phase = self.phase
        if phase == "handshake":
            self.step()
        elif phase == "connect":
            self.connected()
        elif phase == "drain":
            try:
                sent = self.ch.socket.raw.send(self.plain)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                self.fail(err, "sending the last plaintext to")
                return
            self.plain = self.plain[sent:]
            if not self.plain:
                self.wrap()

    def connected(self) -> None:
        ch = self.ch
        err = ch.socket.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err:
            self.fail(OSError(err, errno.errorcode.get(err, str(err))), "connect to")
            return
        ch.connecting = False
        ch.handle_connect()
        if ch._fileno is not None:
            self.wrap()

    def wrap(self) -> None:
        ch = self.ch
        self.phase = "handshake"
        ch.connected = False  # until the handshake is done: sends queue, reads wait
        sock = ch.socket
        if type(sock) is _Plain:
            sock = ch.socket = sock.raw
        if self.server_side and sock.family in _TCP_FAMILIES:
            _nodelay(sock)
        try:
            sslsock = self.context.wrap_socket(
                sock, server_side=self.server_side, server_hostname=self.server_hostname,
                do_handshake_on_connect=False)
        except (_SSLError, OSError) as err:
            self.fail(err)
            return
        tsock = self.tsock = TLSSocket(sslsock, ch)
        ch.socket = tsock
        if tsock._obj is None:  # SSLSocket found it unconnected: the peer is gone already
            tsock._broken = True
            self.fail(ConnectionResetError(errno.ECONNRESET, "not connected"))
            return
        self.step()

    def step(self) -> None:
        tsock = self.tsock
        assert tsock is not None
        try:
            tsock._obj.do_handshake()
        except _WantRead:
            want = READ_MASK
        except _WantWrite:
            want = WRITE
        except (_SSLError, OSError, ValueError) as err:
            tsock._broken = True
            self.fail(err)
            return
        else:
            self.established()
            return
        if want != self.want:
            self.want = want
            self.ch._update_interest()

    def established(self) -> None:
        ch = self.ch
        tsock = self.tsock
        assert tsock is not None
        self.finish()
        tsock._establish()
        ch.connected = True
        ch._update_interest()
        ch.handle_tls_established()
        if ch.socket is tsock and ch.connected and tsock._obj.pending():
            tsock._pump_later()

    def finish(self) -> None:
        self.release()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.phase = "done"

    def on_timeout(self) -> None:
        self.timer = None
        if self.phase in ("done", "failed"):
            return
        self.fail(TimeoutError(errno.ETIMEDOUT, "no handshake within %ss" % self.timeout))

    def fail(self, err: BaseException, what: str = "TLS handshake with") -> None:
        ch = self.ch
        self.finish()
        self.phase = "failed"
        if isinstance(err, TimeoutError) and err.strerror:
            reason = "timed out (%s)" % err.strerror
        else:
            reason = _reason(err)
        ch.log_info("%s %s failed: %s; closing" % (what, _peer(ch), reason), "error")
        _close(ch)


class _Unwrap(_State):
    """close_notify both ways, then the plain socket goes back to the channel."""

    def __init__(self, ch: Any, tsock: TLSSocket, timeout: Optional[float]) -> None:
        _State.__init__(self, ch)
        self.tsock = tsock
        self.timer = ch.call_later(timeout, self.on_timeout) if timeout is not None else None
        self.timeout = timeout
        ch.connected = False
        self.install()
        self.step()

    def on_read(self) -> None:
        self.step()

    on_write = on_read

    def step(self) -> None:
        tsock = self.tsock
        try:
            tsock._obj.shutdown()
        except _WantRead:
            want = READ_MASK
        except _WantWrite:
            want = WRITE
        except (_SSLError, OSError, ValueError) as err:
            self.fail(err)
            return
        else:
            self.done()
            return
        if want != self.want:
            self.want = want
            self.ch._update_interest()

    def _stop(self) -> None:
        self.release()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def done(self) -> None:
        ch = self.ch
        self._stop()
        tsock = self.tsock
        sslsock = tsock.ssl_socket
        plain = _socket.socket(sslsock.family, sslsock.type, sslsock.proto,
                               fileno=tsock.detach())
        plain.setblocking(False)
        ch.socket = plain
        ch.connected = True
        ch._update_interest()
        ch.handle_tls_unwrapped()

    def on_timeout(self) -> None:
        self.timer = None
        if self.ch.socket is self.tsock:
            self.fail(TimeoutError(errno.ETIMEDOUT, "no close_notify within %ss" % self.timeout))

    def fail(self, err: BaseException) -> None:
        ch = self.ch
        self._stop()
        self.tsock._broken = True
        ch.log_info("TLS unwrap with %s failed: %s; closing" % (_peer(ch), _reason(err)),
                    "error")
        _close(ch)


def _close(ch: Any) -> None:
    try:
        ch.handle_close()
    except RERAISED:
        raise
    except BaseException:
        ch.handle_error()
    if ch._fileno is not None:  # handle_close() kept it open: a failed handshake cannot
        ch.close()


def start(ch: Any, context: ssl.SSLContext, server_side: bool,
          server_hostname: Optional[str], timeout: Optional[float]) -> None:
    """``Dispatcher.start_tls()``'s work (see there)."""
    if not isinstance(context, ssl.SSLContext):
        raise TypeError("start_tls() needs an ssl.SSLContext, not %r" % type(context).__name__)
    if ch.socket is None or ch._fileno is None:
        raise ValueError("start_tls() on a channel with no socket")
    if isinstance(ch.socket, TLSSocket) or isinstance(ch.socket, ssl.SSLSocket):
        raise ValueError("start_tls() on a channel that already speaks TLS")
    if ch.accepting:
        raise ValueError("start_tls() on a listening channel: call it on the accepted ones")
    if not server_side and context.check_hostname and not server_hostname:
        raise ValueError("this context checks host names: pass server_hostname=")
    if timeout is not None and timeout <= 0:
        raise ValueError("handshake_timeout must be positive (or None)")
    _Start(ch, context, server_side, server_hostname, timeout).begin(ch._nl_before_tls())


def unwrap(ch: Any, timeout: Optional[float]) -> None:
    """``Dispatcher.unwrap()``'s work (see there)."""
    tsock = ch.socket
    if not isinstance(tsock, TLSSocket) or not tsock._established or not ch.connected:
        raise ValueError("unwrap() on a channel that does not speak TLS")
    _Unwrap(ch, tsock, timeout)
