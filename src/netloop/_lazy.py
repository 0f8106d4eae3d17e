"""Type aliases built on first access, so that ``import netloop`` does not import ``typing``.

The core needs ``typing`` only for type checking. Public type aliases (``ChannelMap``,
``Events``...) are built from ``typing`` on first access through a module ``__getattr__``
(``typing`` costs a server about 1 MiB it never uses).

Modules the core uses at run time (``logging``, ``threading``, ``signal``) are imported up front,
not deferred: an earlier version imported ``logging`` on the first line logged, which was often
"out of descriptors", when the import itself (which opens files) failed too and the server died.
Keeping them costs ``python -m netloop echo`` about 1.3 MiB of RSS (13.2 -> 14.6 MiB on 3.11).

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

__all__ = ["lazy_aliases"]


def _import(name: str) -> ModuleType:
    __import__(name)
    return sys.modules[name]


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
