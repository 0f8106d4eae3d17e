"""Per-request user-space cost of one loop pass, measured in-process (no load generator).

Each round: N client sockets each send 64 bytes, the server side runs one pass, the clients read
the echoes. Kernel work is the same for every variant, so differences are the server's Python
overhead. Prints microseconds per request (CPU time; noisy on a busy machine). For a
deterministic figure count instructions with callgrind, as benchmarks/README.md's log does:

    for r in 50 150; do ROUNDS=$r valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        $(python3 -c 'import sys; print(sys.executable)') benchmarks/bench_pass.py netloop 2>&1 \\
        | grep Collected; done
    # (second - first) / (100 rounds * N) = instructions per request

Variants: minimal (a hand-written epoll echo), netloop (legacy dispatcher_with_send code on
netloop.asyncore, the pass as loop() runs it), run_once (the same through Loop.run_once(0)),
asyncore and asyncore-poll (the same legacy code on the stdlib's asyncore, select or poll loop,
one loop(count=1) per pass; Python 3.11 and older), aio and aio-uvloop (the same legacy code on
netloop.asyncore, its map attached to an asyncio / uvloop loop with netloop.aio; a pass is one
iteration of that loop; nested, as attach() does by default where there is epoll), aio-each
(the same with attach(nested=False): every socket registered with asyncio, one callback per
event), protocol and protocol-uvloop (an asyncio Protocol echo, as servers.py's asyncio/uvloop
kinds, on the same kind of loop, one iteration per pass), reader and reader-uvloop (a bare
add_reader callback per socket doing recv/send: the floor for anything hosted one descriptor at
a time through add_reader).
Line echo (64-byte lines, as servers.py's line kinds): chat (async_chat on netloop.asynchat, the
pass as loop() runs it), aio-chat and aio-chat-uvloop (the same code attached to asyncio /
uvloop), streams and streams-uvloop (asyncio streams: a readline()/write() task per connection;
a pass is two iterations of the loop, since the task runs one iteration after its data came).
Environment: N (connections, default 100), ROUNDS (default 2000).
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

N = int(os.environ.get("N", 100))
ROUNDS = int(os.environ.get("ROUNDS", 2000))
MESSAGE = b"x" * 64
LINE = b"x" * 63 + b"\n"


def drive(clients, one_pass, message: bytes = MESSAGE) -> float:
    def rounds(count: int) -> None:
        for _ in range(count):
            for c in clients:
                c.send(message)
            one_pass()
            for c in clients:
                c.recv(65536)

    rounds(200)  # warm-up
    start = time.process_time()
    rounds(ROUNDS)
    return (time.process_time() - start) / (ROUNDS * len(clients)) * 1e6


def _event_loop(which: str):  # type: ignore[no-untyped-def]
    if which.endswith("uvloop"):
        import uvloop
        return uvloop.new_event_loop()
    import asyncio
    return asyncio.new_event_loop()


def main() -> int:
    which = sys.argv[1] if len(sys.argv) > 1 else "netloop"
    pairs = [socket.socketpair() for _ in range(N)]
    for a, b in pairs:
        a.setblocking(False)
        b.setblocking(False)
    clients = [b for _, b in pairs]
    cleanup = []
    message = MESSAGE
    if which == "minimal":
        ep = select.epoll()
        conns = {a.fileno(): a for a, _ in pairs}
        for fd in conns:
            ep.register(fd, select.EPOLLIN)

        def one_pass() -> None:
            for fd, _ in ep.poll(0):
                s = conns[fd]
                data = s.recv(65536)
                if data:
                    s.send(data)
        cleanup.append(ep.close)
    elif which in ("reader", "reader-uvloop"):
        # The floor for anything hosted through add_reader: a bare callback per socket.
        ev = _event_loop(which)

        def echo(s: socket.socket) -> None:
            data = s.recv(65536)
            if data:
                s.send(data)
        for a, _ in pairs:
            ev.add_reader(a.fileno(), echo, a)

        def one_pass() -> None:
            ev.stop()
            ev.run_forever()

        def unregister() -> None:
            for a, _ in pairs:
                ev.remove_reader(a.fileno())
            ev.close()
        cleanup.append(unregister)
    elif which in ("protocol", "protocol-uvloop"):
        import asyncio
        ev = _event_loop(which)

        class EchoProtocol(asyncio.Protocol):
            def connection_made(self, transport):  # type: ignore[no-untyped-def]
                self.transport = transport
                if hasattr(transport, "max_size"):  # as servers.py: 64 KiB reads, not 256
                    transport.max_size = 65536

            def data_received(self, data: bytes) -> None:
                self.transport.write(data)

        async def adopt() -> None:
            for a, _ in pairs:
                await ev.connect_accepted_socket(EchoProtocol, sock=a)
        ev.run_until_complete(adopt())

        def one_pass() -> None:
            ev.stop()
            ev.run_forever()
        cleanup.append(ev.close)
    elif which in ("streams", "streams-uvloop"):
        import asyncio
        ev = _event_loop(which)
        message = LINE
        tasks = []

        async def line_echo(reader, writer) -> None:  # type: ignore[no-untyped-def]
            while True:
                line = await reader.readline()
                if not line:
                    break
                writer.write(line)
            writer.close()

        async def adopt_streams() -> None:
            for a, _ in pairs:
                reader, writer = await asyncio.open_connection(sock=a)
                tasks.append(ev.create_task(line_echo(reader, writer)))
        ev.run_until_complete(adopt_streams())

        def one_pass() -> None:
            for _ in range(2):  # data in, then the task that reads it
                ev.stop()
                ev.run_forever()

        def end_streams() -> None:
            for t in tasks:
                t.cancel()
            ev.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            ev.close()
        cleanup.append(end_streams)
    elif which in ("chat", "aio-chat", "aio-chat-uvloop"):
        import netloop
        from netloop import asynchat, asyncore
        from servers import make_chat_handler
        message = LINE
        LineEcho = make_chat_handler(asynchat)
        for a, _ in pairs:
            LineEcho(a)
        if which == "chat":
            lp = netloop.get_loop(asyncore.socket_map)
            lp.run_once(0)

            def one_pass() -> None:
                lp._pass(0)
        else:
            import netloop.aio
            ev = _event_loop(which)
            handle = netloop.aio.attach(asyncore.socket_map, event_loop=ev)

            def one_pass() -> None:
                ev.stop()
                ev.run_forever()
            cleanup.append(ev.close)
            cleanup.append(handle.detach)
        cleanup.append(lambda: asyncore.close_all())
    else:
        # The legacy echo handler the benchmark servers use, on the stdlib's asyncore
        # (Python 3.11 and older; servers.py silences its deprecation warning) or netloop's.
        from servers import LEGACY_RECV, make_dispatcher_classes
        if which in ("asyncore", "asyncore-poll"):
            import asyncore
        else:
            import netloop
            from netloop import asyncore
        EchoHandler, _ = make_dispatcher_classes(asyncore, LEGACY_RECV)
        for a, _ in pairs:
            EchoHandler(a)
        if which in ("asyncore", "asyncore-poll"):
            use_poll = which == "asyncore-poll"

            def one_pass() -> None:
                asyncore.loop(0, use_poll, count=1)
        elif which in ("aio", "aio-uvloop", "aio-each"):
            import netloop.aio
            ev = _event_loop(which)
            handle = netloop.aio.attach(asyncore.socket_map, event_loop=ev,
                                        nested=False if which == "aio-each" else None)

            def one_pass() -> None:
                ev.stop()
                ev.run_forever()
            cleanup.append(ev.close)
            cleanup.append(handle.detach)
        else:
            lp = netloop.get_loop(asyncore.socket_map)
            lp.run_once(0)
            if which == "run_once":
                def one_pass() -> None:
                    lp.run_once(0)
            else:
                def one_pass() -> None:
                    lp._pass(0)  # what loop() runs each iteration
        cleanup.append(lambda: asyncore.close_all())
    per_request = drive(clients, one_pass, message)
    print("%-9s N=%d: %.3f us CPU per request (server and clients in one process)"
          % (which, N, per_request))
    for fn in reversed(cleanup):
        fn()
    for a, b in pairs:
        a.close()
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
