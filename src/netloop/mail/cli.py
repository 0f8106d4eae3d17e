"""``python -m netloop.smtpd``: smtpd's command line, plus readable output and mail storage.

    python -m netloop.smtpd -n -c DebuggingServer 127.0.0.1:8025

takes smtpd's options and positional ``[localhost:localport [remotehost:remoteport]]`` and
serves until Ctrl-C or SIGTERM, then closes every connection and exits with status 0. Port 0
binds a free port; the address actually bound is printed on stderr once the server listens
("netloop.smtpd: DebuggingServer listening on 127.0.0.1:40123").

Beyond smtpd: ``DebuggingServer`` prints each message readably (envelope, decoded headers and
text; ``--raw`` gives smtpd's listing), ``--maildir DIR`` and ``--mbox FILE`` also store each
message it receives, and ``--size`` defaults to 33554432 bytes as smtpd's help said (smtpd
itself passed no limit at all; ``--size 0`` still means none).
"""

from __future__ import annotations

import getopt
import importlib
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional

__all__ = ["main", "parse", "usage_text", "UsageError"]

_SHORT = "nVhc:s:du"
_LONG = ["class=", "nosetuid", "version", "help", "size=", "debug", "smtputf8",
         "maildir=", "mbox=", "raw"]

_USAGE = """\
Usage: %(program)s [options] [localhost:localport [remotehost:remoteport]]

An SMTP server (RFC 5321, with the SIZE, 8BITMIME and SMTPUTF8 extensions) on netloop.
The local address defaults to localhost:8025 (port 0 picks a free port; the address bound is
printed on stderr), the remote one, where PureProxy relays, to localhost:25.

Options:
  -n, --nosetuid       do not switch to the user "nobody" (needed unless run as root)
  -c, --class NAME     the server class: DebuggingServer, PureProxy (the default) or a
                       dotted name such as mypackage.mymodule.MyServer
  -s, --size LIMIT     refuse messages over LIMIT bytes (SIZE extension; default 33554432,
                       0 for no limit)
  -u, --smtputf8       offer SMTPUTF8 (RFC 6531)
  -d, --debug          write the protocol exchange on stderr
      --raw            DebuggingServer: print smtpd's raw listing instead of a readable one
      --maildir DIR    DebuggingServer: also store each message in the maildir DIR
      --mbox FILE      DebuggingServer: also append each message to the mbox FILE
  -V, --version        print the version and exit
  -h, --help           print this help and exit

Ctrl-C or SIGTERM stops the server cleanly.

Version: %(version)s"""


class UsageError(Exception):
    """A command line to refuse (``code`` 1), or ``-h`` (``code`` 0) / ``-V`` (``version``)."""

    def __init__(self, code: int, msg: Any = "", version: bool = False) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.version = version


def usage_text(program: str, version: str) -> str:
    """The ``--help`` text."""
    return _USAGE % {"program": program, "version": version}


def _split_address(spec: str, what: str) -> Any:
    host, colon, port = spec.rpartition(":")
    if not colon:
        raise UsageError(1, "Bad %s spec: %s" % (what, spec))
    try:
        number = int(port)
    except ValueError:
        raise UsageError(1, "Bad %s port: %s" % (what, spec)) from None
    if not 0 <= number <= 65535:  # bind() would raise OverflowError, a traceback
        raise UsageError(1, "Bad %s port: %s" % (what, spec))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [::1]:25
    return host, number


def parse(argv: List[str], options: Any) -> Any:
    """Fill ``options`` (an ``smtpd.Options``) from ``argv``; raises ``UsageError``."""
    try:
        opts, args = getopt.getopt(argv, _SHORT, _LONG)
    except getopt.error as exc:
        raise UsageError(1, exc) from None
    options.debug = False
    options.raw = False
    options.maildir = None
    options.mbox = None
    options.class_given = False
    for opt, arg in opts:
        if opt in ("-h", "--help"):
            raise UsageError(0)
        if opt in ("-V", "--version"):
            raise UsageError(0, version=True)
        if opt in ("-n", "--nosetuid"):
            options.setuid = False
        elif opt in ("-c", "--class"):
            options.classname = arg
            options.class_given = True
        elif opt in ("-d", "--debug"):
            options.debug = True
        elif opt in ("-u", "--smtputf8"):
            options.enable_SMTPUTF8 = True
        elif opt in ("-s", "--size"):
            try:
                options.size_limit = int(arg)
            except ValueError:
                raise UsageError(1, "Invalid size: " + arg) from None
            if options.size_limit < 0:  # EHLO would offer "SIZE -5" and refuse every message
                raise UsageError(1, "Invalid size: " + arg)
        elif opt == "--raw":
            options.raw = True
        elif opt == "--maildir":
            options.maildir = arg
        elif opt == "--mbox":
            options.mbox = arg
    if len(args) > 2:
        raise UsageError(1, "Invalid arguments: %s" % ", ".join(args))
    local = args[0] if args else "localhost:8025"
    remote = args[1] if len(args) > 1 else "localhost:25"
    options.localhost, options.localport = _split_address(local, "local")
    options.remotehost, options.remoteport = _split_address(remote, "remote")
    return options


