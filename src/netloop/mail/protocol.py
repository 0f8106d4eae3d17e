"""The SMTP server side of RFC 5321 as a mixin with no socket: lines in, replies out.

``SMTPProtocol`` holds the session state and one ``smtp_<VERB>`` method per command, with the
behaviour (and reply texts) of Python 3.11's ``smtpd.SMTPChannel``. It needs four things from the
class it is mixed into, which a chat channel has and a test double can fake in a few lines:
``push(bytes)`` below it in the MRO (the reply leaves), ``set_terminator()``,
``close_when_done()`` and a ``smtp_server`` with ``process_message()``. Input arrives as chat
input does: ``collect_incoming_data(piece)`` for each piece of a line (or of the message) and
``found_terminator()`` at its end.

Limits are kept while the input arrives, so memory stays bounded whatever a client sends:

- a command line longer than the longest allowed command is answered ``500 Error: line too
  long`` as soon as it crosses that length (smtpd answered only at the end of the line, which a
  client that never ends it never sees); what follows is dropped up to the line's end, which
  gets no second reply;
- message data over ``data_size_limit`` is dropped as it arrives; the end of the message is
  answered ``552 Error: Too much mail data`` and the session goes back to commands (smtpd stayed
  in the data state, so the client's next commands were taken for message text).

Other deliberate differences from 3.11's smtpd: a message with no lines (a lone ``.`` right after
DATA, RFC 5321 4.1.1.4) ends at once, where smtpd waited for a CRLF it had already consumed;
``command_size_limits`` is per channel (smtpd shared one dict between all channels, so one client's
EHLO raised every client's MAIL limit and each new connection reset it); a command line that is not
UTF-8 gets ``500 Error: bad syntax`` instead of an exception that closed the connection; with
``decode_data`` the input is decoded incrementally (a character split between two reads no longer
fails) and bytes that are not UTF-8 become U+FFFD; a reply that does not fit its encoding is sent
with ``?`` in place of what does not fit instead of raising; a ``SIZE`` parameter without a value
(``MAIL FROM:<a@b> SIZE``) gets the ``501`` syntax reply, where smtpd raised ``AttributeError``
(``'bool' object has no attribute 'isdigit'``) and the connection was closed through
``handle_error()``.
"""

from __future__ import annotations

import codecs
from collections import defaultdict
from email._header_value_parser import get_addr_spec, get_angle_addr

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, DefaultDict, Dict, List, Optional, Tuple, Union

__all__ = [
    "SMTPProtocol", "DATA_SIZE_DEFAULT", "COMMAND_SIZE_LIMIT", "parse_path", "parse_params",
    "unstuff",
]

#: Default ``data_size_limit``: the largest message accepted, announced with EHLO's SIZE.
DATA_SIZE_DEFAULT = 33554432
#: The longest command line, without its CRLF (RFC 5321 4.5.3.1.4).
COMMAND_SIZE_LIMIT = 512

_HELP_TOPICS = {
    "EHLO": "Syntax: EHLO hostname",
    "HELO": "Syntax: HELO hostname",
    "MAIL": "Syntax: MAIL FROM: <address>",
    "RCPT": "Syntax: RCPT TO: <address>",
    "DATA": "Syntax: DATA",
    "RSET": "Syntax: RSET",
    "NOOP": "Syntax: NOOP",
    "QUIT": "Syntax: QUIT",
    "VRFY": "Syntax: VRFY <address>",
}
_COMMANDS = "Supported commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY"
_PARAMS_HINT = " [SP <mail-parameters>]"
# Extra bytes EHLO allows on a MAIL line for the parameters it announces (RFC 1870, RFC 6531).
_SIZE_EXTRA = 26
_SMTPUTF8_EXTRA = 10


def parse_path(arg: str) -> Tuple[str, str]:
    """Split ``arg`` (what follows ``FROM:``/``TO:``) into (address, rest of the line).

    The address may be in angle brackets or bare; ``""`` means it is missing or malformed
    (``<>``, the null reverse-path, gives ``"<>"``).
    """
    if not arg:
        return "", ""
    token: Any
    if arg.lstrip().startswith("<"):
        token, rest = get_angle_addr(arg)
    else:
        token, rest = get_addr_spec(arg)
    if not token:
        return str(token), rest
    return str(token.addr_spec), rest


