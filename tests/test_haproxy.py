"""End to end behind a real HAProxy: ``send-proxy`` (v1) and ``send-proxy-v2`` to two netloop
backends (``python -m netloop echo --proxy-protocol --log-peers``), which must log the client's
own address, not HAProxy's. HAProxy's health checks (with the PROXY header, LOCAL in v2) run
meanwhile and must not be refused.

HAProxy is Debian's ``haproxy`` package (``.ci/run`` installs it); without it the test fails
when ``CI`` is set and is skipped otherwise.
"""

from __future__ import annotations

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
    default_backend netloop
backend netloop
    balance roundrobin
    server one {one[0]}:{one[1]} {send} check inter 200ms check-send-proxy
    server two {two[0]}:{two[1]} {send} check inter 200ms check-send-proxy
"""


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_haproxy_forwards_client_addresses_to_two_backends(tmp_path, send):
    haproxy = need_tool("haproxy", "/usr/sbin/haproxy")
    one = Proc(netloop_argv("echo", "--proxy-protocol", "--log-peers"))
    two = Proc(netloop_argv("echo", "--proxy-protocol", "--log-peers", "--kind", "socketserver"))
    balancer = None
    try:
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(CONFIG.format(front=front, one=one.address(), two=two.address(),
                                        send=send))
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

        def peers(proc: Proc) -> set:
            return {m.group(1) for m in proc.find(r"peer (\S+)$")}

        deadline = time.monotonic() + 10
        while not expected <= peers(one) | peers(two) and time.monotonic() < deadline:
            time.sleep(0.02)
        seen = peers(one) | peers(two)
        assert expected <= seen, (expected, one.output(), two.output())
        # Round robin: both backends served clients, each logging the clients' addresses.
        assert peers(one) & expected and peers(two) & expected
        # Health checks came with the header (LOCAL in v2) and were served, not refused.
        for proc in (one, two):
            assert "refused" not in proc.output(), proc.output()
    finally:
        if balancer is not None:
            balancer.stop()
        one.stop()
        two.stop()
