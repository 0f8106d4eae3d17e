"""``netloop.smtpd`` as a drop-in: CPython 3.11's own test suites, the module's names, and the
protocol driven with no socket at all.

The suites run in a subprocess (``cpython_suite.py``) with ``sys.modules['smtpd']`` set to
netloop's module, under this interpreter and under Python 3.13 when it is installed, and must end
exactly as the reference does: the standard library's ``smtpd`` on 3.11, 3.11's ``smtpd.py``
(on netloop's asyncore/asynchat, the only ones there) on 3.12+.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from typing import Any, List, Optional

import pytest

import netloop.smtpd as nl_smtpd
from netloop.chat.framing import FOUND, Framer
from netloop.mail.protocol import SMTPProtocol, parse_params, parse_path, unstuff

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "cpython_suite.py")
SRC = os.path.join(os.path.dirname(HERE), "src")
PY313 = "/root/.pyenv/versions/3.13.0/bin/python"

def _pythons() -> List[str]:
    found = [sys.executable]
    if os.path.exists(PY313) and sys.version_info[:2] != (3, 13):
        found.append(PY313)
    return found


def _version(python: str) -> tuple:
    if python == sys.executable:
        return sys.version_info[:2]
    out = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout
    return tuple(int(x) for x in out.strip("()\n ").split(","))


def _suite(python: str, name: str, *extra: str) -> Any:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([python, RUNNER, name, "--json", *extra], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, "no report from the runner:\n%s\n%s" % (proc.stdout[-2000:],
                                                          proc.stderr[-2000:])
    report = json.loads(lines[-1])
    if "skipped" in report and "outcomes" not in report:
        pytest.skip(report["skipped"])
    return report


def _same_outcomes(ours: Any, theirs: Any) -> None:
    assert ours["run"] == theirs["run"] > 0
    differ = {test: (ours["outcomes"].get(test), outcome)
              for test, outcome in theirs["outcomes"].items()
              if ours["outcomes"].get(test) != outcome}
    assert not differ, (differ, "\n".join(ours.get("details", []))[:4000])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("python", _pythons())
def test_cpython_test_smtpd_ends_as_the_reference(python: str) -> None:
    if _version(python) < (3, 11):
        pytest.skip("test.support of Python < 3.11 lacks what 3.11's test_smtpd imports")
    ours = _suite(python, "test_smtpd", "--smtpd")
    assert ours["smtpd"].endswith(os.path.join("netloop", "smtpd.py"))
    reference = "--stdlib" if _version(python) == (3, 11) else "--smtpd311"
    theirs = _suite(python, "test_smtpd", reference)
    assert not theirs["smtpd"].startswith(SRC)
    _same_outcomes(ours, theirs)
    assert ours["failures"] == ours["errors"] == 0
    print("%s: test_smtpd %d run, all as the reference" % (python, ours["run"]))


@pytest.mark.timeout(300)
@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="3.11's test_smtplib needs 3.11's smtplib")
def test_cpython_test_smtplib_on_netloop_smtpd() -> None:
    # test_smtplib's servers are smtpd subclasses (SimSMTPChannel adds AUTH through
    # found_terminator and received_lines): a test of what subclasses rely on.
    ours = _suite(sys.executable, "test_smtplib", "--smtpd")
    theirs = _suite(sys.executable, "test_smtplib", "--stdlib")
    _same_outcomes(ours, theirs)


def _reference_smtpd() -> Any:
    if sys.version_info[:2] != (3, 11):
        return None  # 3.9/3.10 have MailmanProxy (gone in 3.11); 3.12+ have no smtpd
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import smtpd  # type: ignore[import-not-found]
        if not smtpd.__name__.startswith("netloop"):
            return smtpd
    except ImportError:
        pass
    return None


def test_public_names_are_those_of_311() -> None:
    ref = _reference_smtpd()
    if ref is None:
        pytest.skip("no standard-library smtpd of 3.11 on this Python")
    theirs = {n for n in dir(ref) if not n.startswith("_")}
    ours = {n for n in dir(nl_smtpd) if not n.startswith("_")}
    assert theirs - ours == set()
    assert ours - theirs == {"main"}
    assert nl_smtpd.__all__ == ref.__all__
    for name in ("DEBUGSTREAM", "NEWLINE", "COMMASPACE", "DATA_SIZE_DEFAULT", "__version__"):
        assert type(getattr(nl_smtpd, name)).__name__ == type(getattr(ref, name)).__name__
    for name in ("NEWLINE", "COMMASPACE", "DATA_SIZE_DEFAULT", "__version__"):
        assert getattr(nl_smtpd, name) == getattr(ref, name)
    import inspect
    def shape(obj: Any) -> Any:
        return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]

    for cls in ("SMTPChannel", "SMTPServer", "DebuggingServer"):
        assert shape(getattr(nl_smtpd, cls)) == shape(getattr(ref, cls))
    assert shape(nl_smtpd.SMTPServer.process_message) == shape(ref.SMTPServer.process_message)
    assert issubclass(nl_smtpd.DebuggingServer, nl_smtpd.SMTPServer)
    assert issubclass(nl_smtpd.PureProxy, nl_smtpd.SMTPServer)
    import netloop.asynchat
    import netloop.asyncore
    assert issubclass(nl_smtpd.SMTPChannel, netloop.asynchat.async_chat)
    assert issubclass(nl_smtpd.SMTPServer, netloop.asyncore.dispatcher)


def test_compat_install_aliases_smtpd() -> None:
    import netloop.compat
    saved = sys.modules.pop("smtpd", None)
    try:
        done = netloop.compat.install(["smtpd"], force=True)
        assert done == {"smtpd": "netloop.smtpd"}
        import smtpd  # type: ignore[import-not-found]
        assert smtpd is nl_smtpd
    finally:
        netloop.compat.uninstall()
        if saved is not None:
            sys.modules["smtpd"] = saved
    assert sys.modules.get("smtpd") is saved


# ---------------------------------------------------------------------- no sockets
class _Server:
    def __init__(self) -> None:
        self.messages: List[Any] = []

    def process_message(self, peer: Any, mailfrom: str, rcpttos: List[str], data: Any,
                        **kwargs: Any) -> Optional[str]:
        self.messages.append((mailfrom, list(rcpttos), data, kwargs))
        return None


class _ChatDouble:
    """What SMTPProtocol needs from a chat channel, over the pure Framer."""

    def __init__(self) -> None:
        self.sent: List[bytes] = []
        self.closing = False
        self.terminator: Any = None
        self.framer = Framer()

    def push(self, data: bytes) -> None:
        self.sent.append(data)

    def set_terminator(self, term: Any) -> None:
        self.terminator = term

    def close_when_done(self) -> None:
        self.closing = True

    def feed(self, data: bytes) -> None:
        self.framer.feed(data)
        while True:
            event = self.framer.step(self.terminator)
            if event is None:
                return
            piece, kind = event
            if piece:
                self.collect_incoming_data(piece)  # type: ignore[attr-defined]
            if kind == FOUND:
                self.found_terminator()  # type: ignore[attr-defined]


class Session(SMTPProtocol, _ChatDouble):
    def __init__(self, **options: Any) -> None:
        _ChatDouble.__init__(self)
        self.server = _Server()
        self._nl_setup(self.server, None, ("peer", 1), options.pop("data_size_limit", 1000),
                       options.pop("enable_SMTPUTF8", False), options.pop("decode_data", False))
        self.fqdn = "host.example"
        self.peer = ("peer", 1)

    def _nl_unread(self, data: bytes) -> bool:
        pending = self.framer.pending
        self.framer.clear()
        self.framer.feed(data + pending)
        return True

    def replies(self) -> List[str]:
        return b"".join(self.sent).decode("utf-8").split("\r\n")[:-1]


DIALOG = (b"EHLO client\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\n"
          b"RCPT TO:<b@example.org>\r\nDATA\r\nline 1\r\n..dotted\r\n\xc3\xa9\r\n.\r\n"
          b"NOOP\r\nQUIT\r\n")


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(DIALOG)])
def test_protocol_same_replies_however_the_input_is_split(size: int) -> None:
    session = Session()
    for start in range(0, len(DIALOG), size):
        session.feed(DIALOG[start:start + size])
    assert session.replies() == [
        "250-host.example", "250-SIZE 1000", "250-8BITMIME", "250 HELP", "250 OK", "250 OK",
        "354 End data with <CR><LF>.<CR><LF>", "250 OK", "250 OK", "221 Bye"]
    assert session.server.messages == [
        ("a@example.org", ["b@example.org"], b"line 1\n.dotted\n\xc3\xa9",
         {"mail_options": ["BODY=8BITMIME"], "rcpt_options": []})]
    assert session.closing


@pytest.mark.parametrize("size", [1, 2, 100])
def test_protocol_message_with_no_lines(size: int) -> None:
    # RFC 5321 4.1.1.4: "." right after DATA ends an empty message (smtpd waited for ever).
    session = Session()
    dialog = (b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\n"
              b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\r\n.\r\n"
              b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\r\nx\r\n.\r\nNOOP\r\n")
    for start in range(0, len(dialog), size):
        session.feed(dialog[start:start + size])
    assert [m[2] for m in session.server.messages] == [b"", b"", b"\nx"]
    assert session.replies()[-2:] == ["250 OK", "250 OK"]


def test_protocol_decode_data_survives_a_character_split_between_reads() -> None:
    session = Session(decode_data=True)
    session.feed(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    text = "z\u017c\u017a\u0107 \u00e9".encode("utf-8")
    for i in range(len(text)):  # one byte per read: every character is split
        session.feed(text[i:i + 1])
    session.feed(b"\r\n.\r\n")
    assert session.server.messages[0][2] == "z\u017c\u017a\u0107 \u00e9"
    assert session.replies()[-1] == "250 OK"


def test_protocol_line_too_long_is_answered_before_its_end_and_once() -> None:
    session = Session()
    session.feed(b"HELO c\r\nMAIL FROM:<")
    for _ in range(100):  # 100 KB of a line that has not ended: answered, memory bounded
        session.feed(b"a" * 1024)
    assert session.replies()[-1] == "500 Error: line too long"
    assert sum(len(x) for x in session.received_lines) <= 1024 + 512
    session.feed(b"@example>\r\nNOOP\r\n")
    assert session.replies()[-2:] == ["500 Error: line too long", "250 OK"]


def test_protocol_too_much_data_ends_the_transaction_and_the_session_goes_on() -> None:
    session = Session(data_size_limit=100)
    session.feed(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    for _ in range(1000):
        session.feed(b"x" * 999 + b"\r\n")
        assert sum(len(x) for x in session.received_lines) <= 100 + 1001
    session.feed(b".\r\n")
    assert session.replies()[-1] == "552 Error: Too much mail data"
    assert session.server.messages == []
    # smtpd stayed in the data state here, so these commands would have been message text.
    session.feed(b"RSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nsmall\r\n.\r\n")
    assert session.replies()[-5:] == ["250 OK", "250 OK", "250 OK",
                                      "354 End data with <CR><LF>.<CR><LF>", "250 OK"]
    assert session.server.messages[0][2] == b"small"


def test_protocol_bad_utf8_command_is_refused_not_fatal() -> None:
    session = Session()
    session.feed(b"HELO \xff\xfe\r\nNOOP\r\n")
    assert session.replies() == ["500 Error: bad syntax", "250 OK"]


def test_protocol_command_limits_are_per_channel() -> None:
    first, second = Session(), Session()
    first.feed(b"EHLO a\r\n")
    assert first.command_size_limits["MAIL"] == 512 + 26
    assert second.command_size_limits["MAIL"] == 512  # smtpd: 538, shared with the first
    second.feed(b"EHLO b\r\n")
    assert first.command_size_limits["MAIL"] == second.command_size_limits["MAIL"] == 538


def test_parsers() -> None:
    address, rest = parse_path("<a@example.org> SIZE=10")
    assert (address, rest.strip()) == ("a@example.org", "SIZE=10")
    assert parse_path("<>") == ("<>", "")
    assert parse_path("") == ("", "")
    assert parse_params(["SIZE=10", "SMTPUTF8"]) == {"SIZE": "10", "SMTPUTF8": True}
    assert parse_params(["SIZE="]) is None
    assert parse_params(["A-B=1"]) is None
    assert unstuff(b"a\r\n..b\r\n.c", b"\r\n", b"\n", b".") == b"a\n.b\nc"
    assert unstuff(b"a\r\nb", b"\r\n", b"\n", b".") == b"a\nb"
    assert unstuff(".x", "\r\n", "\n", ".") == "x"


def test_push_goes_through_async_chat_push_with_the_channel() -> None:
    """As smtpd: SMTPChannel.push() calls asynchat.async_chat.push(self, data), so a test that
    patches that method on the class sees (channel, data) (salmon-mail's test_SMTPChannel)."""
    from unittest import mock

    import netloop.asynchat as nl_asynchat

    class Server:  # what SMTPChannel reads of its server
        pass

    a, b = socket.socketpair()
    try:
        with mock.patch.object(nl_asynchat.async_chat, "push") as pushed:
            channel = nl_smtpd.SMTPChannel(Server(), a, ("127.0.0.1", 1), map={})
            args = pushed.call_args[0]
        assert len(args) == 2 and args[0] is channel
        assert args[1].startswith(b"220 ") and args[1].endswith(b"\r\n")
        channel.push("250 h\u00e9llo")  # not encodable in ascii: '?' rather than an exception
        channel.initiate_send()
        assert b.recv(1000).endswith(b"250 h?llo\r\n")
        channel.close()
    finally:
        a.close()
        b.close()


def test_a_mock_server_gets_a_real_host_name_in_the_greeting() -> None:
    """salmon-mail makes channels of a unittest.mock.Mock server: the fqdn netloop caches on
    the server must not be the Mock's automatic attribute."""
    from unittest import mock

    a, b = socket.socketpair()
    try:
        channel = nl_smtpd.SMTPChannel(mock.Mock(), a, ("127.0.0.1", 1), map={})
        assert type(channel.fqdn) is str and "Mock" not in channel.fqdn
        channel.initiate_send()
        greeting = b.recv(1000)
        assert greeting.startswith(b"220 " + channel.fqdn.encode()) and b"Mock" not in greeting
        channel.close()
    finally:
        a.close()
        b.close()
