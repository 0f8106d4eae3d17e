"""The worker side of ``run_workers``: what ``setup`` sees (``Worker``), the graceful stop
(stop accepting, drain for ``grace`` seconds, exit), and the control channel to the supervisor
whose close means the supervisor is gone."""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from typing import Any, Callable, List, Optional

__all__ = ["Worker", "current_worker"]

logger = logging.getLogger("netloop.workers")

# One byte each way on the worker's socket pair with the supervisor.
MSG_READY = b"R"
MSG_STOP = b"S"

_current: Optional["Worker"] = None

#: At most this many accept bursts (of ``ACCEPT_BURST``) for the backlog of a stopping worker.
_BACKLOG_BURSTS = 32


def current_worker() -> Optional["Worker"]:
    """The ``Worker`` of this process, or None outside a worker."""
    return _current


def _set_current(worker: "Worker") -> None:
    global _current
    _current = worker


class _Control:
    """The worker's end of its socket pair with the supervisor, as a channel of its loop."""

    def __init__(self, worker: "Worker", sock: socket.socket) -> None:
        from ..dispatcher import Dispatcher, known_interest
        from ..pollers import READ_MASK

        outer = self

        class Channel(Dispatcher):
            @known_interest
            def readable(self) -> bool:
                return True

            @known_interest
            def writable(self) -> bool:
                return False

            def _nl_mask(self) -> int:
                return READ_MASK

            def handle_read(self) -> None:
                try:
                    data = self.socket.recv(64)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    data = b""
                if not data:
                    outer.gone()
                elif MSG_STOP in data:
                    worker.stop()

            def handle_close(self) -> None:
                outer.gone()

        self.worker = worker
        self.channel = Channel(sock, map=worker.loop.map)

    def gone(self) -> None:
        self.channel.close()
        if not self.worker.stopping:
            logger.warning("netloop: worker %d (pid %d): the supervisor is gone; stopping",
                           self.worker.index, os.getpid())
            self.worker.stop()


class Worker:
    """One worker process, as its ``setup`` sees it.

    ``index``: the worker's slot, 0 to n-1 (kept by its replacements). ``generation``: 0, plus
    one per SIGHUP. ``loop``: the process's ``netloop.Loop``. ``sockets``: the listening
    sockets to serve (empty when ``run_workers`` was given no ``address``/``sockets``).
    ``grace``: seconds open connections get when the worker stops.
    """

    def __init__(self, index: int, generation: int, loop: Any, sockets: List[socket.socket],
                 grace: float) -> None:
        self.index = index
        self.generation = generation
        self.loop = loop
        self.sockets = sockets
        self.grace = grace
        self.stopping = False
        self._stop_callbacks: List[Callable[[], Any]] = []
        self._keep: List[Any] = []

    def at_stop(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` when the worker begins to stop (after its listeners are closed)."""
        self._stop_callbacks.append(fn)

    def stop(self) -> None:
        """Stop gracefully: stop accepting, let connections finish for ``grace`` seconds, exit.

        Safe to call more than once, and from a signal handler installed on the loop.
        """
        if self.stopping:
            return
        self.stopping = True
        lp = self.loop
        for obj in list(lp.map.values()):
            if obj not in self._keep and getattr(obj, "accepting", False):
                # Closing a listener resets the connections waiting in its backlog: their
                # clients were told "connected" by the kernel. Take them first (they are
                # served during the grace period); one arriving after the close is refused.
                self._take_backlog(obj)
                try:
                    obj.close()
                except Exception:
                    logger.exception("netloop: worker %d: closing listener %r", self.index, obj)
        for sock in self.sockets:
            sock.close()  # this process's copy; the supervisor keeps the socket for others
        for fn in self._stop_callbacks:
            try:
                fn()
            except Exception:
                logger.exception("netloop: worker %d: stop callback %r failed", self.index, fn)
        deadline = lp.time() + self.grace
        lp.call_soon(self._drain, deadline)

    def _take_backlog(self, listener: Any) -> None:
        """Accept what waits in ``listener``'s backlog now, in bursts, as its own readiness
        events would (bounded: a flood cannot keep a stopping worker accepting)."""
        fd = getattr(listener, "_fileno", None)
        if fd is None:
            return
        waiting = select.poll()
        waiting.register(fd, select.POLLIN)
        for _ in range(_BACKLOG_BURSTS):
            try:
                if not waiting.poll(0):
                    return
                listener.handle_read_event()
            except Exception:
                logger.exception("netloop: worker %d: taking the backlog of %r", self.index,
                                 listener)
                return
            if getattr(listener, "_fileno", None) != fd:
                return  # closed meanwhile

    def _open(self) -> List[Any]:
        return [obj for obj in self.loop.map.values() if obj not in self._keep]

    def _threads(self) -> List[threading.Thread]:
        main = threading.main_thread()
        return [t for t in threading.enumerate()
                if t is not main and not t.daemon and t.is_alive()]

    def _drain(self, deadline: float) -> None:
        lp = self.loop
        left = self._open()
        threads = self._threads()
        if not left and not threads:
            lp.stop()
            return
        if lp.time() >= deadline:
            if left:
                logger.warning("netloop: worker %d (pid %d): %d connection(s) still open after "
                               "the %gs grace period; closing them", self.index, os.getpid(),
                               len(left), self.grace)
                for obj in left:
                    try:
                        obj.close()
                    except Exception:
                        pass
            if threads:
                logger.warning("netloop: worker %d (pid %d): %d thread(s) still running after "
                               "the %gs grace period; exiting anyway", self.index, os.getpid(),
                               len(threads), self.grace)
            lp.stop()
            return
        lp.call_later(min(0.05, max(0.0, deadline - lp.time())), self._drain, deadline)


def _call_setup(setup: Callable[..., Any], worker: Worker) -> Any:
    code = getattr(setup, "__code__", None)
    if code is not None:
        wanted = code.co_argcount - len(getattr(setup, "__defaults__", None) or ())
        if hasattr(setup, "__self__"):
            wanted -= 1
        if wanted <= 0 and not code.co_flags & 0x04:  # no required argument, no *args
            return setup()
    return setup(worker)
