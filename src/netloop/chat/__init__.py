"""Chat channels: terminator-framed input and producer-queued output over a dispatcher.

``framing`` and ``producers`` are pure code (no sockets), ``channel`` joins them to a
``Dispatcher``. ``netloop.asynchat`` gives the same under the standard library's names.
"""

from .channel import DEFAULT_MAX_BUFFER, ChatChannel
from .framing import DATA, FOUND, OVERFLOW, Framer, find_prefix_at_end
from .producers import Producer, ProducerFifo, SimpleProducer

__all__ = [
    "ChatChannel", "DEFAULT_MAX_BUFFER", "Framer", "DATA", "FOUND", "OVERFLOW",
    "find_prefix_at_end", "Producer", "ProducerFifo", "SimpleProducer",
]
