"""Drop-in replacement for Python 3.11's ``asynchat``, on netloop's chat channel.

Every public name of the 3.11 module with its behaviour: ``async_chat`` is ``ChatChannel``
joined to the ``netloop.asyncore`` dispatcher (printed ``log_info``, the global ``socket_map``),
``simple_producer`` and ``find_prefix_at_end`` are the chat package's. As in asynchat:

- ``collect_incoming_data()`` and ``found_terminator()`` must be defined by a subclass;
- there is no input limit (``max_buffer = None``); set ``max_buffer`` on a subclass to bound
  the bytes buffered while a terminator is awaited (see ``ChatChannel.handle_overflow``);
- ``ac_in_buffer`` reads and sets the input received but not yet handed out.

Importing it warns of nothing; on Python 3.12+ ``netloop.compat.install()`` makes
``import asynchat`` find it.
"""

from __future__ import annotations

from collections import deque
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs a server ~1 MiB
    from typing import Any, Optional

from . import asyncore
from .chat.channel import ChatChannel as _ChatChannel
from .chat.framing import Framer as _Framer
from .chat.framing import find_prefix_at_end
from .chat.producers import SimpleProducer as _SimpleProducer

__all__ = ["async_chat", "simple_producer", "find_prefix_at_end"]

_ = deque  # a public name of asynchat (it imported it), kept for code that reaches for it


class async_chat(_ChatChannel, asyncore.dispatcher):
    """asynchat.async_chat: subclass it, define ``collect_incoming_data()`` and
    ``found_terminator()``."""

    max_buffer: Optional[int] = None
    write_high_water = None  # no output limit, as asynchat (set_write_buffer_limits() sets one)

    def collect_incoming_data(self, data: bytes) -> None:
        raise NotImplementedError("must be implemented in subclass")

    @property
    def ac_in_buffer(self) -> bytes:
        """Input read from the socket and not handed to ``collect_incoming_data()`` yet."""
        framer = self.__dict__.get("_framer")
        return framer.pending if framer is not None else b""

    @ac_in_buffer.setter
    def ac_in_buffer(self, value: Any) -> None:
        framer = self.__dict__.get("_framer")
        if framer is None:
            framer = self._framer = _Framer()
        framer.clear()
        framer.feed(value)


class simple_producer(_SimpleProducer):
    """asynchat.simple_producer: hands out ``data`` ``buffer_size`` bytes at a time."""
