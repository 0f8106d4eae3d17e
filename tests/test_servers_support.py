"""Helpers for the socketserver tests: leak checks, a serving context, bounded waits, clients.

Imported by the ``test_servers_*`` modules (it holds no tests itself). Every test that uses
``no_leaks`` must end with the fds, threads and child processes it started gone, and the global
``socket_map`` as it found it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterator, Optional

import pytest

import netloop

#: Python 3.12+ warns when a process with several threads forks; pytest's faulthandler
#: watchdog alone counts as one. The forking tests fork on purpose.
FORK_WARNING = "ignore:.*fork.*:DeprecationWarning"
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
needs_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX")


def _open_fds() -> set:
    """(fd, what it refers to) for each open descriptor (the listing's own one excluded)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # pragma: no cover - no procfs
        return set()
    fds = set()
    for name in names:
        try:
            fds.add((name, os.readlink("/proc/self/fd/" + name)))
        except OSError:
            pass  # the listing's descriptor, closed by now
    return fds


def _no_children() -> bool:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False if pid == 0 else _no_children()


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.002)


@pytest.fixture
def no_leaks() -> Iterator[None]:
    fds = _open_fds()
    threads = set(threading.enumerate())
    map_size = len(netloop.socket_map)
    yield
    # Threads that finished their work may need a moment to leave threading.enumerate().
    wait_until(lambda: set(threading.enumerate()) <= threads, 5, "threads to end")
    assert len(netloop.socket_map) == map_size, "global socket_map changed"
    wait_until(_no_children, 5, "child processes to be reaped")
    leaked = _open_fds() - fds
    assert not leaked, "leaked fds: %s" % sorted(leaked)


@contextlib.contextmanager
def serving(server: Any, poll_interval: Optional[float] = 0.5) -> Iterator[Any]:
    """Run ``server.serve_forever()`` in a thread for the block; shut down and close after."""
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,),
                              name="serve_forever")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)
        assert not thread.is_alive()
        server.server_close()


def stream_roundtrip(family: int, addr: Any, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new stream connection and read until the server closes it."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(addr)
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def dgram_roundtrip(family: int, addr: Any, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        path = None
        if family == getattr(socket, "AF_UNIX", None):
            path = unix_path("c")
            s.bind(path)
        try:
            s.sendto(data, addr)
            reply, _ = s.recvfrom(65536)
        finally:
            if path:
                os.unlink(path)
    return reply  # type: ignore[no-any-return]


_unix_dir: Optional[str] = None


def unix_path(tag: str = "s") -> str:
    """A fresh, short Unix socket path (sun_path holds about 100 bytes)."""
    global _unix_dir
    if _unix_dir is None or not os.path.isdir(_unix_dir):
        _unix_dir = tempfile.mkdtemp(prefix="nlss", dir="/tmp")
        atexit.register(shutil.rmtree, _unix_dir, True)
    fd, path = tempfile.mkstemp(prefix=tag, dir=_unix_dir)
    os.close(fd)
    os.unlink(path)
    return path


def family_addr(family: int) -> Any:
    if family == socket.AF_INET:
        return ("127.0.0.1", 0)
    if family == socket.AF_INET6:
        return ("::1", 0)
    return unix_path()


def have_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


PY312 = sys.version_info >= (3, 12)
