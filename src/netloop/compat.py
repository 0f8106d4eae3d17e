"""Opt-in aliases: make ``import asyncore`` / ``import asynchat`` find netloop's modules.

Python 3.12 removed both modules. ``install()`` puts netloop's drop-ins in ``sys.modules`` under
the old names so unmodified programs run; it is never done on import of netloop. On Python 3.11
and older it leaves the standard library's modules alone unless ``force=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Dict, Iterable, Optional

__all__ = ["install", "uninstall", "MODULES"]

#: Legacy name -> netloop module that replaces it.
MODULES: Dict[str, str] = {
    "asyncore": "netloop.asyncore",
    "asynchat": "netloop.asynchat",
}

_installed: Dict[str, object] = {}


def install(names: Optional[Iterable[str]] = None, force: bool = False) -> Dict[str, str]:
    """Alias the legacy module names to netloop's; returns {name: module installed}.

    ``names`` defaults to every module in ``MODULES``. A name the running Python still provides
    (3.11 and older) is skipped unless ``force`` is true; an existing ``sys.modules`` entry is
    replaced only with ``force``.
    """
    done: Dict[str, str] = {}
    for name in names if names is not None else MODULES:
        target = MODULES[name]
        if not force:
            if name in sys.modules:
                continue
            if importlib.util.find_spec(name) is not None:
                continue
        try:
            module = importlib.import_module(target)
        except ImportError:
            continue
        if name in sys.modules and name not in _installed:
            _installed[name] = sys.modules[name]
        sys.modules[name] = module
        done[name] = target
    return done


def uninstall() -> None:
    """Undo ``install()``: drop the aliases and restore what they replaced."""
    for name, target in MODULES.items():
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__name__", None) == target:
            previous = _installed.pop(name, None)
            if previous is not None:
                sys.modules[name] = previous  # type: ignore[assignment]
            else:
                del sys.modules[name]
