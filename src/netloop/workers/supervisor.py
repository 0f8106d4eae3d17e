"""The supervisor of ``run_workers``: opens the listening sockets, forks the workers, reaps and
restarts them, and turns SIGTERM/SIGINT/SIGHUP into graceful stops and restarts.

It uses no netloop loop itself (a plain ``select`` on its wake-up socket and the workers'
control sockets), so nothing with a kernel poller exists in the parent to cross a fork.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .worker import MSG_READY, MSG_STOP, Worker, _call_setup, _Control, _set_current
from ..services import ignored_signals

__all__ = ["Supervisor", "REUSE_PORT_OPTION", "describe_status"]

logger = logging.getLogger("netloop.workers")

#: The socket option that makes the kernel balance connections over the sockets bound to one
#: port, or None where the platform has none (there, workers share one socket).
REUSE_PORT_OPTION: Optional[int] = getattr(socket, "SO_REUSEPORT_LB", None)
if REUSE_PORT_OPTION is None and sys.platform.startswith("linux"):
    REUSE_PORT_OPTION = getattr(socket, "SO_REUSEPORT", None)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum


def describe_status(status: int) -> str:
    """``waitpid()``'s status in words: "exited with status 3", "killed by signal 9 (SIGKILL)"."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return "killed by signal %d (%s)" % (sig, _signal_name(sig))
    if os.WIFEXITED(status):
        return "exited with status %d" % os.WEXITSTATUS(status)
    return "ended with wait status %d" % status


class _Child:
    def __init__(self, pid: int, slot: int, generation: int, conn: socket.socket) -> None:
        self.pid = pid
        self.slot = slot
        self.generation = generation
        self.conn: Optional[socket.socket] = conn
        self.ready = False
        self.retiring = False
        self.started = time.monotonic()
        self.kill_at: Optional[float] = None


Address = Union[Tuple[Any, ...], str]


