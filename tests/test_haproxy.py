"""End to end behind a real HAProxy: ``send-proxy`` (v1) and ``send-proxy-v2`` to two netloop
backends (``python -m netloop echo --proxy-protocol --log-peers``), which must log the client's
own address, not HAProxy's. HAProxy's health checks (with the PROXY header, LOCAL in v2) run
meanwhile and must not be refused.

Clients come from 127.0.0.2/.3 and from ``::1`` (a second frontend address): HAProxy then
writes a ``PROXY TCP6`` line (v1) or an ``AF_INET6`` block (v2) to the IPv4 backends, which must
log ``[::1]:port``. Each backend kind (a dispatcher, a socketserver server) must see both
families.

HAProxy is Debian's ``haproxy`` package (``.ci/run`` installs it); without it the test fails
when ``CI`` is set and is skipped otherwise. Without an IPv6 loopback the IPv6 part fails when
``CI`` is set; otherwise the IPv4 part runs and the test then reports itself skipped, saying why.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from scale_support import Proc, echo_once, free_port, need_tool, netloop_argv

CONFIG = """
global
    maxconn 200
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend front
    bind 127.0.0.1:{front}
{bind6}    default_backend netloop
backend netloop
    balance roundrobin
    server one {one[0]}:{one[1]} {send} check inter 200ms check-send-proxy
    server two {two[0]}:{two[1]} {send} check inter 200ms check-send-proxy
"""


def ipv6_loopback() -> bool:
    """True if this host can listen on and connect to ``::1``."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            s.listen(1)
            with socket.create_connection(s.getsockname()[:2], timeout=2):
                pass
    except OSError:
        return False
    return True


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_haproxy_forwards_client_addresses_to_two_backends(tmp_path, send):
    haproxy = need_tool("haproxy", "/usr/sbin/haproxy")
    one = Proc(netloop_argv("echo", "--proxy-protocol", "--log-peers"))
    two = Proc(netloop_argv("echo", "--proxy-protocol", "--log-peers", "--kind", "socketserver"))
    balancer = None
    try:
        front = free_port()
        has_v6 = ipv6_loopback()
        if not has_v6 and os.environ.get("CI"):
            pytest.fail("CI is set and this host has no IPv6 loopback (::1): the PROXY TCP6 / "
                        "AF_INET6 path cannot be tested", pytrace=False)
        front6 = free_port("::1") if has_v6 else 0
        bind6 = "    bind ipv6@::1:%d\n" % front6 if has_v6 else ""
        config = tmp_path / "haproxy.cfg"
        config.write_text(CONFIG.format(front=front, one=one.address(), two=two.address(),
                                        send=send, bind6=bind6))
        check = Proc([haproxy, "-c", "-f", str(config)])
        assert check.popen.wait(10) == 0, check.output()
        check.stop()
        balancer = Proc([haproxy, "-db", "-f", str(config)])
        address = ("127.0.0.1", front)
        # HAProxy listens once it has parsed its configuration: retry the first connection.
        clients = []
        for attempt in range(200):
            try:
                got, me = echo_once(address, b"first", source="127.0.0.2")
                break
            except ConnectionRefusedError:
                if balancer.popen.poll() is not None:
                    pytest.fail("haproxy exited: %s" % balancer.output())
                time.sleep(0.02)
        else:
            pytest.fail("haproxy did not listen: %s" % balancer.output())
        assert got == b"first"
        clients.append(me)
        # Clients from two loopback addresses, neither of them HAProxy's (127.0.0.1).
        for i in range(5):
            source = "127.0.0.%d" % (2 + i % 2)
            got, me = echo_once(address, b"message %d" % i, source=source)
            assert got == b"message %d" % i
            clients.append(me)
        expected = {"%s:%d" % c for c in clients}
        # From ::1: four in a row, so round robin gives each backend two.
        expected6 = set()
        for i in range(4 if has_v6 else 0):
            got, me = echo_once(("::1", front6), b"six %d" % i)
            assert got == b"six %d" % i
            expected6.add("[%s]:%d" % me)
        expected |= expected6

        def peers(proc: Proc) -> set:
            return {m.group(1) for m in proc.find(r"peer (\S+)$")}

        deadline = time.monotonic() + 10
        while not expected <= peers(one) | peers(two) and time.monotonic() < deadline:
            time.sleep(0.02)
        seen = peers(one) | peers(two)
        assert expected <= seen, (expected, one.output(), two.output())
        # Round robin: both backends served clients, each logging the clients' addresses.
        assert peers(one) & expected and peers(two) & expected
        if has_v6:
            # The dispatcher backend and the socketserver backend each parsed TCP6 / AF_INET6.
            assert peers(one) & expected6 and peers(two) & expected6, (expected6, seen)
        # Health checks came with the header (LOCAL in v2) and were served, not refused.
        for proc in (one, two):
            assert "refused" not in proc.output(), proc.output()
    finally:
        if balancer is not None:
            balancer.stop()
        one.stop()
        two.stop()
    if not has_v6:
        pytest.skip("IPv4 clients passed; the IPv6 part (a ::1 client, PROXY TCP6 / AF_INET6) "
                    "was not run: this host has no IPv6 loopback")
