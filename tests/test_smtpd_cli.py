"""``python -m netloop.smtpd`` as a developer runs it: a subprocess on port 0, a message sent with
``smtplib``, the output read, then Ctrl-C/SIGTERM and a clean exit."""

from __future__ import annotations

import mailbox
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
from email.message import EmailMessage
from typing import Any, List, Tuple

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
END = "------------ END MESSAGE ------------"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _smtpd(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "netloop.smtpd", *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _port(proc: subprocess.Popen) -> int:
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # -d writes debug lines before it
        if "listening on 127.0.0.1:" in line:
            return int(line.rsplit(":", 1)[1])
        seen.append(line)
    raise AssertionError("no address printed: %r" % seen)


def _until_end(proc: subprocess.Popen) -> List[str]:
    assert proc.stdout is not None
    lines: List[str] = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(END):
            return lines
    raise AssertionError("no end of message in %r" % lines)


def _stop(proc: subprocess.Popen, signum: int) -> Tuple[int, str]:
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "J\u00f6rg <sender@example.org>"
    msg["To"] = "dev@example.org"
    msg["Subject"] = "Gr\u00fc\u00dfe aus K\u00f6ln \u2713"  # sent as RFC 2047 encoded words
    msg.set_content("Sch\u00f6ne Gr\u00fc\u00dfe\n.a line with a dot\n", cte="quoted-printable")
    msg.add_attachment(b"\x00\x01\x02", maintype="application", subtype="octet-stream",
                       filename="data.bin")
    return msg


@pytest.mark.timeout(60)
def test_debugging_server_shows_a_message_readably_and_stores_it(tmp_path: Any) -> None:
    maildir = str(tmp_path / "mail")
    proc = _smtpd("-n", "-c", "DebuggingServer", "--maildir", maildir, "127.0.0.1:0")
    try:
        port = _port(proc)
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.send_message(_message())
        out = "\n".join(_until_end(proc))
    finally:
        status, err = _stop(proc, signal.SIGTERM)
    assert status == 0, err
    assert "=?utf-8?" not in out  # the encoded words were decoded
    assert "Subject: Gr\u00fc\u00dfe aus K\u00f6ln \u2713" in out
    assert "From: J\u00f6rg <sender@example.org>" in out
    assert "Envelope from: sender@example.org" in out
    assert "Sch\u00f6ne Gr\u00fc\u00dfe\n.a line with a dot" in out  # quoted-printable decoded
    assert "[attachment: data.bin, application/octet-stream, 3 bytes]" in out
    stored = list(mailbox.Maildir(maildir, create=False))
    assert len(stored) == 1
    assert stored[0]["Return-Path"] == "<sender@example.org>"
    assert stored[0]["X-Original-To"] == "dev@example.org"


@pytest.mark.timeout(60)
def test_raw_listing_and_ctrl_c(tmp_path: Any) -> None:
    mbox = str(tmp_path / "box" / "mbox")
    proc = _smtpd("-n", "-c", "DebuggingServer", "--raw", "--mbox", mbox, "-d",
                  "127.0.0.1:0")
    idle: Any = None
    try:
        port = _port(proc)
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.sendmail("a@example.org", ["b@example.org"], "Subject: raw\r\n\r\nbody\r\n")
        out = _until_end(proc)
        # A client still connected when Ctrl-C comes: the server closes it and exits.
        idle = socket.create_connection(("127.0.0.1", port), timeout=20)
        assert idle.recv(100).startswith(b"220 ")
    finally:
        status, err = _stop(proc, signal.SIGINT)
    assert idle is not None
    with idle:
        assert idle.recv(100) == b""
    assert status == 0, err
    # smtpd's own listing, line for line.
    assert out == ["---------- MESSAGE FOLLOWS ----------", "mail options: ['SIZE=22']",
                   "b'Subject: raw'", "b'X-Peer: 127.0.0.1'", "b''", "b'body'", END]
    assert "sender: a@example.org" in err  # -d: the exchange on stderr
    box = mailbox.mbox(mbox, create=False)
    try:
        assert [m["Subject"] for m in box] == ["raw"]
    finally:
        box.close()


def test_help_and_version() -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "netloop.smtpd", *args], env=_env(),
                              capture_output=True, text=True, timeout=30)

    shown = run("--help")
    assert shown.returncode == 0
    assert "-c, --class NAME" in shown.stderr and "--maildir DIR" in shown.stderr
    assert run("-V").stdout.strip() == "Python SMTP proxy version 0.3"


@pytest.mark.parametrize("args, text", [
    (["-c", "NoSuchServer", "127.0.0.1:0"], "No server class"),
    (["--size", "big"], "Invalid size: big"),
    (["-n", "--size", "-5", "127.0.0.1:0"], "Invalid size: -5"),
    (["--bogus"], "option --bogus not recognized"),
    (["nocolon"], "Bad local spec: nocolon"),
    (["127.0.0.1:http"], "Bad local port: 127.0.0.1:http"),
    (["-n", "--maildir", "x", "127.0.0.1:0"], "need -c DebuggingServer"),
    (["a:1", "b:2", "c:3"], "Invalid arguments"),
    # -n: were one accepted, main() would not switch this process to the user nobody
    (["-n", "127.0.0.1:99999"], "Bad local port: 127.0.0.1:99999"),  # bind()'s OverflowError
    (["-n", "127.0.0.1:0", "localhost:-25"], "Bad remote port: localhost:-25"),
    (["-n", "-c", "no_such_module_here.Server", "127.0.0.1:0"],
     "no module named 'no_such_module_here'"),  # was a ModuleNotFoundError traceback
])
def test_bad_command_lines_are_refused(args: List[str], text: str, capsys: Any) -> None:
    from netloop.mail.cli import main
    assert main(args) == 1
    err = capsys.readouterr().err
    assert text in err and "Usage:" in err