def parse_params(params: List[str]) -> Optional[Dict[str, Union[str, bool]]]:
    """``["SIZE=10", "SMTPUTF8"]`` -> ``{"SIZE": "10", "SMTPUTF8": True}``; None when one of
    them is not ``keyword[=value]`` with an alphanumeric keyword (RFC 1869)."""
    found: Dict[str, Union[str, bool]] = {}
    for param in params:
        key, eq, value = param.partition("=")
        if not key.isalnum() or (eq and not value):
            return None
        found[key] = value if eq else True
    return found


def reply_bytes(msg: str, utf8: bool) -> bytes:
    """The reply line ``msg`` as it goes out: CRLF added, encoded for the session (UTF-8 once
    SMTPUTF8 was asked for, else ASCII), a character that cannot be encoded sent as ``?``
    rather than failing (a reply may echo what the client sent)."""
    return bytes(msg + "\r\n", "utf-8" if utf8 else "ascii", "replace")


def unstuff(data: Any, linesep: Any, newline: Any, dot: Any) -> Any:
    """Undo SMTP's dot-stuffing (RFC 5321 4.5.2) and turn each ``linesep`` into ``newline``.

    Every line loses a leading ``dot``. Works on ``bytes`` or ``str`` (pass the separators of
    the same type). Two C-level replaces, not a split into lines: 20 MiB of short lines take
    a fraction of the time.
    """
    if data.startswith(dot):
        data = data[len(dot):]
    stuffed = linesep + dot
    if stuffed in data:
        data = data.replace(stuffed, linesep)
    return data.replace(linesep, newline)


