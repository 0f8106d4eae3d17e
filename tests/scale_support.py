"""Helpers for tests that run ``python -m netloop echo`` (workers, activation, PROXY) as a real
process: read its output as it comes, find its worker processes, echo through it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, List, Optional, Sequence, Set, Tuple

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"), PYTHONUNBUFFERED="1")
ENV.pop("LISTEN_FDS", None)
ENV.pop("LISTEN_PID", None)
ENV.pop("LISTEN_FDNAMES", None)


def need_tool(name: str, *candidates: str) -> str:
    """The path of an external tool; fails the test under CI when missing, skips otherwise."""
    path = shutil.which(name) or next((c for c in candidates if os.path.exists(c)), None)
    if path is None:
        message = ("%s is not installed (Debian: apt-get install %s); .ci/run installs it"
                   % (name, "haproxy" if name == "haproxy" else "systemd"))
        if os.environ.get("CI"):
            pytest.fail("CI is set and " + message, pytrace=False)
        pytest.skip(message)
    return path


def wait(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition()`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.01)


class Proc:
    """A process whose merged stdout/stderr is collected line by line by a reader thread."""

    def __init__(self, argv: Sequence[str], env: Optional[dict] = None, **kw: Any) -> None:
        self.argv = list(argv)
        self.popen = subprocess.Popen(self.argv, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=env or ENV, text=True, bufsize=1, **kw)
        self.lines: List[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def find(self, pattern: str) -> List[Any]:
        with self._lock:
            lines = list(self.lines)
        return [m for m in (re.search(pattern, line) for line in lines) if m]

    def wait_line(self, pattern: str, timeout: float = 10.0, count: int = 1) -> Any:
        def found() -> Any:
            matches = self.find(pattern)
            if len(matches) >= count:
                return matches[count - 1]
            if self.popen.poll() is not None and not self._reader.is_alive():
                raise AssertionError("process exited (%s) before printing %r; output:\n%s"
                                     % (self.popen.returncode, pattern, self.output()))
            return None
        try:
            return wait(found, timeout, repr(pattern))
        except AssertionError as err:
            raise AssertionError("%s\noutput so far:\n%s" % (err, self.output())) from None

    def address(self, timeout: float = 10.0) -> Tuple[str, int]:
        m = self.wait_line(r" on (\S+):(\d+)$", timeout)
        return m.group(1), int(m.group(2))

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def children(self) -> Set[int]:
        return children_of(self.pid)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, SIGKILL if needed; then make sure its workers are gone too."""
        kids = self.children()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for pid in kids:
            _kill_quietly(pid)
        self._reader.join(10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def children_of(pid: int) -> Set[int]:
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return {int(x) for x in f.read().split()}
    except OSError:
        return set()


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, or a process that is gone, does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def echo_once(address: Tuple[str, int], payload: bytes = b"ping", source: str = "",
              timeout: float = 5.0) -> Tuple[bytes, Tuple[str, int]]:
    """Connect (from ``source`` if given), send ``payload``, read its echo; (echo, our address)."""
    with socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET) as s:
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect(address)
        me = s.getsockname()[:2]
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got, me


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def netloop_argv(*args: str) -> List[str]:
    return [sys.executable, "-m", "netloop", *args]