def _server_class(facade: Any, name: str) -> Any:
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
                raise  # the module was found; something it imports is missing: its traceback
            raise UsageError(1, "No server class %r: no module named %r"
                             % (name, exc.name)) from None
    else:
        module, attr = facade, name
    found = getattr(module, attr, None)
    if found is None:
        raise UsageError(1, "No server class %r (in %s)" % (attr, module.__name__))
    return found


def main(argv: Optional[List[str]] = None) -> int:
    """Run the server the command line describes; returns the exit status."""
    import signal

    from .. import asyncore, reactor
    from ..services import ignored_signals
    from .. import smtpd as facade
    from .show import MailStore

    program = facade.program if argv is None else "python -m netloop.smtpd"
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        options = parse(args, facade.Options())
        cls = _server_class(facade, options.classname)
        storing = options.maildir is not None or options.mbox is not None
        if (storing or options.raw) and not (isinstance(cls, type) and
                                             issubclass(cls, facade.DebuggingServer)):
            raise UsageError(1, "--raw, --maildir and --mbox need -c DebuggingServer "
                                "(or a subclass of it)")
    except UsageError as exc:
        if exc.version:
            print(facade.__version__)
            return 0
        print(usage_text(program, facade.__version__), file=sys.stderr)
        if exc.msg:
            print(exc.msg, file=sys.stderr)
        return exc.code
    if options.debug:
        facade.DEBUGSTREAM = sys.stderr
    size = facade.DATA_SIZE_DEFAULT if options.size_limit is None else options.size_limit
    try:
        server = cls((options.localhost, options.localport),
                     (options.remotehost, options.remoteport), size,
                     enable_SMTPUTF8=options.enable_SMTPUTF8)
    except (OSError, ValueError) as exc:
        print("netloop.smtpd: cannot serve on %s:%s: %s"
              % (options.localhost, options.localport, exc), file=sys.stderr)
        return 1
    store = None
    chan = getattr(server, "channel_class", None)
    if isinstance(chan, type) and getattr(chan, "write_high_water", 0) is None:
        # smtpd's channel keeps asynchat's unbounded reply queue; on the command line, a client
        # that pipelines commands and never reads would make the server hoard every reply.
        server.channel_class = type(chan.__name__, (chan,), {"write_high_water": 256 * 1024,
                                                             "write_low_water": 64 * 1024})
    try:
        if isinstance(server, facade.DebuggingServer):
            server.human_readable = not options.raw
            if storing:
                try:
                    store = server.store = MailStore(options.maildir, options.mbox)
                except OSError as exc:
                    print("netloop.smtpd: cannot store mail in %s: %s"
                          % (exc.filename or options.maildir or options.mbox,
                             exc.strerror or exc), file=sys.stderr)
                    return 1
        if options.setuid:
            error = _become_nobody()
            if error:
                print(error, file=sys.stderr)
                return 1
        address = server.socket.getsockname()
        host = "[%s]" % address[0] if ":" in address[0] else address[0]
        print("netloop.smtpd: %s listening on %s:%s" % (cls.__name__, host, address[1]),
              file=sys.stderr, flush=True)
        lp = reactor.get_loop(asyncore.socket_map)
        # A signal ignored when the server started stays so (nohup, a background job of a
        # non-interactive shell), as smtpd's command line, which only caught KeyboardInterrupt.
        ignored = ignored_signals(signal.SIGTERM, signal.SIGINT)
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signum not in ignored:
                lp.add_signal_handler(signum, lp.stop)
        try:
            asyncore.loop()
        except KeyboardInterrupt:  # before the handlers were in place
            pass
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                lp.remove_signal_handler(signum)
    finally:
        asyncore.close_all()
        if store is not None:
            store.close()
        sys.stdout.flush()
    return 0


def _become_nobody() -> Optional[str]:
    try:
        import pwd
    except ImportError:
        return 'Cannot import module "pwd"; try running with -n option.'
    try:
        os.setuid(pwd.getpwnam("nobody")[2])
    except (PermissionError, KeyError):
        return 'Cannot setuid "nobody"; try running with -n option.'
    return None