def test_address_in_use_is_a_clear_error(capsys: Any) -> None:
    from netloop.mail.cli import main
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["-n", "-c", "DebuggingServer", "127.0.0.1:%d" % port]) == 1
    assert "cannot serve on 127.0.0.1:%d" % port in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_a_maildir_made_beforehand_stores_messages(tmp_path: Any) -> None:
    """``mkdir mail`` then ``--maildir mail``: Maildir(create=True) makes tmp/new/cur only for a
    directory it creates, so every message used to fail (the client cut off at the end of DATA,
    smtpd's error line on stdout)."""
    maildir = tmp_path / "mail"
    maildir.mkdir()
    proc = _smtpd("-n", "-c", "DebuggingServer", "--maildir", str(maildir), "127.0.0.1:0")
    try:
        port = _port(proc)
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            assert client.sendmail("a@example.org", ["b@example.org"],
                                   "Subject: kept\r\n\r\nbody\r\n") == {}
        _until_end(proc)
    finally:
        status, err = _stop(proc, signal.SIGTERM)
    assert status == 0, err
    assert [m["Subject"] for m in mailbox.Maildir(str(maildir), create=False)] == ["kept"]


@pytest.mark.timeout(30)  # were it accepted, main() would serve until the timeout
@pytest.mark.parametrize("option", ["--maildir", "--mbox"])
def test_a_store_that_cannot_be_made_is_a_clear_error(option: str, tmp_path: Any,
                                                      capsys: Any) -> None:
    from netloop.mail.cli import main
    taken = tmp_path / "a-file"
    taken.write_text("")
    where = str(taken if option == "--maildir" else taken / "mbox")  # under a file: no dir
    assert main(["-n", "-c", "DebuggingServer", option, where, "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err
    assert "netloop.smtpd: cannot store mail in %s" % taken in err, err
    assert "Traceback" not in err


@pytest.mark.timeout(60)
def test_a_message_that_cannot_be_stored_is_answered_451_and_the_session_goes_on(
        tmp_path: Any) -> None:
    """A store that fails (no descriptor left under a flood, a full disk: here the maildir's tmp/
    is removed) used to close the connection with no answer to DATA."""
    maildir = tmp_path / "mail"
    proc = _smtpd("-n", "-c", "DebuggingServer", "--maildir", str(maildir), "127.0.0.1:0")
    try:
        port = _port(proc)
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.sendmail("a@example.org", ["b@example.org"], "Subject: one\r\n\r\n1\r\n")
            _until_end(proc)
            shutil.rmtree(maildir / "tmp")  # where each message is written first
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("a@example.org", ["b@example.org"], "Subject: two\r\n\r\n2\r\n")
            assert refused.value.smtp_code == 451
            (maildir / "tmp").mkdir()
            client.sendmail("a@example.org", ["b@example.org"], "Subject: three\r\n\r\n3\r\n")
            out = _until_end(proc)
    finally:
        status, err = _stop(proc, signal.SIGTERM)
    assert status == 0, err
    assert any("cannot store the message from" in line and "answered 451" in line
               for line in out), out
    assert "Subject: two" not in "\n".join(out)  # refused: not listed either
    box = mailbox.Maildir(str(maildir), create=False)
    assert sorted(m["Subject"] for m in box) == ["one", "three"]


@pytest.mark.timeout(60)
def test_a_message_for_an_mbox_another_program_has_locked_is_answered_451(
        tmp_path: Any) -> None:
    """mailbox raises ExternalClashError, not an OSError, when another process holds the
    mbox's lock (a mail reader, a second server on the same file): the connection was closed
    with no answer to DATA (a traceback on stderr) instead of a 451."""
    path = str(tmp_path / "mbox")
    proc = _smtpd("-n", "-c", "DebuggingServer", "--mbox", path, "127.0.0.1:0")
    holder = mailbox.mbox(path, create=True)  # this process: fcntl locks are per process
    try:
        port = _port(proc)
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            holder.lock()
            try:
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    client.sendmail("a@example.org", ["b@example.org"], "Subject: one\r\n\r\n1\r\n")
                assert refused.value.smtp_code == 451
            finally:
                holder.unlock()
            client.sendmail("a@example.org", ["b@example.org"], "Subject: two\r\n\r\n2\r\n")
            out = _until_end(proc)
    finally:
        holder.close()
        status, err = _stop(proc, signal.SIGTERM)
    assert status == 0, err
    assert "Traceback" not in err and "uncaptured" not in err, err
    assert any("cannot store the message from" in line and "lock unavailable" in line
               for line in out), out
    box = mailbox.mbox(path, create=False)
    try:
        assert [m["Subject"] for m in box] == ["two"]
    finally:
        box.close()
