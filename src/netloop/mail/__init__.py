"""SMTP on netloop: the protocol as pure code, its channel and servers, and the tools around them.

- ``protocol``: ``SMTPProtocol``, the RFC 5321 server side with no socket (and its parsers);
- ``server``: ``SMTPChannel``/``SMTPServer``/``DebuggingServer``/``PureProxy`` on the core
  ``ChatChannel`` and ``Dispatcher`` (``map=``, the ``netloop`` logger);
- ``show``: readable message listings and ``MailStore`` (maildir/mbox);
- ``cli``: ``python -m netloop.smtpd``'s command line.

``netloop.smtpd`` is the drop-in for Python 3.11's ``smtpd`` built from these.
"""

from .protocol import COMMAND_SIZE_LIMIT, DATA_SIZE_DEFAULT, SMTPProtocol
from .server import DebuggingServer, PureProxy, SMTPChannel, SMTPServer
from .show import MailStore, format_message, format_raw

__all__ = [
    "SMTPProtocol", "SMTPChannel", "SMTPServer", "DebuggingServer", "PureProxy",
    "DATA_SIZE_DEFAULT", "COMMAND_SIZE_LIMIT", "MailStore", "format_message", "format_raw",
]