class _LazyRepr:
    """``repr(obj)`` made only if the debug output is written somewhere."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return repr(self.obj)


class SMTPProtocol:
    """SMTP command handling as a mixin for a chat channel (see the module docstring)."""

    #: ``smtp_state`` values.
    COMMAND = 0
    DATA = 1

    #: The longest command line accepted (without CRLF) before EHLO widens MAIL's limit.
    command_size_limit = COMMAND_SIZE_LIMIT
    #: Per-command limits (missing commands have ``command_size_limit``). Each channel gets
    #: its own copy; this class-level one is there for code that reads it.
    command_size_limits: DefaultDict[str, int] = defaultdict(lambda: COMMAND_SIZE_LIMIT)

    #: The text after the host name in the 220 greeting.
    greeting_version = "netloop SMTP server"
    #: Debug output (a file), or None; the smtpd facade uses its module's ``DEBUGSTREAM``.
    debugstream: Any = None

    smtp_server: Any
    conn: Any
    addr: Any
    peer: Any
    fqdn: str
    data_size_limit: Optional[int]
    enable_SMTPUTF8: bool
    smtp_state: Any
    seen_greeting: str
    extended_smtp: bool
    mailfrom: Optional[str]
    rcpttos: List[str]
    mail_options: List[str]
    rcpt_options: List[str]
    require_SMTPUTF8: bool
    num_bytes: int
    received_data: Any
    received_lines: List[Any]

    _nl_refused = False  # this command line was already answered "line too long"
    _nl_lead = False     # the message text starts with a CRLF given back by smtp_DATA
    _nl_decoder: Any = None

    # Supplied by the channel class below in the MRO.
    if TYPE_CHECKING:
        def set_terminator(self, term: Any) -> None: ...
        def close_when_done(self) -> None: ...

    @property
    def max_command_size_limit(self) -> int:
        """The longest command line any command may have now."""
        try:
            return max(self.command_size_limits.values())
        except ValueError:
            return self.command_size_limit

    # ------------------------------------------------------------------ set-up and state
    @staticmethod
    def _nl_check_options(enable_SMTPUTF8: bool, decode_data: bool) -> None:
        if enable_SMTPUTF8 and decode_data:
            raise ValueError("decode_data and enable_SMTPUTF8 cannot be set to True at the same "
                             "time")

    def _nl_setup(self, server: Any, conn: Any, addr: Any, data_size_limit: Optional[int],
                  enable_SMTPUTF8: bool, decode_data: bool) -> None:
        """Set the session up (no I/O): called by the channel's ``__init__``."""
        self.smtp_server = server
        self.conn = conn
        self.addr = addr
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        if decode_data:
            self._emptystring: Any = ""
            self._linesep: Any = "\r\n"
            self._dotsep: Any = "."
            self._newline: Any = "\n"
            self._nl_decoder = codecs.getincrementaldecoder("utf-8")("replace")
        else:
            self._emptystring = b""
            self._linesep = b"\r\n"
            self._dotsep = ord(b".")
            self._newline = b"\n"
        limit = self.command_size_limit
        self.command_size_limits = defaultdict(lambda: limit)
        self.mail_options = []
        self.rcpt_options = []
        self._set_rset_state()
        self.seen_greeting = ""
        self.extended_smtp = False

    def _set_post_data_state(self) -> None:
        """Back to commands with an empty envelope (after a message, or RSET)."""
        self.smtp_state = self.COMMAND
        self.mailfrom = None
        self.rcpttos = []
        self.require_SMTPUTF8 = False
        self.num_bytes = 0
        self._nl_lead = False
        self.set_terminator(b"\r\n")

    def _set_rset_state(self) -> None:
        """Reset everything but the greeting."""
        self._set_post_data_state()
        self.received_data = ""
        self.received_lines = []

    def _nl_debug(self, *parts: Any) -> None:
        """Write one debug line (``print`` style) to ``debugstream`` if there is one."""
        stream = self.debugstream
        if stream is not None:
            print(*parts, file=stream)

    def _nl_unread(self, data: bytes) -> bool:
        """Put ``data`` back in front of the input not read yet; False if the channel can't.

        The chat channel can (``netloop.mail.server``); without it a message with no lines
        at all (a lone "." after DATA) is not seen, as in smtpd.
        """
        return False

    def _nl_greet(self) -> None:
        self.push("220 %s %s" % (self.fqdn, self.greeting_version))

    # ------------------------------------------------------------------ output
    def push(self, msg: Any) -> None:
        """Send the reply line ``msg`` (a str, without CRLF)."""
        super().push(reply_bytes(msg, self.require_SMTPUTF8))  # type: ignore[misc]

    # ------------------------------------------------------------------ input
    def collect_incoming_data(self, data: bytes) -> None:
        """Keep a piece of the current line or message, within the state's size limit."""
        state = self.smtp_state
        if state == self.COMMAND:
            limit: Optional[int] = self.max_command_size_limit
        elif state == self.DATA:
            limit = self.data_size_limit
        else:
            limit = None
        if limit:
            if self.num_bytes > limit:
                return  # over the limit: dropped, answered at the end (or already)
            self.num_bytes += len(data)
            if self.num_bytes > limit and state == self.COMMAND and not self._nl_refused:
                # Answer now: a client that never ends the line still hears why.
                self._nl_refused = True
                self.push("500 Error: line too long")
                return
        if self._decode_data:
            self.received_lines.append(self._nl_decoder.decode(data))
        else:
            self.received_lines.append(data)

    def found_terminator(self) -> None:
        """End of a command line (in COMMAND state) or of a message (in DATA state)."""
        if self._nl_decoder is not None:
            tail = self._nl_decoder.decode(b"", True)
            if tail:
                self.received_lines.append(tail)
        line = self._emptystring.join(self.received_lines)
        self._nl_debug("Data:", _LazyRepr(line))
        self.received_lines = []
        if self._nl_lead and self.smtp_state == self.DATA:
            self._nl_lead = False
            if line[:2] == self._linesep:
                line = line[2:]
        if self.smtp_state == self.COMMAND:
            self._nl_command(line)
        elif self.smtp_state != self.DATA:
            self.push("451 Internal confusion")
            self.num_bytes = 0
        elif self.data_size_limit and self.num_bytes > self.data_size_limit:
            self.push("552 Error: Too much mail data")
            self._set_post_data_state()
        else:
            self._nl_message(line)

    def _nl_command(self, line: Any) -> None:
        size, self.num_bytes = self.num_bytes, 0
        if self._nl_refused:
            self._nl_refused = False
            return
        if not line:
            self.push("500 Error: bad syntax")
            return
        if not self._decode_data:
            try:
                line = str(line, "utf-8")
            except UnicodeDecodeError:
                self.push("500 Error: bad syntax")
                return
        verb, sep, rest = line.partition(" ")
        command = verb.upper()
        arg: Optional[str] = rest.strip() if sep else None
        limit = (self.command_size_limits[command] if self.extended_smtp
                 else self.command_size_limit)
        if size > limit:
            self.push("500 Error: line too long")
            return
        method = getattr(self, "smtp_" + command, None)
        if method is None:
            self.push('500 Error: command "%s" not recognized' % command)
            return
        method(arg)

    def _nl_message(self, text: Any) -> None:
        if self._decode_data:
            self.received_data = unstuff(text, "\r\n", "\n", ".")
        else:
            self.received_data = unstuff(text, b"\r\n", b"\n", b".")
        kwargs: Dict[str, Any] = {}
        if not self._decode_data:
            kwargs = {"mail_options": self.mail_options, "rcpt_options": self.rcpt_options}
        status = self.smtp_server.process_message(self.peer, self.mailfrom, self.rcpttos,
                                                  self.received_data, **kwargs)
        self._set_post_data_state()
        self.push(status if status else "250 OK")

    # ------------------------------------------------------------------ argument parsing
    def _strip_command_keyword(self, keyword: str, arg: str) -> str:
        """``arg`` without its leading ``keyword`` (any case), or "" if it does not start so."""
        if arg[:len(keyword)].upper() == keyword:
            return arg[len(keyword):].strip()
        return ""

    def _getaddr(self, arg: str) -> Tuple[str, str]:
        return parse_path(arg)

    def _getparams(self, params: List[str]) -> Optional[Dict[str, Union[str, bool]]]:
        return parse_params(params)

    # ------------------------------------------------------------------ commands
    def _nl_greeting(self, verb: str, arg: Optional[str]) -> bool:
        if not arg:
            self.push("501 Syntax: %s hostname" % verb)
            return False
        if self.seen_greeting:
            # smtpd refuses a second greeting (see CPython issue 21783) rather than resetting.
            self.push("503 Duplicate HELO/EHLO")
            return False
        self._set_rset_state()
        self.seen_greeting = arg
        return True

    def smtp_HELO(self, arg: Optional[str]) -> None:
        """HELO hostname: start a plain SMTP session."""
        if self._nl_greeting("HELO", arg):
            self.push("250 %s" % self.fqdn)

    def smtp_EHLO(self, arg: Optional[str]) -> None:
        """EHLO hostname: start an ESMTP session and list the extensions."""
        if not self._nl_greeting("EHLO", arg):
            return
        self.extended_smtp = True
        self.push("250-%s" % self.fqdn)
        if self.data_size_limit:
            self.push("250-SIZE %s" % self.data_size_limit)
            self.command_size_limits["MAIL"] += _SIZE_EXTRA
        if not self._decode_data:
            self.push("250-8BITMIME")
        if self.enable_SMTPUTF8:
            self.push("250-SMTPUTF8")
            self.command_size_limits["MAIL"] += _SMTPUTF8_EXTRA
        self.push("250 HELP")

    def smtp_NOOP(self, arg: Optional[str]) -> None:
        """NOOP: answer 250."""
        self.push("501 Syntax: NOOP" if arg else "250 OK")

    def smtp_QUIT(self, arg: Optional[str]) -> None:
        """QUIT (any argument is ignored): say goodbye and close once it is sent."""
        self.push("221 Bye")
        self.close_when_done()

    def smtp_HELP(self, arg: Optional[str]) -> None:
        """HELP [command]: the supported commands, or one command's syntax."""
        if not arg:
            self.push("250 " + _COMMANDS)
            return
        topic = arg.upper()
        text = _HELP_TOPICS.get(topic)
        if text is None:
            self.push("501 " + _COMMANDS)
            return
        if topic in ("MAIL", "RCPT") and self.extended_smtp:
            text += _PARAMS_HINT
        self.push("250 " + text)

    def smtp_VRFY(self, arg: Optional[str]) -> None:
        """VRFY address: never verified, but a well-formed address is accepted for delivery."""
        if not arg:
            self.push("501 Syntax: VRFY <address>")
            return
        address, _ = self._getaddr(arg)
        if address:
            self.push("252 Cannot VRFY user, but will accept message and attempt delivery")
        else:
            self.push("502 Could not VRFY %s" % arg)

    def _nl_path_syntax(self, verb: str) -> str:
        text = "501 Syntax: %s <address>" % verb
        return text + _PARAMS_HINT if self.extended_smtp else text

    def _nl_path(self, arg: Optional[str], keyword: str,
                 syntax: str) -> Optional[Tuple[str, str]]:
        # The address and the rest of a MAIL/RCPT line, or None once a syntax error is answered.
        if arg is None:
            self.push(syntax)
            return None
        address, rest = self._getaddr(self._strip_command_keyword(keyword, arg))
        if not address or (rest and not self.extended_smtp):
            self.push(syntax)
            return None
        return address, rest

    def smtp_MAIL(self, arg: Optional[str]) -> None:
        """MAIL FROM:<address> [parameters]: start a transaction."""
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        self._nl_debug("===> MAIL", arg)
        syntax = self._nl_path_syntax("MAIL FROM:")
        parsed = self._nl_path(arg, "FROM:", syntax)
        if parsed is None:
            return
        address, rest = parsed
        if self.mailfrom:
            self.push("503 Error: nested MAIL command")
            return
        self.mail_options = rest.upper().split()
        params = self._getparams(self.mail_options)
        if params is None:
            self.push(syntax)
            return
        if not self._decode_data:
            body = params.pop("BODY", "7BIT")
            if body not in ("7BIT", "8BITMIME"):
                self.push("501 Error: BODY can only be one of 7BIT, 8BITMIME")
                return
        if self.enable_SMTPUTF8:
            utf8 = params.pop("SMTPUTF8", False)
            if utf8 is True:
                self.require_SMTPUTF8 = True
            elif utf8 is not False:
                self.push("501 Error: SMTPUTF8 takes no arguments")
                return
        size = params.pop("SIZE", None)
        if size:
            if not isinstance(size, str) or not size.isdigit():
                self.push(syntax)
                return
            if self.data_size_limit and int(size) > self.data_size_limit:
                self.push("552 Error: message size exceeds fixed maximum message size")
                return
        if params:
            self.push("555 MAIL FROM parameters not recognized or not implemented")
            return
        self.mailfrom = address
        self._nl_debug("sender:", address)
        self.push("250 OK")

    def smtp_RCPT(self, arg: Optional[str]) -> None:
        """RCPT TO:<address>: add a recipient (no parameters are supported)."""
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        self._nl_debug("===> RCPT", arg)
        if not self.mailfrom:
            self.push("503 Error: need MAIL command")
            return
        syntax = self._nl_path_syntax("RCPT TO:")
        parsed = self._nl_path(arg, "TO:", syntax)
        if parsed is None:
            return
        address, rest = parsed
        self.rcpt_options = rest.upper().split()
        params = self._getparams(self.rcpt_options)
        if params is None:
            self.push(syntax)
            return
        if params:
            self.push("555 RCPT TO parameters not recognized or not implemented")
            return
        self.rcpttos.append(address)
        self._nl_debug("recips:", self.rcpttos)
        self.push("250 OK")

    def smtp_RSET(self, arg: Optional[str]) -> None:
        """RSET: drop the transaction in progress."""
        if arg:
            self.push("501 Syntax: RSET")
            return
        self._set_rset_state()
        self.push("250 OK")

    def smtp_DATA(self, arg: Optional[str]) -> None:
        """DATA: read the message up to a line holding a single dot."""
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        if not self.rcpttos:
            self.push("503 Error: need RCPT command")
            return
        if arg:
            self.push("501 Syntax: DATA")
            return
        self.smtp_state = self.DATA
        self.set_terminator(b"\r\n.\r\n")
        # The CRLF that ended this line is also the first half of the end-of-data marker
        # (RFC 5321 4.1.1.4): a message with no lines is a lone ".\r\n". Give it back to the
        # input so the terminator can match there (smtpd did not, and waited for ever);
        # found_terminator() takes it off the message again.
        # Only when this class's own input handlers will see the message: a subclass that
        # overrides collect_incoming_data()/found_terminator() (code copied from smtpd, like
        # secure-smtpd) would get the given-back CRLF at the start of its message text.
        cls = type(self)
        if (cls.found_terminator is SMTPProtocol.found_terminator
                and cls.collect_incoming_data is SMTPProtocol.collect_incoming_data
                and self._nl_unread(b"\r\n")):
            self._nl_lead = True
            self.num_bytes = -2
        self.push("354 End data with <CR><LF>.<CR><LF>")

    def smtp_EXPN(self, arg: Optional[str]) -> None:
        """EXPN: not implemented (502)."""
        self.push("502 EXPN not implemented")
