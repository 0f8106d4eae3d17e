"""Timers and a cross-thread call on one netloop Loop.

An echo server whose connections get a heartbeat line every ``--interval`` seconds, closed after
``--idle`` seconds of silence, while a worker thread hands results to the loop with
``call_soon_threadsafe`` (the loop wakes at once; no polling). Runs for ``--seconds`` and exits.
"""

import argparse
import socket
import sys
import threading

import netloop


class Connection(netloop.BufferedDispatcher):
    def __init__(self, sock, map, interval, idle):
        netloop.BufferedDispatcher.__init__(self, sock, map=map)
        self.beats = 0
        # The channel's own timers: cancelled for us when it closes.
        self.call_every(interval, self.beat)
        self.set_idle_timeout(idle)

    def beat(self):
        self.beats += 1
        self.send(b"heartbeat %d\n" % self.beats)

    def handle_read(self):
        data = self.recv(4096)
        if data:
            self.send(data)

    def handle_close(self):
        self.close()


class Server(netloop.Dispatcher):
    def __init__(self, map, interval, idle):
        netloop.Dispatcher.__init__(self, map=map)
        self.create_socket()
        self.bind(("127.0.0.1", 0))
        self.listen(5)
        self.interval, self.idle = interval, idle

    def handle_accepted(self, sock, addr):
        Connection(sock, self._map, self.interval, self.idle)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--idle", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)

    loop = netloop.Loop()
    server = Server(loop.map, args.interval, args.idle)
    results = []

    def worker():
        # Work done off the loop; its result is handed over with a thread-safe call.
        total = sum(i * i for i in range(100000))
        loop.call_soon_threadsafe(results.append, total)

    client = socket.create_connection(server.socket.getsockname())
    client.setblocking(False)
    thread = threading.Thread(target=worker)
    thread.start()
    loop.call_later(args.seconds, loop.stop)
    loop.run_forever()
    thread.join()
    received = b""
    try:
        received = client.recv(65536)
    except BlockingIOError:
        pass
    client.close()
    server.close()
    for obj in list(loop.map.values()):
        obj.close()
    loop.close()
    beats = received.count(b"heartbeat")
    print("heartbeats received: %d; worker result on the loop thread: %s" % (beats, results))
    return 0 if beats >= 1 and results else 1


if __name__ == "__main__":
    sys.exit(main())
