"""ForkingMixIn on netloop: each request is handled in a child process of the server.

The server runs ``serve_forever()`` in the main thread (no other threads: forking a threaded
process is unsafe). The clients run in a separate process, this script started again with
``client PORT``; a timer on the server's loop notices when that process has finished and calls
``shutdown()``, which, on the loop's own thread, simply stops the server after the pass.

    python socketserver_forking.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from netloop import socketserver


class PidReportingHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline().decode().strip()
        self.wfile.write("child {} of {} got: {}\n".format(
            os.getpid(), os.getppid(), line).encode())


class ForkingServer(socketserver.ForkingMixIn, socketserver.TCPServer):
    pass


def clients(port: int) -> None:
    for n in (1, 2, 3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall("request {}\n".format(n).encode())
            with sock.makefile("rb") as reply:
                print("Received:", reply.readline().decode().strip(), flush=True)


def main() -> None:
    with ForkingServer(("127.0.0.1", 0), PidReportingHandler) as server:
        print("server pid", os.getpid(), flush=True)
        child = subprocess.Popen([sys.executable, __file__, "client",
                                  str(server.server_address[1])])

        def stop_when_clients_are_done() -> None:
            if child.poll() is not None:
                server.shutdown()

        server.get_loop().call_every(0.05, stop_when_clients_are_done)
        server.serve_forever()
    print("clients exited with", child.returncode, "; children left:",
          len(server.active_children or ()), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        clients(int(sys.argv[2]))
    else:
        main()
