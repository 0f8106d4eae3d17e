"""What a newcomer reads first: the README's first Loop example, the public namespace, the
docstrings of the dispatcher classes, and the examples' usage messages."""

from __future__ import annotations

import inspect
import os
import re
import socket
import subprocess
import sys

import pytest

import netloop
from netloop.chat import ChatChannel
from netloop.files import FileDispatcher, FileWrapper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))


def readme_block(heading: str) -> str:
    """The first ```python block after ``heading`` in README.md."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    start = text.index("\n" + heading + "\n")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None
    return match.group(1)


@pytest.mark.timeout(60)
def test_readme_first_loop_example_says_where_it_listens_and_echoes() -> None:
    code = readme_block("## New code: a Loop")
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10) as c:
            c.sendall(b"hello, loop")
            got = b""
            while len(got) < 11:
                chunk = c.recv(100)
                assert chunk
                got += chunk
        assert got == b"hello, loop"
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_top_level_namespace_is_the_public_api() -> None:
    names = [n for n in dir(netloop) if not (n.startswith("__") and n.endswith("__"))]
    assert sorted(names) == sorted(n for n in netloop.__all__ if not n.startswith("__"))
    assert "TYPE_CHECKING" not in vars(netloop)
    for name in netloop.__all__:
        assert not name.startswith("_") or name == "__version__", name
        value = getattr(netloop, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert (value.__doc__ or "").strip(), name
            assert value.__module__.startswith("netloop."), name
    # Submodules and the names from before stay reachable.
    from netloop import asyncore, reactor  # noqa: F401
    assert netloop.reactor.Loop is netloop.Loop
    assert netloop.loop is reactor.loop and netloop.socket_map is reactor.socket_map


def test_star_import_brings_only_the_public_api() -> None:
    space: dict = {}
    exec("from netloop import *", space)
    assert sorted(n for n in space if n != "__builtins__") == sorted(netloop.__all__)


@pytest.mark.parametrize("cls", [netloop.Dispatcher, netloop.BufferedDispatcher,
                                 FileDispatcher, FileWrapper, ChatChannel])
def test_every_public_method_has_a_docstring(cls: type) -> None:
    missing = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith("netloop"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if callable(func) and not (func.__doc__ or "").strip():
                missing.append("%s.%s" % (klass.__name__, name))
    assert not missing, missing
    assert (cls.__doc__ or "").strip()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args", [[], ["ftp://example.invalid/"], ["a", "b"]])
def test_http_client_example_without_a_url_prints_its_usage(args: list) -> None:
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples",
                                                          "asyncore_http_client.py"), *args],
                            env=ENV, capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: ") and "http://" in result.stderr
