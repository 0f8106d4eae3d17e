"""Pipes and raw descriptors as channels: FileDispatcher on every poller, FileWrapper's dup."""

from __future__ import annotations

import gc
import os
import socket
import tempfile
from typing import Any, List

import pytest

import netloop
import netloop.asyncore
from support import run_until


class PipeReader(netloop.FileDispatcher):
    def __init__(self, fd: Any, map: Any) -> None:
        super().__init__(fd, map=map)
        self.got = bytearray()
        self.closed_seen = False

    def handle_read(self) -> None:
        self.got.extend(self.recv(65536))

    def handle_write(self) -> None:
        pass

    def handle_close(self) -> None:
        self.closed_seen = True
        self.close()


@pytest.fixture
def pipe():
    r, w = os.pipe()
    ends = {"r": r, "w": w}
    yield ends
    for fd in ends.values():
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def test_pipe_reader(loop, pipe):
    reader = PipeReader(pipe["r"], loop.map)
    assert reader.connected
    assert reader._fileno != pipe["r"]  # the dispatcher works on its own duplicate
    os.write(pipe["w"], b"through the pipe")
    run_until(loop, lambda: reader.got == b"through the pipe")
    # The writer closes: the reader sees end of file and closes itself.
    os.close(pipe["w"])
    pipe["w"] = None
    run_until(loop, lambda: reader.closed_seen)
    assert not loop.map
    # The caller's own descriptor is still open (it is the caller's to close).
    os.fstat(pipe["r"])


def test_pipe_writer(loop, pipe):
    class PipeWriter(netloop.FileDispatcher):
        def __init__(self, fd: Any, map: Any, data: bytes) -> None:
            super().__init__(fd, map=map)
            self.data = memoryview(data)

        def handle_write(self) -> None:
            n = self.send(self.data[:65536])
            self.data = self.data[n:]
            if not self.data:
                self.close()

    data = os.urandom(300_000)  # more than a pipe holds: needs several write events
    writer = PipeWriter(pipe["w"], loop.map, data)
    got = bytearray()
    os.set_blocking(pipe["r"], False)

    def drained() -> bool:
        try:
            got.extend(os.read(pipe["r"], 65536))
        except BlockingIOError:
            pass
        return len(got) == len(data)

    run_until(loop, drained, timeout=10)
    assert got == data
    assert writer._fileno is None


def test_file_dispatcher_accepts_file_objects(loop, pipe):
    with os.fdopen(os.dup(pipe["r"]), "rb", buffering=0) as f:
        reader = PipeReader(f, loop.map)
        os.write(pipe["w"], b"x")
        run_until(loop, lambda: reader.got == b"x")
        reader.close()


def test_regular_file_is_always_ready(loop):
    """select and poll call a regular file readable; the epoll poller does the same."""
    with tempfile.TemporaryFile() as f:
        f.write(b"content of a file")
        f.flush()
        f.seek(0)
        reader = PipeReader(f.fileno(), loop.map)
        try:
            run_until(loop, lambda: reader.got == b"content of a file" or reader.closed_seen)
            assert reader.got == b"content of a file"
        finally:
            reader.close()


def test_facade_file_dispatcher(pipe):
    m: dict = {}
    got: List[bytes] = []

    class Reader(netloop.asyncore.file_dispatcher):
        def handle_read(self) -> None:
            got.append(self.recv(100))
            self.close()

    r = Reader(pipe["r"], map=m)
    assert isinstance(r.socket, netloop.asyncore.file_wrapper)
    os.write(pipe["w"], b"old api")
    netloop.asyncore.loop(timeout=1, map=m, count=10)
    assert got == [b"old api"] and not m


# ---------------------------------------------------------------- FileWrapper

def test_wrapper_duplicates(pipe):
    w = netloop.FileWrapper(pipe["w"])
    try:
        assert w.fileno() != pipe["w"]
        assert os.path.sameopenfile(w.fileno(), pipe["w"])
        assert w.write(b"abc") == 3
        assert os.read(pipe["r"], 10) == b"abc"
        # Closing the caller's fd leaves the duplicate working...
        os.close(pipe["w"])
        pipe["w"] = None
        w.send(b"d")
        assert os.read(pipe["r"], 10) == b"d"
    finally:
        w.close()
    # ...and closing the wrapper does not close anything of the caller's.
    os.fstat(pipe["r"])
    assert w.fileno() == -1
    w.close()  # twice is fine


def test_wrapper_read_and_sockopt(pipe):
    w = netloop.FileWrapper(pipe["r"])
    try:
        os.write(pipe["w"], b"xyz")
        assert w.recv(2) == b"xy"
        assert w.read(10) == b"z"
        assert w.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        with pytest.raises(NotImplementedError):
            w.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        with pytest.raises(NotImplementedError):
            w.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR, 4)
    finally:
        w.close()


def test_wrapper_unclosed_warns(pipe):
    w = netloop.FileWrapper(pipe["r"])
    fd = w.fd
    with pytest.warns(ResourceWarning):
        w.__del__()
    assert w.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)
    del w
    gc.collect()
