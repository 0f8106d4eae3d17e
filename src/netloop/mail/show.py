"""What the debugging server does with a message: show it (raw or readable) and store it.

``format_raw()`` is smtpd's ``DebuggingServer`` output: one line per message line (``repr`` of
each when the message is bytes) with an ``X-Peer`` line at the end of the headers.
``format_message()`` is for a person: the envelope, the headers with RFC 2047 encoded words
decoded, each text part decoded (transfer encoding and charset) and one line per attachment.
``MailStore`` appends messages to a maildir and/or an mbox file with the envelope recorded in
``Return-Path``, ``X-Original-To`` and ``X-Peer`` headers.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import mailbox
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional

__all__ = ["format_raw", "format_message", "MailStore", "BEGIN", "END"]

BEGIN = "---------- MESSAGE FOLLOWS ----------"
END = "------------ END MESSAGE ------------"


def _peer_host(peer: Any) -> str:
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    return str(peer)


def format_raw(peer: Any, data: Any) -> str:
    """smtpd's listing of a message: its lines, ``X-Peer`` added after the headers."""
    out: List[str] = []
    binary = not isinstance(data, str)
    in_headers = True
    for line in data.splitlines():
        if in_headers and not line:
            peer_line = "X-Peer: " + _peer_host(peer)
            out.append(repr(peer_line.encode("utf-8")) if binary else peer_line)
            in_headers = False
        out.append(repr(line) if binary else line)
    return "".join(text + "\n" for text in out)


def _header_text(name: str, value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a header the parser could not make sense of: decode by hand
        try:
            return str(email.header.make_header(email.header.decode_header(str(value))))
        except Exception:
            return repr(value)


def _part_text(part: Any) -> str:
    try:
        content = part.get_content()
    except Exception:  # unknown charset, broken transfer encoding...
        payload = part.get_payload(decode=True) or b""
        content = payload.decode("utf-8", "replace")
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return str(content)


def format_message(peer: Any, mailfrom: Optional[str], rcpttos: List[str], data: Any,
                   **kwargs: Any) -> str:
    """A readable listing of a message and its envelope (see the module docstring)."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    out = [BEGIN]
    if isinstance(peer, (tuple, list)) and len(peer) >= 2:
        out.append("Peer: %s port %s" % (peer[0], peer[1]))
    else:
        out.append("Peer: %s" % (peer,))
    out.append("Envelope from: %s" % (mailfrom or "<>"))
    out.append("Envelope to: %s" % ", ".join(rcpttos))
    if kwargs.get("mail_options"):
        out.append("MAIL options: %s" % " ".join(kwargs["mail_options"]))
    if kwargs.get("rcpt_options"):
        out.append("RCPT options: %s" % " ".join(kwargs["rcpt_options"]))
    out.append("Size: %d bytes" % len(raw))
    out.append("")
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        for name, value in message.items():
            out.append("%s: %s" % (name, _header_text(name, value)))
        out.append("")
        for part in message.walk():
            if part.is_multipart():
                continue
            disposition = part.get_content_disposition()
            if part.get_content_maintype() == "text" and disposition != "attachment":
                text = _part_text(part)
                if part is not message:
                    out.append("[%s]" % part.get_content_type())
                out.append(text.rstrip("\n"))
            else:
                payload = part.get_payload(decode=True) or b""
                out.append("[attachment: %s, %s, %d bytes]" % (
                    part.get_filename() or "unnamed", part.get_content_type(), len(payload)))
    except Exception as exc:  # never lose the message to a parsing problem: show it raw
        out.append("(could not parse the message: %s)" % exc)
        out.append(raw.decode("utf-8", "replace").rstrip("\n"))
    out.append(END)
    return "".join(line + "\n" for line in out)


class MailStore:
    """Keeps each message in a maildir (a directory) and/or an mbox (a file).

    The directories and file are made when missing. Each message gets ``Return-Path``,
    ``X-Original-To`` and ``X-Peer`` headers in front, so the envelope is not lost.
    """

    def __init__(self, maildir: Optional[str] = None, mbox: Optional[str] = None) -> None:
        if maildir is None and mbox is None:
            raise ValueError("give a maildir, an mbox or both")
        self.maildir = None
        if maildir is not None:
            # Maildir(create=True) makes tmp/, new/ and cur/ only when the directory itself is
            # missing: in one made beforehand (mkdir mail; --maildir mail) every add() failed.
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(maildir, sub), exist_ok=True)
            self.maildir = mailbox.Maildir(maildir, create=False)
        if mbox is not None:
            folder = os.path.dirname(os.path.abspath(mbox))
            os.makedirs(folder, exist_ok=True)
        self.mbox = mailbox.mbox(mbox, create=True) if mbox is not None else None

    def add(self, peer: Any, mailfrom: Optional[str], rcpttos: List[str], data: Any) -> None:
        """Store one message with its envelope."""
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
        head = "Return-Path: <%s>\nX-Original-To: %s\nX-Peer: %s\n" % (
            mailfrom or "", ", ".join(rcpttos), _peer_host(peer))
        message = head.encode("utf-8") + raw
        if self.maildir is not None:
            self.maildir.add(message)
        if self.mbox is not None:
            self.mbox.lock()
            try:
                self.mbox.add(message)
                self.mbox.flush()
            finally:
                self.mbox.unlock()

    def close(self) -> None:
        """Close the mbox file (a maildir holds nothing open)."""
        if self.mbox is not None:
            self.mbox.close()
