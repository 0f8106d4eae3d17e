"""Drop-in proofs: netloop.asyncore against Python 3.11's asyncore, names and test suite."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import warnings
from typing import Any, Dict, List, Optional

import pytest

import netloop
import netloop.asyncore
from netloop import pollers

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
SUITE = os.path.join(HERE, "cpython_suite.py")
PYENV = os.path.expanduser("~/.pyenv/versions")


def _python(version: str) -> Optional[str]:
    """The newest pyenv interpreter for ``version`` ("3.11"), or None."""
    if not os.path.isdir(PYENV):
        return None
    found = sorted((v for v in os.listdir(PYENV) if v.startswith(version + ".")),
                   key=lambda v: [int(p) for p in v.split(".") if p.isdigit()])
    for v in reversed(found):
        exe = os.path.join(PYENV, v, "bin", "python")
        if os.path.exists(exe):
            return exe
    return None


PY311 = _python("3.11")
PY313 = _python("3.13")


def _asyncore311_path() -> Optional[str]:
    if PY311 is None:
        return None
    path = os.path.join(os.path.dirname(os.path.dirname(PY311)), "lib", "python3.11",
                        "asyncore.py")
    return path if os.path.exists(path) else None


def _load_asyncore311() -> Any:
    path = _asyncore311_path()
    if path is None:
        pytest.skip("no Python 3.11 install with asyncore.py")
    spec = importlib.util.spec_from_file_location("asyncore311_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # The file calls warnings._deprecated(..., remove=(3, 12)): missing before 3.11, an error
    # from 3.12 on. Only its names are wanted here, so silence that call under any Python.
    saved = getattr(warnings, "_deprecated", None)
    warnings._deprecated = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del warnings._deprecated  # type: ignore[attr-defined]
        else:
            warnings._deprecated = saved  # type: ignore[attr-defined]
    return module


def test_every_public_name():
    ref = _load_asyncore311()
    names = [n for n in dir(ref) if not n.startswith("_")]
    names += ["_exception", "_strerror", "_DISCONNECTED"]
    missing = [n for n in names if not hasattr(netloop.asyncore, n)]
    assert missing == []
    for cls in ("dispatcher", "dispatcher_with_send", "file_wrapper", "file_dispatcher"):
        ref_cls, our_cls = getattr(ref, cls), getattr(netloop.asyncore, cls)
        missing = [n for n in dir(ref_cls) if not hasattr(our_cls, n)]
        if cls == "file_wrapper":
            assert missing == [], cls
            continue
        # asyncore's class defaults that every connection stores: instance attributes only
        # (see the facade's dispatcher), set by __init__ whatever the arguments
        assert sorted(missing) == ["accepting", "addr", "connected"], cls
        a, b = socket.socketpair()
        try:
            made = [(c(a.fileno(), map={}) if cls == "file_dispatcher" else c(map={}))
                    for c in (ref_cls, our_cls)]
            try:
                assert ([getattr(made[0], n) for n in missing]
                        == [getattr(made[1], n) for n in missing]), cls
            finally:
                for m in made:
                    m.close()
        finally:
            a.close()
            b.close()
    assert netloop.asyncore._DISCONNECTED == ref._DISCONNECTED
    assert netloop.asyncore.ExitNow is netloop.ExitNow
    assert netloop.asyncore.socket_map is netloop.socket_map
    assert issubclass(netloop.asyncore.dispatcher_with_send, netloop.asyncore.dispatcher)


def test_import_does_not_warn():
    code = ("import warnings; warnings.simplefilter('error'); import sys; "
            "sys.path.insert(0, %r); import netloop.asyncore; print('ok')" % SRC)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


def _run_suite(python: str, poller: Optional[str] = None, stdlib: bool = False) -> Dict[str, Any]:
    env = dict(os.environ)
    env.pop(pollers.ENV_VAR, None)
    if poller is not None:
        env[pollers.ENV_VAR] = poller
    if PY311 is not None:
        env.setdefault("NETLOOP_CPYTHON311_LIB", os.path.join(
            os.path.dirname(os.path.dirname(PY311)), "lib", "python3.11"))
    args = [python, SUITE, "test_asyncore", "--json"] + (["--stdlib"] if stdlib else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env,
                          cwd=HERE)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    report = json.loads(lines[-1])
    if "skipped" in report and "run" not in report:
        pytest.skip(report["skipped"])
    report["returncode"] = proc.returncode
    return report


_stdlib_cache: List[Dict[str, Any]] = []


def _stdlib_report() -> Dict[str, Any]:
    if not _stdlib_cache:
        _stdlib_cache.append(_run_suite(PY311, stdlib=True))  # type: ignore[arg-type]
    return _stdlib_cache[0]


def _check(report: Dict[str, Any], compare: bool = True) -> None:
    details = "\n\n".join(report.get("details", []))[:6000]
    assert report["failures"] == 0 and report["errors"] == 0, details
    assert report["returncode"] == 0
    assert report["run"] > 90  # the whole module ran, not an import failure
    if compare:
        stdlib = _stdlib_report()
        assert stdlib["failures"] == 0 and stdlib["errors"] == 0
        assert report["outcomes"] == stdlib["outcomes"]


needs_suite = pytest.mark.skipif(
    sys.version_info < (3, 10) or PY311 is None,
    reason="CPython 3.11's test_asyncore needs test.support.os_helper (3.10+) and a 3.11 install")


@needs_suite
@pytest.mark.parametrize("poller", pollers.available())
def test_cpython_suite(poller):
    report = _run_suite(sys.executable, poller)
    assert report["poller"] == poller
    assert report["implementation"] == "netloop"
    _check(report)


@pytest.mark.skipif(PY313 is None or PY311 is None, reason="no Python 3.13 or 3.11 install")
def test_cpython_suite_on_313():
    if sys.version_info[:2] == (3, 13):
        pytest.skip("the current interpreter is 3.13: test_cpython_suite covers it")
    report = _run_suite(PY313)  # type: ignore[arg-type]
    assert report["python"].startswith("3.13")
    _check(report)


COMPAT_CHILD = r"""
import sys
sys.path.insert(0, SRC)
try:
    import asyncore
    before = asyncore.__name__