class Supervisor:
    """The parent process of ``run_workers``; see the module documentation.

    Use ``listen()`` to open the listening sockets before ``run()`` (to print the addresses,
    say); ``run()`` opens them itself otherwise.
    """

    def __init__(self, n: int, setup: Callable[..., Any], *,
                 address: Union[None, Address, Sequence[Address]] = None,
                 sockets: Optional[Sequence[socket.socket]] = None,
                 reuse_port: Optional[bool] = None, backlog: int = 1024,
                 grace: float = 10.0, poller: Optional[str] = None,
                 restart_delay: float = 0.1, max_restart_delay: float = 5.0,
                 ready_timeout: float = 60.0) -> None:
        if n < 1:
            raise ValueError("at least one worker is needed, not %r" % (n,))
        if grace < 0:
            raise ValueError("grace must be >= 0, not %r" % (grace,))
        if not hasattr(os, "fork"):  # pragma: no cover
            raise OSError("worker processes need os.fork()")
        self.n = n
        self.setup = setup
        if address is None:
            self.addresses: List[Address] = []
        elif isinstance(address, str) or (isinstance(address, tuple) and address
                                          and not isinstance(address[0], tuple)):
            self.addresses = [address]
        else:
            self.addresses = list(address)
        self.shared: List[socket.socket] = list(sockets or [])
        if reuse_port is None:
            reuse_port = REUSE_PORT_OPTION is not None
        elif reuse_port and REUSE_PORT_OPTION is None:
            raise OSError("this platform has no load-balancing SO_REUSEPORT")
        self.reuse_port = reuse_port
        self.backlog = backlog
        self.grace = grace
        self.poller = poller
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.ready_timeout = ready_timeout
        #: slot -> that slot's sockets (one per address) when reuse_port; else [] per slot.
        self.slot_sockets: List[List[socket.socket]] = [[] for _ in range(n)]
        self.children: Dict[int, _Child] = {}
        self.generation = 0
        self.stopping = False
        self._listening = False
        self._status = 0
        self._delays = [restart_delay] * n
        self._restarts: Dict[int, float] = {}   # slot -> when to restart it
        self._reload: Optional[Tuple[List[_Child], float]] = None  # (new children, deadline)
        self._signals: List[int] = []
        self._ignored: "frozenset[int]" = frozenset()  # signals ignored at start (run())
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._kill_deadline: Optional[float] = None

    # ------------------------------------------------------------------ sockets
    def listen(self) -> List[Any]:
        """Open the listening sockets for ``address``; return the addresses bound (with the
        port chosen for port 0). Shared ``sockets`` are returned as they are."""
        if not self._listening:
            self._listening = True
            try:
                for address in self.addresses:
                    self._open(address)
            except BaseException:
                self.close_sockets()
                raise
        seen = self.shared + (self.slot_sockets[0] if self.reuse_port else [])
        return [sock.getsockname() for sock in seen]

    def _open(self, address: Address) -> None:
        if isinstance(address, str):
            family = socket.AF_UNIX
        else:
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        if family == socket.AF_UNIX or not self.reuse_port:
            self.shared.append(self._bind(family, address, False))
            return
        first = self._bind(family, address, True)
        self.slot_sockets[0].append(first)
        bound = first.getsockname()
        for slot in range(1, self.n):
            self.slot_sockets[slot].append(self._bind(family, bound, True))

    def _bind(self, family: int, address: Any, reuse_port: bool) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                assert REUSE_PORT_OPTION is not None
                sock.setsockopt(socket.SOL_SOCKET, REUSE_PORT_OPTION, 1)
            sock.bind(address)
            sock.listen(self.backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def close_sockets(self) -> None:
        """Close the supervisor's listening sockets (``run()`` does when it returns)."""
        for sock in self.shared:
            if sock.fileno() >= 0 and sock.family == socket.AF_UNIX and self.addresses:
                try:
                    path = sock.getsockname()
                    if isinstance(path, str) and path and path in self.addresses:
                        os.unlink(path)
                except OSError:
                    pass
            sock.close()
        for socks in self.slot_sockets:
            for sock in socks:
                sock.close()

    # ------------------------------------------------------------------ running
    def run(self) -> int:
        """Start the workers and supervise them until a graceful stop; the exit status
        (0, or 1 when a worker could not start). Main thread only."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("run_workers() must run in the main thread (signals)")
        self.listen()
        try:
            self._wake_r, self._wake_w = socket.socketpair()
        except OSError as exc:
            # No descriptor for the supervisor's own wake-up pair (a very low ulimit -n): one
            # line and status 1, not a traceback.
            logger.error("netloop: cannot start the workers' supervisor: %s", exc)
            self.close_sockets()
            return 1
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        old_handlers: Dict[int, Any] = {}
        old_wakeup = -1
        # A stop or restart signal ignored when the supervisor started stays so, here and in
        # the workers (nohup: SIGHUP; a background job of a non-interactive shell: SIGINT).
        self._ignored = ignored_signals(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        try:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                if signum in self._ignored:
                    continue
                old_handlers[signum] = signal.signal(signum, self._on_signal)
            old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
            for slot in range(self.n):
                try:
                    self._spawn(slot)
                except OSError as exc:
                    logger.error("netloop: could not start worker %d (%s); stopping all "
                                 "workers", slot, exc)
                    self._status = 1
                    self.stop()
                    break
            while self.children or not self.stopping:
                self._step()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for number, handler in old_handlers.items():
                signal.signal(number, handler)
            self._kill_all(signal.SIGKILL)
            self._reap(block=True)
            for child in list(self.children.values()):
                self._close_conn(child)
            self._wake_r.close()
            self._wake_w.close()
            self.close_sockets()
        return self._status

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)

    def _step(self) -> None:
        now = time.monotonic()
        timeout: Optional[float] = None
        deadlines = list(self._restarts.values())
        deadlines += [c.kill_at for c in self.children.values() if c.kill_at is not None]
        if self._reload is not None:
            deadlines.append(self._reload[1])
        if deadlines:
            timeout = max(0.0, min(deadlines) - now)
        watched: List[Any] = [self._wake_r]
        watched += [c.conn for c in self.children.values() if c.conn is not None]
        try:
            readable, _, _ = select.select(watched, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            readable = []
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(512):  # type: ignore[union-attr]
                    pass
            except (BlockingIOError, InterruptedError):
                pass
        signals, self._signals = self._signals, []
        for signum in signals:
            self._handle_signal(signum)
        for child in list(self.children.values()):
            if child.conn is not None and child.conn in readable:
                self._read_child(child)
        self._reap(block=False)
        self._timers()

    def _handle_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self.stopping:
                logger.warning("netloop: %s again: killing the workers now", _signal_name(signum))
                self._kill_all(signal.SIGKILL)
                return
            logger.info("netloop: %s: stopping the workers gracefully (grace %gs)",
                        _signal_name(signum), self.grace)
            self.stop()
        elif signum == signal.SIGHUP and not self.stopping:
            self.reload()

    def stop(self) -> None:
        """Begin the graceful stop of every worker (what SIGTERM does)."""
        self.stopping = True
        self._restarts.clear()
        self._reload = None
        for child in self.children.values():
            self._retire(child)
        # New connections are refused from now on, not queued for workers that are leaving.
        self.close_sockets()

    def reload(self) -> None:
        """Start a new generation of workers, then retire the current one (what SIGHUP does)."""
        if self._reload is not None:
            logger.warning("netloop: SIGHUP while a restart is under way: ignored")
            return
        self.generation += 1
        logger.info("netloop: SIGHUP: starting %d new workers (generation %d)", self.n,
                    self.generation)
        self._restarts.clear()
        new: List[_Child] = []
        self._reload = (new, time.monotonic() + self.ready_timeout)
        for slot in range(self.n):
            try:
                new.append(self._spawn(slot))
            except OSError as exc:
                # No descriptor for its socket pair (EMFILE), no process (EAGAIN, ENOMEM):
                # the running generation serves on, as when a new worker fails to start.
                self._abort_reload("could not start new worker %d: %s" % (slot, exc))
                return

    def _retire(self, child: _Child) -> None:
        if child.retiring:
            return
        child.retiring = True
        child.kill_at = time.monotonic() + self.grace + 1.0
        if child.conn is not None:
            try:
                child.conn.send(MSG_STOP)
                return
            except OSError:
                pass
        self._kill(child, signal.SIGTERM)

    def _read_child(self, child: _Child) -> None:
        assert child.conn is not None
        try:
            data = child.conn.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_conn(child)  # it is exiting; waitpid will tell how
            return
        if MSG_READY in data and not child.ready:
            child.ready = True
            self._check_reload()

    def _check_reload(self) -> None:
        if self._reload is None:
            return
        new, _ = self._reload
        if all(c.ready for c in new):
            self._reload = None
            old = [c for c in self.children.values() if c.generation < self.generation]
            logger.info("netloop: generation %d ready; stopping %d old workers gracefully",
                        self.generation, len(old))
            for child in old:
                self._retire(child)

    def _abort_reload(self, why: str) -> None:
        assert self._reload is not None
        new, _ = self._reload
        self._reload = None
        logger.error("netloop: restart failed (%s); keeping the running workers", why)
        for child in new:
            if child.pid in self.children:
                self._retire(child)
        self.generation -= 1  # the running workers are the current generation again
        # A slot whose worker died meanwhile gets a new one of this generation.
        alive = {c.slot for c in self.children.values()
                 if c.generation == self.generation and not c.retiring}
        now = time.monotonic()
        for slot in range(self.n):
            if slot not in alive and slot not in self._restarts:
                self._restarts[slot] = now + self._delays[slot]

    def _timers(self) -> None:
        now = time.monotonic()
        for slot, when in list(self._restarts.items()):
            if when <= now:
                del self._restarts[slot]
                if not self.stopping:
                    try:
                        self._spawn(slot)
                    except OSError as exc:
                        delay = self._delays[slot]
                        self._delays[slot] = min(delay * 2, self.max_restart_delay)
                        logger.error("netloop: could not restart worker %d (%s); trying again "
                                     "in %.1fs", slot, exc, delay)
                        self._restarts[slot] = now + delay
        for child in list(self.children.values()):
            if child.kill_at is not None and child.kill_at <= now:
                logger.warning("netloop: worker %d (pid %d) did not stop within %gs; killing it",
                               child.slot, child.pid, self.grace)
                child.kill_at = None
                self._kill(child, signal.SIGKILL)
        if self._reload is not None and self._reload[1] <= now:
            self._abort_reload("new workers not ready within %gs" % self.ready_timeout)

    def _kill(self, child: _Child, signum: int) -> None:
        try:
            os.kill(child.pid, signum)
        except OSError:
            pass

    def _kill_all(self, signum: int) -> None:
        for child in self.children.values():
            self._kill(child, signum)

    def _close_conn(self, child: _Child) -> None:
        if child.conn is not None:
            child.conn.close()
            child.conn = None

    def _reap(self, block: bool) -> None:
        for child in list(self.children.values()):
            try:
                pid, status = os.waitpid(child.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                pid, status = child.pid, 0
            except InterruptedError:  # pragma: no cover
                continue
            if pid == 0:
                continue
            del self.children[child.pid]
            self._close_conn(child)
            self._exited(child, status)

    def _exited(self, child: _Child, status: int) -> None:
        what = describe_status(status)
        if child.retiring or self.stopping:
            logger.info("netloop: worker %d (pid %d) %s", child.slot, child.pid, what)
            return
        if self._reload is not None and child in self._reload[0]:
            self._abort_reload("new worker %d (pid %d) %s while starting"
                               % (child.slot, child.pid, what))
            return
        if child.generation < self.generation:
            logger.info("netloop: worker %d (pid %d) of generation %d %s", child.slot,
                        child.pid, child.generation, what)
            return
        if not child.ready:
            logger.error("netloop: worker %d (pid %d) %s before it was ready; stopping all "
                         "workers", child.slot, child.pid, what)
            self._status = 1
            self.stop()
            return
        lived = time.monotonic() - child.started
        delay = self._delays[child.slot] if lived < 10.0 else self.restart_delay
        self._delays[child.slot] = min(delay * 2, self.max_restart_delay)
        logger.error("netloop: worker %d (pid %d) %s; restarting it in %.1fs", child.slot,
                     child.pid, what, delay)
        self._restarts[child.slot] = time.monotonic() + delay

    # ------------------------------------------------------------------ forking
    def _spawn(self, slot: int) -> _Child:
        ours, theirs = socket.socketpair()
        # Flush what the parent's buffers hold, or each child would write it again.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        try:
            pid = os.fork()
        except BaseException:
            ours.close()
            theirs.close()
            raise
        if pid == 0:  # pragma: no cover - runs in the child, which never returns here
            code = 1
            try:
                ours.close()
                code = self._child(slot, theirs)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                try:
                    logger.exception("netloop: worker %d (pid %d) failed", slot, os.getpid())
                except BaseException:
                    pass
            finally:
                try:
                    logging.shutdown()
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        theirs.close()
        ours.setblocking(False)
        child = _Child(pid, slot, self.generation, ours)
        self.children[pid] = child
        logger.debug("netloop: worker %d started (pid %d)", slot, pid)
        return child

    def _child(self, slot: int, conn: socket.socket) -> int:
        from .. import reactor
        from ..reactor import Loop

        # Signals: the supervisor's handlers are not ours. SIGHUP (a terminal hanging up on
        # the whole group) is the supervisor's business.
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN if signal.SIGINT in self._ignored
                      else signal.default_int_handler)
        if signal.SIGTERM in self._ignored:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # Descriptors of the supervisor: close this process's copies. Another worker's control
        # socket held open here would hide the supervisor's death from that worker.
        assert self._wake_r is not None and self._wake_w is not None
        self._wake_r.close()
        self._wake_w.close()
        for other in self.children.values():
            if other.conn is not None:
                other.conn.close()
        mine: List[socket.socket] = list(self.shared)
        for i, socks in enumerate(self.slot_sockets):
            if i == slot:
                mine.extend(socks)
            else:
                for sock in socks:
                    sock.close()
        # Channels the parent had in the default map are the parent's: not served here.
        reactor.socket_map.clear()
        try:
            loop = Loop(reactor.socket_map, poller=self.poller)
        except ValueError:
            loop = reactor.get_loop(reactor.socket_map)
        worker = Worker(slot, self.generation, loop, mine, self.grace)
        _set_current(worker)
        conn.setblocking(False)
        control = _Control(worker, conn)
        worker._keep.append(control.channel)
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signum not in self._ignored:
                loop.add_signal_handler(signum, worker.stop)
        try:
            _call_setup(self.setup, worker)
        except Exception:
            logger.exception("netloop: worker %d (pid %d): setup failed", slot, os.getpid())
            return 3
        if not worker.stopping:
            try:
                conn.send(MSG_READY)
            except OSError:
                worker.stop()
        try:
            loop.run_forever()
        finally:
            for obj in list(loop.map.values()):
                try:
                    obj.close()
                except Exception:
                    pass
            loop.close()
        return 0
