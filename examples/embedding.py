"""An existing program's own ``while`` loop, interleaving its work with netloop passes.

The host does its work in small steps and gives netloop one non-blocking pass between them;
when it has nothing to do it sleeps exactly as long as ``run_once`` says the next timer needs
(or until a socket is ready, by passing that delay as the pass's timeout).
"""

import socket
import sys

import netloop


class Echo(netloop.BufferedDispatcher):
    def handle_read(self):
        data = self.recv(4096)
        if data:
            self.send(data.upper())


class Listener(netloop.Dispatcher):
    def __init__(self, map):
        netloop.Dispatcher.__init__(self, map=map)
        self.create_socket()
        self.bind(("127.0.0.1", 0))
        self.listen(5)

    def handle_accepted(self, sock, addr):
        Echo(sock, map=self._map)


def main():
    loop = netloop.Loop()
    listener = Listener(loop.map)
    ticks = []
    loop.call_every(0.01, ticks.append, 1)

    client = socket.create_connection(listener.socket.getsockname())
    client.setblocking(False)
    client.sendall(b"embedded\n")
    host_work_done = 0
    reply = b""
    while host_work_done < 50 or not reply.endswith(b"\n"):
        host_work_done += 1            # the host program's own work, one step
        delay = loop.run_once(0)       # one netloop pass, never blocking
        try:
            reply += client.recv(100)
        except BlockingIOError:
            if delay:
                loop.run_once(min(delay, 0.05))  # idle: wait for the next timer or socket
    client.close()
    listener.close()
    for obj in list(loop.map.values()):
        obj.close()
    loop.close()
    print("host steps: %d, timer ticks: %d, reply: %r" % (host_work_done, len(ticks), reply))
    return 0 if reply == b"EMBEDDED\n" else 1


if __name__ == "__main__":
    sys.exit(main())
