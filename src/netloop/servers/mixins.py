"""ThreadingMixIn and ForkingMixIn: run each request off the loop, in a thread or a process.

Put the mixin first in the bases (``class S(ThreadingMixIn, TCPServer)``): it overrides
``process_request()``, which the loop calls for each request taken. The loop goes on at once; the
handler runs blocking code in its thread or child process.

Threads: a non-daemon request thread is remembered only while it may still be running (the list
is pruned each time a thread is added), so a long-running server holds as many as are busy, and
``server_close()`` joins those still running when ``block_on_close`` is true.

Processes: a forked child runs the handler and leaves with ``os._exit()``; it never returns into
the loop, never runs it, and never touches the parent's poller (the epoll or kqueue object is
shared across fork; changing it from the child would change the parent's registrations). Both
sides flush stdout and stderr around ``fork()``, so output buffered before the fork is written
once and output written by the child is not lost by ``os._exit()``. Children are reaped by
``service_actions()`` (after each loop pass of ``serve_forever()``), by ``handle_timeout()``, and
by ``server_close()`` (waiting for all of them when ``block_on_close`` is true). At
``max_children`` the server waits for one to exit before forking another; unlike socketserver,
which checked only between two passes, this holds within a burst and across ``handle_request()``
calls too.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Set

__all__ = ["ThreadingMixIn"]

if TYPE_CHECKING:
    from .base import BaseServer as _MixinBase
else:
    _MixinBase = object


class _Threads:
    """The non-daemon request threads that may still be running, for ``server_close()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []

    def append(self, thread: threading.Thread) -> None:
        if thread.daemon:
            return
        with self._lock:
            # Prune on each addition: finished threads are never kept beyond the next request.
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def reap(self) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]

    def pop_all(self) -> List[threading.Thread]:
        with self._lock:
            threads, self._threads = self._threads, []
        return threads

    def join(self) -> None:
        for thread in self.pop_all():
            thread.join()

    def __len__(self) -> int:
        return len(self._threads)

    def __iter__(self) -> Iterator[threading.Thread]:
        return iter(list(self._threads))


class _NoThreads:
    """What a server that never joins its threads (``block_on_close = False``) keeps: nothing."""

    def append(self, thread: threading.Thread) -> None:
        pass

    def join(self) -> None:
        pass

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[threading.Thread]:
        return iter(())


class ThreadingMixIn(_MixinBase):
    """Handle each request in a new thread.

    ``daemon_threads``: make request threads daemons (the interpreter does not wait for them at
    exit, and ``server_close()`` does not join them). ``block_on_close``: ``server_close()``
    waits for the non-daemon request threads still running.
    """

    daemon_threads = False
    block_on_close = True
    _threads: Any = _NoThreads()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handle one request in its thread, reporting exceptions with ``handle_error()``."""
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread to handle the request."""
        if self.block_on_close:
            vars(self).setdefault("_threads", _Threads())
        # Under connection limits the request counts until its thread is done with it.
        ticket = self._nl_claim(request)
        if ticket is None:
            thread = threading.Thread(target=self.process_request_thread,
                                      args=(request, client_address))
        else:
            thread = threading.Thread(target=self._nl_counted_thread,
                                      args=(request, client_address, ticket))
        thread.daemon = self.daemon_threads
        self._threads.append(thread)
        try:
            thread.start()
        except BaseException:
            self._nl_release(ticket)
            raise

    def _nl_counted_thread(self, request: Any, client_address: Any, ticket: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self._nl_release(ticket)

    def server_close(self) -> None:
        super().server_close()
        self._threads.join()


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


if hasattr(os, "fork"):
    __all__.append("ForkingMixIn")

    class ForkingMixIn(_MixinBase):
        """Handle each request in a new process.

        ``max_children``: at most this many children at once. ``block_on_close``:
        ``server_close()`` waits for every child. ``timeout`` (300 s): ``handle_request()``'s
        wait, after which ``handle_timeout()`` reaps children. ``active_children``: the pids not
        reaped yet (None before the first fork).
        """

        timeout: Optional[float] = 300
        active_children: Optional[Set[int]] = None
        max_children = 40
        block_on_close = True
        _nl_children: Optional[Dict[int, Any]] = None  # pid -> connection-limit ticket

        def _nl_forget_children(self) -> None:
            counted = self._nl_children
            while counted:
                self._nl_release(counted.popitem()[1])

        def collect_children(self, *, blocking: bool = False) -> None:
            """Reap the children that have exited (all of them, waiting, if ``blocking``)."""
            children = self.active_children
            if children is None:
                return
            # At the limit, wait for any child to exit. waitpid(-1) costs one call per exit
            # rather than one per child, but may reap a child forked by someone else, so it is
            # used only here, as socketserver does.
            while len(children) >= self.max_children:
                try:
                    pid, _ = os.waitpid(-1, 0)
                    children.discard(pid)
                    if self._nl_children:
                        self._nl_release(self._nl_children.pop(pid, None))
                except ChildProcessError:
                    children.clear()  # no children left at all
                    self._nl_forget_children()
                except OSError:
                    break
            self._nl_reap(0 if blocking else os.WNOHANG)

        def _nl_reap(self, flags: int) -> None:
            children = self.active_children
            if children is None:
                return
            for pid in list(children):
                try:
                    done, _ = os.waitpid(pid, flags)
                except ChildProcessError:
                    done = pid  # reaped elsewhere
                except OSError:
                    continue
                if done:
                    children.discard(done)
                    counted = self._nl_children
                    if counted:
                        self._nl_release(counted.pop(done, None))

        def _nl_reclaim(self) -> None:
            # At a connection limit: children that have exited no longer count.
            super()._nl_reclaim()
            self._nl_reap(os.WNOHANG)

        def handle_timeout(self) -> None:
            """Reap children after ``timeout`` seconds without a request."""
            self.collect_children()

        def service_actions(self) -> None:
            """Reap children after each pass of the loop."""
            self.collect_children()

        def process_request(self, request: Any, client_address: Any) -> None:
            """Fork a child to handle the request; the parent closes its copy of it."""
            children = self.active_children
            if children is not None and len(children) >= self.max_children:
                # socketserver checked the limit only between two requests; a burst of
                # requests (or handle_request() calls) must not overshoot it either.
                self.collect_children()
            # Under connection limits the request counts until its child has been reaped.
            ticket = self._nl_claim(request)
            _flush_stdio()
            try:
                pid = os.fork()
            except BaseException:
                self._nl_release(ticket)
                raise
            if pid:
                if self.active_children is None:
                    self.active_children = set()
                self.active_children.add(pid)
                if ticket is not None:
                    if self._nl_children is None:
                        self._nl_children = {}
                    self._nl_children[pid] = ticket
                self.close_request(request)
                return
            # The child: handle the request and leave, whatever happens, without returning
            # into the parent's loop (os._exit skips atexit handlers and finalizers too).
            status = 1
            try:
                self.finish_request(request, client_address)
                status = 0
            except Exception:
                self.handle_error(request, client_address)
            finally:
                try:
                    self.shutdown_request(request)
                finally:
                    _flush_stdio()
                    os._exit(status)

        def server_close(self) -> None:
            super().server_close()
            self.collect_children(blocking=self.block_on_close)
