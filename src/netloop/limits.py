"""Connection limits: the count of connections held, in all and per client host.

Shared by the two kinds of listener that take limits, ``Dispatcher.set_connection_limits()``
and ``BaseServer.set_connection_limits()`` (netloop.socketserver). Each decides when a
connection starts and stops counting (a dispatcher's close, a handler thread's end, a child
reaped); this module holds the arithmetic and the wording, so both refuse the same way.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional

__all__ = ["HostTally", "check_limits"]


def check_limits(max_connections: Optional[int], max_per_address: Optional[int]) -> bool:
    """Validate a pair of limits (each at least 1, or None); True if either is set."""
    for value in (max_connections, max_per_address):
        if value is not None and value < 1:
            raise ValueError("a connection limit must be at least 1 (or None)")
    return max_connections is not None or max_per_address is not None


class HostTally:
    """How many connections are held, in all and from each client host (None: not an IP
    address, which the per-address limit does not apply to)."""

    __slots__ = ("total", "by_host")

    def __init__(self) -> None:
        self.total = 0
        self.by_host: Dict[Any, int] = {}

    def room(self, host: Any, max_connections: Optional[int],
             max_per_address: Optional[int]) -> bool:
        """True if one more connection from ``host`` stays within both limits."""
        if max_connections is not None and self.total >= max_connections:
            return False
        return (max_per_address is None or host is None
                or self.by_host.get(host, 0) < max_per_address)

    def add(self, host: Any) -> None:
        self.total += 1
        self.by_host[host] = self.by_host.get(host, 0) + 1

    def remove(self, host: Any) -> None:
        self.total -= 1
        left = self.by_host.get(host, 1) - 1
        if left > 0:
            self.by_host[host] = left
        else:
            self.by_host.pop(host, None)

    def admits(self, owner: Any, host: Any, reclaim: Callable[[], None],
               where: Callable[[Any], str], logger: Any) -> bool:
        """Whether ``owner`` (a listener: its ``max_connections``, ``max_per_address`` and
        ``_nl_refusing`` flag) may take one more connection from ``host``. At a limit,
        ``reclaim()`` first forgets the connections that ended unseen; a refusal is logged
        once per episode, as ``where(owner)`` names the listener. The caller counts an admitted
        connection (``add``) and closes a refused one."""
        limit, per_host = owner.max_connections, owner.max_per_address
        if not self.room(host, limit, per_host):
            reclaim()
            if not self.room(host, limit, per_host):
                if not owner._nl_refusing:
                    owner._nl_refusing = True
                    logger.warning(
                        "netloop: %s: connection limit reached (%d held, %d from %s; limits %s "
                        "in all, %s per address): refusing new connections until some close",
                        where(owner), self.total, self.by_host.get(host, 0), host, limit, per_host)
                return False
        owner._nl_refusing = False
        return True
