"""SMTP channel and servers on netloop's core classes: ``SMTPProtocol`` joined to a chat channel.

``SMTPChannel`` is ``SMTPProtocol`` over ``ChatChannel``; ``SMTPServer`` is a listening
``Dispatcher`` that makes one channel per connection and hands each message to
``process_message()``. ``DebuggingServer`` prints messages, ``PureProxy`` relays them with
``smtplib``. These take ``map=`` like every core class and log through the ``netloop`` logger;
``netloop.smtpd`` gives the same under the standard library's names (printed logging, the
asyncore ``socket_map``, the module-global ``DEBUGSTREAM``).

Differences from 3.11's smtpd beyond those of ``SMTPProtocol``: the listening backlog is
``listen_backlog`` (128), not 5, so a burst of clients is not turned away by the kernel; the
host's fully qualified name is looked up once per server, not once per connection (a slow DNS
answer stalled the whole loop each time a client connected); the debugging server can print
messages readably (``human_readable = True``) and store them (``store``, see ``netloop.mail.show``).
"""

from __future__ import annotations

import errno
import mailbox  # already imported by .show
import socket
import sys
import time

from ..chat.channel import ChatChannel
from ..dispatcher import Dispatcher
from .protocol import DATA_SIZE_DEFAULT, SMTPProtocol
from .show import format_message, format_raw

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

    from ..reactor import ChannelMap

__all__ = ["SMTPChannel", "SMTPServer", "DebuggingServer", "PureProxy"]

smtplib: Any = None  # imported by the first PureProxy made (see there)


class SMTPChannel(SMTPProtocol, ChatChannel):
    """One SMTP client connection of an ``SMTPServer``."""

    # The protocol bounds each line and message itself (see SMTPProtocol), dropping what is
    # over the limit as it arrives; the chat layer's own cap would close the connection instead.
    max_buffer: Optional[int] = None

    def __init__(self, server: Any, conn: socket.socket, addr: Any,
                 data_size_limit: Optional[int] = DATA_SIZE_DEFAULT,
                 map: Optional[ChannelMap] = None, enable_SMTPUTF8: bool = False,
                 decode_data: bool = False) -> None:
        self._nl_check_options(enable_SMTPUTF8, decode_data)
        ChatChannel.__init__(self, conn, map=map)
        self._nl_setup(server, conn, addr, data_size_limit, enable_SMTPUTF8, decode_data)
        self.fqdn = self._nl_server_fqdn(server)
        try:
            self.peer = conn.getpeername()
        except OSError as err:
            # The client may already be gone; then there is nobody to greet.
            self.close()
            if err.errno != errno.ENOTCONN:
                raise
            return
        self._nl_debug("Peer:", repr(self.peer))
        self._nl_greet()

    def _nl_getfqdn(self) -> str:
        return socket.getfqdn()

    def _nl_unread(self, data: bytes) -> bool:
        framer = self._framer
        pending = framer.pending
        framer.clear()
        framer.feed(data + pending)
        return True

    def _nl_server_fqdn(self, server: Any) -> str:
        # Once per server: getfqdn() may wait on DNS, and the loop waits with it.
        fqdn = getattr(server, "_nl_fqdn", None)
        if type(fqdn) is not str:
            # None, or what a stand-in server (a unittest.mock.Mock) answers for any name: no
            # name cached (salmon-mail's tests make channels of a Mock server).
            fqdn = self._nl_getfqdn()
            try:
                server._nl_fqdn = fqdn
            except AttributeError:
                pass
        return str(fqdn)


class SMTPServer(Dispatcher):
    """Listens on ``localaddr`` and serves SMTP; subclasses define ``process_message()``.

    ``remoteaddr`` is kept for servers that relay (``PureProxy``).
    """

    #: The channel class made for each connection.
    channel_class: Any = SMTPChannel
    #: The listening socket's backlog.
    listen_backlog = 128
    #: Debug output (a file), or None.
    debugstream: Any = None

    def __init__(self, localaddr: Tuple[Any, ...], remoteaddr: Any,
                 data_size_limit: Optional[int] = DATA_SIZE_DEFAULT,
                 map: Optional[ChannelMap] = None, enable_SMTPUTF8: bool = False,
                 decode_data: bool = False) -> None:
        self._localaddr = localaddr
        self._remoteaddr = remoteaddr
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        SMTPProtocol._nl_check_options(enable_SMTPUTF8, decode_data)
        Dispatcher.__init__(self, map=map)
        try:
            family, type_ = self._nl_getaddrinfo(localaddr)[0][:2]
            self.create_socket(family, type_)
            self.set_reuse_addr()
            self.bind(localaddr)
            self.listen(self.listen_backlog)
        except BaseException:
            self.close()
            raise
        self._nl_debug("%s started at %s\n\tLocal addr: %s\n\tRemote addr:%s" % (
            self.__class__.__name__, time.ctime(time.time()), localaddr, remoteaddr))

    def _nl_getaddrinfo(self, localaddr: Tuple[Any, ...]) -> List[Any]:
        return socket.getaddrinfo(localaddr[0], localaddr[1], type=socket.SOCK_STREAM)

    def _nl_debug(self, *parts: Any) -> None:
        stream = self.debugstream
        if stream is not None:
            print(*parts, file=stream)

    def handle_accepted(self, conn: socket.socket, addr: Any) -> None:
        """Make a ``channel_class`` channel for the new connection."""
        self._nl_debug("Incoming connection from %s" % repr(addr))
        self.channel_class(self, conn, addr, self.data_size_limit, self._map,
                           self.enable_SMTPUTF8, self._decode_data)

    def process_message(self, peer: Any, mailfrom: str, rcpttos: List[str], data: Any,
                        **kwargs: Any) -> Optional[str]:
        """Do something with one received message; must be overridden.

        ``peer`` is the client's address, ``mailfrom`` the envelope sender, ``rcpttos`` the
        envelope recipients, ``data`` the message (``bytes``, or ``str`` with ``decode_data``)
        with the dot-stuffing undone and lines ending in ``\\n``. Unless ``decode_data`` is set,
        ``kwargs`` holds ``mail_options`` and ``rcpt_options``: the upper-cased parameters of
        MAIL and of the last RCPT. Return None to answer ``250 OK``, or the reply line to send
        instead (e.g. ``"554 Rejected"``).
        """
        raise NotImplementedError


