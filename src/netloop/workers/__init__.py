"""Worker processes: one loop per process, several processes serving the same port.

``run_workers(n, setup, address=...)`` starts ``n`` worker processes and supervises them until
SIGTERM or SIGINT. Each worker is forked first and builds everything itself afterwards: its
``Loop`` (so no poller, epoll set or kqueue is ever shared across a fork), then whatever
``setup`` makes (listeners, channels, timers). Nothing is shared between workers but the
listening sockets: each is an independent loop, and state kept in one worker's memory is not
seen by the others.

Listening sockets. With ``address=`` the supervisor opens them before forking, so a port given
as 0 is chosen once and every worker serves the same one:

- where the kernel balances connections over several sockets bound to one port
  (``SO_REUSEPORT`` on Linux, ``SO_REUSEPORT_LB`` on FreeBSD), one socket per worker slot: no
  thundering herd, each connection wakes one process. The supervisor keeps every slot's socket,
  so a worker that restarts takes over its predecessor's socket and backlog: connections that
  arrive while a worker restarts wait in the backlog instead of being refused;
- elsewhere (or ``reuse_port=False``), one socket inherited by all workers;
- with ``sockets=`` (socket activation, see ``netloop.activation``), those sockets, shared.

``setup`` is called in each worker with a ``Worker`` (``worker.loop``, ``worker.sockets``: the
listening sockets this worker serves, ``worker.index``); a ``setup()`` taking no argument is
called without it, and ``current_worker()`` answers the same object. The loop serves
``netloop.socket_map``, so dispatchers made without ``map=`` are served too.

Supervision:

- A worker that dies is restarted, after a delay that doubles while it keeps dying young
  (``restart_delay`` up to ``max_restart_delay``), with one log line naming its exit status or
  signal. A worker that dies before finishing ``setup`` stops everything: a program that cannot
  start is not restarted in a loop (``run_workers`` returns 1).
- SIGTERM or SIGINT: graceful stop. Each worker stops accepting (closes its listeners), lets its
  open connections finish for up to ``grace`` seconds, closes what remains and exits. A worker
  still alive a second after that is killed. A second SIGTERM/SIGINT kills the workers at once.
- SIGHUP: graceful restart. New workers start first; once each has run its ``setup``, the old
  ones stop as above. If a new worker fails to start, the old ones are kept.
- If the supervisor dies (even by SIGKILL), the workers notice: each holds one end of a socket
  pair whose other end only the supervisor holds, sees it close, and stops gracefully. No
  orphan keeps serving.

Logs go to the ``netloop.workers`` logger. POSIX only (``os.fork``).
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Optional, Sequence, Union

from .supervisor import REUSE_PORT_OPTION, Address, Supervisor, describe_status
from .worker import Worker, current_worker

__all__ = ["run_workers", "Supervisor", "Worker", "current_worker", "REUSE_PORT_OPTION",
           "describe_status"]


def run_workers(n: int, setup: Callable[..., Any], *,
                address: Union[None, Address, Sequence[Address]] = None,
                sockets: Optional[Sequence[socket.socket]] = None,
                reuse_port: Optional[bool] = None, backlog: int = 1024, grace: float = 10.0,
                poller: Optional[str] = None, restart_delay: float = 0.1,
                max_restart_delay: float = 5.0, ready_timeout: float = 60.0) -> int:
    """Run ``n`` worker processes, each calling ``setup`` after it was forked, and supervise
    them until SIGTERM/SIGINT; returns the exit status (0, or 1 if a worker could not start).

    ``address``: ``(host, port)`` (port 0: one free port for all), a Unix socket path, or a list
    of them, opened by the supervisor (see the module documentation for ``SO_REUSEPORT``).
    ``sockets``: listening sockets to share instead (socket activation). ``reuse_port``: one
    socket per worker (default: where the kernel balances them) or one shared socket.
    ``grace``: seconds open connections get to finish on stop. ``poller``: each worker's
    poller. ``restart_delay``/``max_restart_delay``: the back-off for workers that die.
    ``ready_timeout``: how long SIGHUP's new workers get to finish ``setup``.
    """
    supervisor = Supervisor(n, setup, address=address, sockets=sockets, reuse_port=reuse_port,
                            backlog=backlog, grace=grace, poller=poller,
                            restart_delay=restart_delay, max_restart_delay=max_restart_delay,
                            ready_timeout=ready_timeout)
    return supervisor.run()
