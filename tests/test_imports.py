"""``import netloop`` stays light, but never defers what a fault path needs.

A server's memory starts with its imports: typing and argparse (with re and gettext) would add
about 2 MiB to a program that imports netloop, so the core does not import them. ``logging``,
``threading`` and ``signal`` are imported up front: logging was once imported on the first line
logged, which was often "out of descriptors", when the import failed too and the server died
(issue 12). These tests run a fresh interpreter and check both, and that the type aliases built
on first access resolve to what they were. (``python -m netloop`` itself parses its arguments
with argparse: a hand-written parser for the echo command saved 0.7-0.8 MiB of RSS and was
dropped as not worth a second parser to keep in step.)
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import typing
from typing import List

import pytest

import netloop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
ENV.pop("NETLOOP_POLLER", None)

#: Modules the core does not import (each was imported by ``import netloop.cli`` once).
LAZY = ["typing", "argparse", "gettext"]
#: Modules the core imports up front because fault paths use them (see the module doc).
EAGER = ["logging", "threading", "signal"]


def fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (netloop from this checkout); its stdout."""
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def added_modules(statements: str) -> List[str]:
    """The lazily imported modules that ``statements`` adds to ``sys.modules``."""
    out = fresh("import sys\n"
                "before = set(sys.modules)\n"
                + statements + "\n"
                "print(sorted(set(sys.modules) - before))\n")
    added = ast.literal_eval(out.strip().splitlines()[-1])
    return [name for name in LAZY if name in added]


@pytest.mark.parametrize("statements", [
    "import netloop",
    "import netloop.cli",
    "import netloop.chat",
    "from netloop import Loop, Dispatcher, BufferedDispatcher, TimerHandle, ExitNow",
])
def test_import_adds_no_heavy_module(statements: str) -> None:
    assert added_modules(statements) == []


@pytest.mark.parametrize("module", ["netloop.asyncore", "netloop.asynchat"])
def test_drop_in_facades_do_not_import_typing(module: str) -> None:
    # Legacy servers import the facades, not the core: they pay for what these import.
    assert "typing" not in added_modules("import " + module)


def test_fault_path_modules_are_imported_up_front() -> None:
    # Nothing the loop may need while out of descriptors is left to import then.
    out = fresh("import sys, netloop\n"
                "print(sorted(m for m in %r if m in sys.modules))\n" % (EAGER,))
    assert ast.literal_eval(out.strip().splitlines()[-1]) == sorted(EAGER)


def test_loop_with_a_channel_adds_no_heavy_module() -> None:
    added = added_modules(
        "import socket, netloop\n"
        "lp = netloop.Loop()\n"
        "a, b = socket.socketpair()\n"
        "class Echo(netloop.BufferedDispatcher):\n"
        "    def handle_read(self):\n"
        "        self.send(self.recv(100))\n"
        "        lp.stop()\n"
        "ch = Echo(a, map=lp.map)\n"
        "b.send(b'ping')\n"
        "lp.run(timeout=5, count=10)\n"
        "assert b.recv(100) == b'ping'\n"
        "ch.close(); b.close(); lp.close()\n")
    assert added == []


def test_logging_without_any_set_up_needs_no_import() -> None:
    out = fresh("import sys, netloop\n"
                "from netloop import dispatcher\n"
                "import logging\n"
                "assert dispatcher.logger is logging.getLogger('netloop')\n"
                "before = set(sys.modules)\n"
                "netloop.Dispatcher(map={}).log_info('hello there', 'error')\n"
                "print(sorted(set(sys.modules) - before))\n")
    assert out.strip().splitlines()[-1] == "[]"


def test_lazy_names_resolve_as_before() -> None:
    from netloop import FileDispatcher, FileWrapper, files, pollers, reactor
    from netloop.chat import framing
    from netloop.pollers import base

    assert (FileDispatcher, FileWrapper) == (files.FileDispatcher, files.FileWrapper)
    assert netloop.FileDispatcher is files.FileDispatcher
    assert pollers.Events is base.Events
    assert base.Events == typing.List[typing.Tuple[int, int]]
    assert reactor.ChannelMap == typing.MutableMapping[int, typing.Any]
    assert framing.Terminator == typing.Union[bytes, int, None]
    assert framing.Event == typing.Tuple[bytes, int]
    for module in (netloop, pollers, reactor, framing):
        for name in module.__all__:
            assert getattr(module, name) is not None
    with pytest.raises(AttributeError):
        netloop.NoSuchThing  # noqa: B018
    with pytest.raises(AttributeError):
        reactor.NoSuchThing  # noqa: B018


def test_star_import_gives_every_public_name() -> None:
    out = fresh("from netloop import *\n"
                "from netloop.pollers import *\n"
                "from netloop.reactor import *\n"
                "print(FileDispatcher.__name__, Events, ChannelMap)\n")
    assert out.startswith("FileDispatcher ")
