"""netloop: a fast single-threaded event loop for Python networking.

The successor to asyncore, asynchat and socketserver: the same channel API over select, poll,
epoll and kqueue, with per-pass cost that does not grow with idle connections, timers and
thread-safe wake-up. Legacy code imports ``netloop.asyncore`` (``asynchat``, ``socketserver``)
instead of the removed modules.

``dir(netloop)`` lists the public API, the names in ``__all__``; the modules of the package
(``netloop.asyncore``, ``netloop.chat``, ``netloop.socketserver`` ...) are imported by name.
"""

from .buffered import BufferedDispatcher
from .dispatcher import Dispatcher, known_interest
from .errors import ExitNow
from .pollers import available as available_pollers
from .reactor import Loop, get_loop, loop, socket_map
from .timers import TimerHandle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .files import FileDispatcher, FileWrapper
    from .workers import run_workers
else:
    def __getattr__(name: str) -> object:
        """``FileDispatcher``/``FileWrapper``/``run_workers``: their module is imported on
        first use."""
        if name in ("FileDispatcher", "FileWrapper"):
            from . import files
            value = globals()[name] = getattr(files, name)
            return value
        if name == "run_workers":
            from . import workers
            value = globals()[name] = workers.run_workers
            return value
        raise AttributeError("module %r has no attribute %r" % (__name__, name))

__version__ = "0.1.0"

__all__ = [
    "Loop", "get_loop", "loop", "socket_map", "Dispatcher", "BufferedDispatcher",
    "FileDispatcher", "FileWrapper", "TimerHandle", "ExitNow", "known_interest",
    "available_pollers", "run_workers", "__version__",
]


def __dir__() -> "list[str]":
    """The public API only: not the submodules imported along the way (``reactor``, ``_lazy``
    ...), nor helper names."""
    return sorted(__all__)


del TYPE_CHECKING