except ImportError:
    before = None
import netloop.compat
done = netloop.compat.install()
import asyncore
print(repr((before, sorted(done), asyncore.__name__, hasattr(asyncore, "dispatcher"))))
netloop.compat.uninstall()
print("asyncore" in sys.modules)
"""


@pytest.mark.skipif(PY313 is None, reason="no Python 3.13 install")
def test_compat_install_on_313():
    code = COMPAT_CHILD.replace("SRC", repr(SRC))
    proc = subprocess.run([PY313, "-I", "-c", code], capture_output=True, text=True,  # type: ignore[list-item]
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    before, done, name, has_dispatcher = eval(first)
    assert before is None  # nothing aliased without the call
    assert "asyncore" in done and name == "netloop.asyncore" and has_dispatcher
    assert second == "False"


def test_compat_install_leaves_stdlib_alone_without_force():
    if sys.version_info >= (3, 12):
        pytest.skip("this interpreter has no asyncore of its own")
    code = COMPAT_CHILD.replace("SRC", repr(SRC))
    proc = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    before, done, name, _ = eval(proc.stdout.strip().splitlines()[0])
    assert before == "asyncore" and "asyncore" not in done and name == "asyncore"


def test_facade_poll_functions():
    """asyncore.poll/poll2/readwrite keep their one-shot semantics on a private map."""
    import socket
    a, b = socket.socketpair()
    m: dict = {}
    events: List[str] = []

    class D(netloop.asyncore.dispatcher):
        def handle_read(self) -> None:
            events.append("read")
            self.recv(10)

        def handle_write(self) -> None:
            pass

        def handle_close(self) -> None:
            events.append("close")
            self.close()

    try:
        d = D(a, map=m)
        b.send(b"x")
        netloop.asyncore.poll(timeout=1, map=m)
        assert events == ["read"]
        b.send(b"y")
        netloop.asyncore.poll2(timeout=1, map=m)
        assert events == ["read", "read"]
        import select
        netloop.asyncore.readwrite(d, select.POLLHUP)
        assert events == ["read", "read", "close"]
        assert not m
    finally:
        a.close()
        b.close()