class DebuggingServer(SMTPServer):
    """Prints each message on stdout (and stores it, if ``store`` is set).

    The default output is smtpd's, line for line. With ``human_readable`` true, each message is
    shown as a person wants to read it: the envelope, then the headers decoded (RFC 2047), then
    the text parts decoded and a line for each attachment (see ``netloop.mail.show``).
    """

    #: Print decoded headers and text instead of smtpd's raw lines.
    human_readable = False
    #: Where to keep each message too: anything with ``add(peer, mailfrom, rcpttos, data)``
    #: (``netloop.mail.show.MailStore``), or None.
    store: Any = None

    def _print_message_content(self, peer: Any, data: Any) -> None:
        sys.stdout.write(format_raw(peer, data))

    def process_message(self, peer: Any, mailfrom: str, rcpttos: List[str], data: Any,
                        **kwargs: Any) -> Optional[str]:
        if self.store is not None:
            try:
                self.store.add(peer, mailfrom, rcpttos, data)
            except (OSError, mailbox.Error) as exc:
                # No descriptor left, a full disk, a maildir removed, an mbox another program
                # has locked (mailbox.ExternalClashError): the client is told to try again
                # later and its session goes on. Raised, the error closed the connection
                # without an answer to its DATA.
                self.log_info("cannot store the message from %s: %s; answered 451"
                              % (peer, exc), "error")
                return "451 Requested action aborted: local error in processing"
        if self.human_readable:
            sys.stdout.write(format_message(peer, mailfrom, rcpttos, data, **kwargs))
            sys.stdout.flush()
            return None
        print("---------- MESSAGE FOLLOWS ----------")
        if kwargs:
            if kwargs.get("mail_options"):
                print("mail options: %s" % kwargs["mail_options"])
            if kwargs.get("rcpt_options"):
                print("rcpt options: %s\n" % kwargs["rcpt_options"])
        self._print_message_content(peer, data)
        print("------------ END MESSAGE ------------")
        sys.stdout.flush()  # a listing piped to another program arrives whole, at once
        return None


class PureProxy(SMTPServer):
    """Relays each message to ``remoteaddr`` with ``smtplib``, adding an ``X-Peer`` header.

    Refusals by the remote server are only written to the debug output, as in smtpd.

    The relay blocks the loop while it lasts, as smtpd's did; ``relay_timeout`` bounds each of
    its socket operations (smtpd had none: a remote that accepted and never answered stopped
    the server for good, SIGTERM included). A remote that times out refuses the message like
    one that cannot be reached. None waits for ever, as smtpd.
    """

    #: Seconds each socket operation of a relay may wait for the remote (None: no limit).
    relay_timeout: Optional[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("enable_SMTPUTF8"):
            raise ValueError("PureProxy does not support SMTPUTF8.")
        # Imported when a relaying server is made (smtplib brings ssl: ~4.5 MB that other
        # servers do not need), never on the delivery path, which may run out of descriptors.
        global smtplib
        import smtplib
        super().__init__(*args, **kwargs)

    def process_message(self, peer: Any, mailfrom: str, rcpttos: List[str], data: Any,
                        **kwargs: Any) -> Optional[str]:
        # smtpd's took no keyword arguments and split a str, so it failed on every message
        # unless decode_data was set; this one relays bytes and str alike.
        newline = "\n" if isinstance(data, str) else b"\n"
        lines = data.split(newline)
        end = 0
        while end < len(lines) and lines[end]:
            end += 1
        peer_line = "X-Peer: %s" % peer[0]
        lines.insert(end, peer_line if isinstance(data, str) else peer_line.encode("ascii"))
        refused = self._deliver(mailfrom, rcpttos, newline.join(lines))
        self._nl_debug("we got some refusals:", refused)
        return None

    def _deliver(self, mailfrom: str, rcpttos: List[str], data: Any) -> Dict[str, Any]:
        refused: Dict[str, Any] = {}
        try:
            timeout = self.relay_timeout
            client = smtplib.SMTP() if timeout is None else smtplib.SMTP(timeout=timeout)
            client.connect(self._remoteaddr[0], self._remoteaddr[1])
            try:
                refused = client.sendmail(mailfrom, rcpttos, data)
            finally:
                client.quit()
        except smtplib.SMTPRecipientsRefused as exc:
            self._nl_debug("got SMTPRecipientsRefused")
            refused = exc.recipients
        except (OSError, smtplib.SMTPException) as exc:
            self._nl_debug("got", exc.__class__)
            # Nobody got it: record the remote's code if it gave one.
            code = getattr(exc, "smtp_code", -1)
            text = getattr(exc, "smtp_error", "ignore")
            for rcpt in rcpttos:
                refused[rcpt] = (code, text)
        return refused
