"""Deferred imports, so that ``import netloop`` stays light.

The core modules name ``logging``, ``threading``, ``signal`` and the like only off the hot path
(error reports, signal handlers, the first ``run()``), and need ``typing`` only for type
checking. Importing them up front would cost a server about 2 MiB of memory for nothing, so
they are bound to stand-ins that import the real object on first use and then put it in their
own place (the module global they were bound to), after which the name costs nothing extra.
Public type aliases (``ChannelMap``, ``Events``...) are built from ``typing`` on first access
through a module ``__getattr__``.

Each core module writes ``TYPE_CHECKING = False`` and imports ``typing`` names under
``if TYPE_CHECKING:`` (type checkers treat that name as true); annotations are never evaluated
(``from __future__ import annotations``).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Callable, Dict

__all__ = ["Lazy", "lazy_module", "lazy_logger", "lazy_aliases"]


class Lazy:
    """Stands for an object not made yet: the first attribute access makes it with ``load()``,
    rebinds ``namespace[alias]`` to it (if still bound to this stand-in) and answers from it."""

    __slots__ = ("_nl_load", "_nl_namespace", "_nl_alias")

    def __init__(self, load: Callable[[], Any], namespace: Dict[str, Any], alias: str) -> None:
        self._nl_load = load
        self._nl_namespace = namespace
        self._nl_alias = alias

    def _nl_resolve(self) -> Any:
        obj = self._nl_load()
        if self._nl_namespace.get(self._nl_alias) is self:
            self._nl_namespace[self._nl_alias] = obj
        return obj

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_nl_"):  # a slot not set yet: never recurse
            raise AttributeError(attr)
        return getattr(self._nl_resolve(), attr)

    def __repr__(self) -> str:
        return "<lazy %s>" % self._nl_alias


def _import(name: str) -> ModuleType:
    __import__(name)
    return sys.modules[name]


def lazy_module(namespace: Dict[str, Any], name: str) -> Any:
    """A stand-in for ``import name`` in the module whose globals are ``namespace``."""
    return Lazy(lambda: _import(name), namespace, name)


def lazy_logger(namespace: Dict[str, Any], name: str, alias: str = "logger") -> Any:
    """A stand-in for ``alias = logging.getLogger(name)``."""
    return Lazy(lambda: _import("logging").getLogger(name), namespace, alias)


def lazy_aliases(namespace: Dict[str, Any],
                 **builders: Callable[[ModuleType], Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that builds each named attribute on first access, from the
    ``typing`` module given to its builder, and stores it in the module."""

    def __getattr__(name: str) -> Any:
        build = builders.get(name)
        if build is None:
            raise AttributeError("module %r has no attribute %r" % (namespace["__name__"], name))
        value = namespace[name] = build(_import("typing"))
        return value

    return __getattr__
