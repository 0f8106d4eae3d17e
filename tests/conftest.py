"""Shared fixtures: a leak check after every test, and helpers to drive a loop to a condition.

The leak check fails a test that leaves behind open file descriptors, threads, child processes,
entries in the global ``socket_map``, or loops holding kernel objects.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from typing import Iterator

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
if os.path.isdir(SRC) and SRC not in sys.path:  # running from a checkout without install
    sys.path.insert(0, SRC)

import netloop  # noqa: E402
from netloop import pollers, reactor  # noqa: E402

ALL_POLLERS = pollers.available()


def _open_fds() -> set:
    try:
        return set(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - not Linux
        return set()


def _children() -> set:
    try:
        with open("/proc/self/task/%d/children" % os.getpid()) as f:
            return set(f.read().split())
    except OSError:  # pragma: no cover
        return set()


@pytest.fixture(autouse=True)
def leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("no_leak_check"):
        yield
        return
    gc.collect()
    fds = _open_fds()
    threads = set(threading.enumerate())
    children = _children()
    active = set(reactor._active)
    yield
    # Give threads a bounded chance to finish (they were told to stop by the test).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        if not extra_threads:
            break
        time.sleep(0.01)
    gc.collect()
    problems = []
    if netloop.socket_map:
        problems.append("channels left in the global socket_map: %r" % netloop.socket_map)
        for obj in list(netloop.socket_map.values()):
            try:
                obj.close()
            except Exception:
                pass
        netloop.socket_map.clear()
    new_loops = [lp for lp in reactor._active if lp not in active]
    if new_loops:
        problems.append("loops left holding kernel objects: %r" % new_loops)
        for lp in new_loops:
            lp.close()
    extra_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
    if extra_threads:
        problems.append("threads left running: %r" % extra_threads)
    leaked = _open_fds() - fds
    # Re-check: an fd listed in the first snapshot may have been the listdir fd itself.
    leaked = {fd for fd in leaked if os.path.exists("/proc/self/fd/" + fd)}
    if leaked:
        targets = []
        for fd in sorted(leaked):
            try:
                targets.append("%s->%s" % (fd, os.readlink("/proc/self/fd/" + fd)))
            except OSError:
                pass
        if targets:
            problems.append("file descriptors leaked: %s" % ", ".join(targets))
    new_children = _children() - children
    if new_children:
        problems.append("child processes left: %s" % ", ".join(sorted(new_children)))
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(params=ALL_POLLERS)
def poller_name(request: pytest.FixtureRequest) -> str:
    """Every poller this platform has (kqueue where the platform has it)."""
    return request.param  # type: ignore[no-any-return]


# The `loop` fixture of these modules also runs hosted by asyncio (netloop.aio), on asyncio's
# default loop and on uvloop where it is installed: the same tests, a second driver.
HOSTED_MODULES = {"test_dispatcher", "test_buffered", "test_chat_channel", "test_services",
                  "test_files", "test_smoke_core"}
try:
    import uvloop
    HOSTS = ["asyncio", "uvloop"]
    # libuv opens a process-wide pipe pair with the first loop: take it now, not in a test.
    uvloop.new_event_loop().close()
except ImportError:
    HOSTS = ["asyncio"]


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    import inspect
    if (metafunc.module.__name__.rpartition(".")[2] in HOSTED_MODULES
            and "loop" in metafunc.fixturenames
            and "poller_name" not in inspect.signature(metafunc.function).parameters):
        metafunc.parametrize("poller_name", ALL_POLLERS + HOSTS)


def _hosted_loop(host: str) -> Iterator[netloop.Loop]:
    import asyncio

    import netloop.aio
    if host == "uvloop":
        import uvloop
        ev = uvloop.new_event_loop()
    else:
        ev = asyncio.new_event_loop()
    lp = netloop.Loop()
    handle = netloop.aio.attach(lp, event_loop=ev)
    try:
        yield lp
        for obj in list(lp.map.values()):
            try:
                obj.close()
            except Exception:
                pass
        lp.map.clear()
        ev.stop()
        ev.run_forever()  # one iteration: let callbacks scheduled by the closes run
        poller = handle.poller
        handle.detach()
        assert not poller._masks, "registrations left in asyncio: %r" % poller._masks
        assert poller._timer is None and poller._kick_handle is None
        selector = getattr(ev, "_selector", None)
        if selector is not None:  # asyncio's own loop: only its self-pipe may be left
            assert len(selector.get_map()) == 1, selector.get_map()
        assert not asyncio.all_tasks(ev)
    finally:
        handle.detach()
        lp.close()
        ev.close()


@pytest.fixture
def loop(poller_name: str) -> Iterator[netloop.Loop]:
    """A private loop on each poller, closed after the test (its channels too). In the
    modules of HOSTED_MODULES also attached to an asyncio loop ("asyncio", "uvloop")."""
    if poller_name in ("asyncio", "uvloop"):
        yield from _hosted_loop(poller_name)
        return
    lp = netloop.Loop(poller=poller_name)
    yield lp
    for obj in list(lp.map.values()):
        try:
            obj.close()
        except Exception:
            pass
    lp.map.clear()
    lp.close()
