"""Drop-ins in a process whose socket and select modules were patched after netloop's import.

maildump (gevent) runs ``asyncore.loop`` in a greenlet after ``gevent.monkey.patch_all()``; run
with ``python -m netloop.compat run --force``, netloop was imported before the patch. asyncore
looked ``socket.socket`` and ``select.select`` up at each call, so the patched ones served:
accept() went through the listener's own ``accept()``, and each pass waited in the cooperative
select. These tests patch the two names the way such libraries do (a socket class that wraps a
real socket and is no subclass of it; a select that does its own work and then selects), with
the standard library only.
"""

from __future__ import annotations

import os
import select
import socket
from typing import Any, List, Optional

import pytest

import netloop.asyncore as asyncore

_REAL_SOCKET = socket.socket


class WrappedSocket:
    """A socket class of the monkey-patching kind: it holds a real socket and forwards to it."""

    def __init__(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
                 proto: int = 0, fileno: Optional[int] = None) -> None:
        self._sock = _REAL_SOCKET(family, type, proto, fileno)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def accept(self) -> Any:
        fd, addr = self._sock._accept()
        return WrappedSocket(self._sock.family, self._sock.type, self._sock.proto, fd), addr

    def _accept(self) -> Any:  # as gevent's class has
        return self._sock._accept()

    def close(self) -> None:
        self._sock.close()


class Listener(asyncore.dispatcher):
    def __init__(self) -> None:
        asyncore.dispatcher.__init__(self)
        self.accepted: List[Any] = []
        self.create_socket()
        self.bind(("127.0.0.1", 0))
        self.listen(5)

    def handle_accepted(self, sock: Any, addr: Any) -> None:
        self.accepted.append(sock)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_accept_on_a_listener_of_a_socket_class_set_after_import(monkeypatch) -> None:
    monkeypatch.setattr(socket, "socket", WrappedSocket)
    srv = Listener()
    assert isinstance(srv.socket, WrappedSocket)
    client = None
    try:
        asyncore.loop(timeout=0.01, count=1)  # the loop's own descriptors, before counting
        client = socket.create_connection(srv.socket.getsockname()[:2])  # a real one
        before = _open_fds()
        for _ in range(20):
            asyncore.loop(timeout=0.05, count=1)
            if srv.accepted:
                break
        # The connection reached handle_accepted() as a socket of the patched class (its
        # descriptor was not taken from the backlog and then lost).
        assert len(srv.accepted) == 1
        assert isinstance(srv.accepted[0], WrappedSocket)
        assert _open_fds() == before + 1
    finally:
        for s in srv.accepted:
            s.close()
        srv.close()  # a socket of the patched class closes through its own close()
        if client is not None:
            client.close()
    assert srv.socket._sock.fileno() == -1


def test_close_of_a_channel_whose_socket_is_of_a_socket_class_set_after_import(
        monkeypatch) -> None:
    monkeypatch.setattr(socket, "socket", WrappedSocket)
    d = asyncore.dispatcher()
    d.create_socket()
    d.close()
    assert d.socket._sock.fileno() == -1


@pytest.mark.parametrize("how", ["loop", "poll"])
def test_a_select_set_after_import_is_called_on_every_pass(monkeypatch, how: str) -> None:
    monkeypatch.delenv("NETLOOP_POLLER", raising=False)
    calls: List[Any] = []
    real_select = select.select

    def cooperative_select(r: Any, w: Any, x: Any, timeout: Optional[float] = None) -> Any:
        calls.append(timeout)  # where a green scheduler runs its other tasks
        return real_select(r, w, x, timeout)

    monkeypatch.setattr(select, "select", cooperative_select)
    a, b = socket.socketpair()
    d = asyncore.dispatcher(a)
    d.handle_read = lambda: d.recv(10)  # type: ignore[method-assign]
    try:
        if how == "loop":
            asyncore.loop(timeout=0.01, count=4)
        else:
            for _ in range(4):
                asyncore.poll(0.01)
        assert len(calls) == 4
        b.send(b"x")
        asyncore.loop(timeout=0.5, count=1)
        assert len(calls) == 5
    finally:
        d.close()
        b.close()


# Patched before netloop's import (gevent's or eventlet's patch_all() first, then a library that
# imports netloop): the socket class dispatcher.py captured at import was the patched one, so
# accept()'s fast path ran for its listeners, took the connection (_accept()), failed to build
# the C socket for it (TypeError: not a subtype) and lost it, its descriptor with it.
PATCHED_BEFORE_IMPORT = r"""
import os, socket, sys
sys.path.insert(0, SRC)
sys.path.insert(0, TESTS)
from test_monkeypatched_stdlib_helper import WrappedSocket
real = socket.socket
socket.socket = WrappedSocket
import netloop.asyncore as asyncore
import netloop.dispatcher as d
print("captured", d._PLAIN_SOCKET is real, flush=True)
accepted = []
class Listener(asyncore.dispatcher):
    def handle_accepted(self, sock, addr):
        accepted.append(sock)
srv = Listener()
srv.create_socket()
srv.bind(("127.0.0.1", 0))
srv.listen(5)
asyncore.loop(timeout=0.01, count=1)
before = len(os.listdir("/proc/self/fd"))
client = real()
client.connect(srv.socket.getsockname())
for _ in range(20):
    asyncore.loop(timeout=0.05, count=1)
    if accepted:
        break
print("accepted", len(accepted), type(accepted[0]).__name__ if accepted else None,
      len(os.listdir("/proc/self/fd")) - before, flush=True)
for s in accepted:
    s.close()
client.close()
srv.close()
"""


def test_accept_on_a_listener_of_a_socket_class_set_before_import(tmp_path) -> None:
    import subprocess
    import sys

    tests = os.path.dirname(os.path.abspath(__file__))
    # The patched class, importable without importing netloop first.
    helper = tmp_path / "test_monkeypatched_stdlib_helper.py"
    helper.write_text("import socket\n_REAL_SOCKET = socket.socket\n"
                      + _source_of(WrappedSocket))
    code = (PATCHED_BEFORE_IMPORT.replace("SRC", repr(os.path.join(os.path.dirname(tests), "src")))
            .replace("TESTS", repr(str(tmp_path))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    # 2: the accepted socket and the client
    assert out.stdout.splitlines() == ["captured True", "accepted 1 WrappedSocket 2"], (
        out.stdout, out.stderr)


def _source_of(cls: Any) -> str:
    import inspect
    import textwrap

    return "from typing import Any, Optional\n" + textwrap.dedent(inspect.getsource(cls))
