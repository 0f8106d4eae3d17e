"""A line-based chat server on netloop: each line one client sends goes to all the others.

    python examples/chat_server.py [--host 127.0.0.1] [--port 0]

It prints ``listening on HOST PORT`` once it accepts connections (port 0 picks a free port),
and stops cleanly on SIGINT or SIGTERM. Try it with two or three ``nc 127.0.0.1 PORT``.

Each client is a ``ChatChannel`` cut at ``\\n``; a line is relayed as ``name: text``. Joins and
departures are announced. A line longer than ``MAX_LINE`` gets an error answer and the client is
let go (the channel's bounded input, ``handle_overflow``); a client that stops reading is let go
once ``MAX_BACKLOG`` bytes wait for it, so one slow reader cannot make the server hoard memory.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from typing import Any, List, Optional

from netloop import Dispatcher, Loop
from netloop.chat import ChatChannel

MAX_LINE = 4096
MAX_BACKLOG = 1 << 20


class ChatRoom:
    """The connected members; relays a line from one of them to the rest."""

    def __init__(self) -> None:
        self.members: List["ChatSession"] = []
        self._departed: List["ChatSession"] = []

    def join(self, member: "ChatSession") -> None:
        self.members.append(member)
        member.push(b"* welcome, you are %s\n" % member.name)
        self.broadcast(member, b"* %s joined\n" % member.name)

    def leave(self, member: "ChatSession") -> None:
        if member not in self.members:
            return
        self.members.remove(member)
        member.departed = True
        # Announced one after the other, not from inside the broadcast that let this member
        # go: a line that finds many slow readers lets each go, and each departure's own
        # broadcast would otherwise nest in the previous one's (RecursionError past ~250).
        self._departed.append(member)
        if len(self._departed) > 1:
            return  # an announcement loop further up the stack takes it
        try:
            while self._departed:
                gone = self._departed[0]
                self.broadcast(gone, b"* %s left\n" % gone.name)
                del self._departed[0]
        finally:
            del self._departed[:]

    def broadcast(self, sender: Optional["ChatSession"], line: bytes) -> None:
        for member in list(self.members):
            if member is not sender and not member.departed:  # not let go meanwhile
                member.send_line(line)


class ChatSession(ChatChannel):
    """One client: its lines go to the room."""

    max_buffer = MAX_LINE
    leaving = False
    departed = False

    def __init__(self, sock: socket.socket, room: ChatRoom, name: bytes, map: Any) -> None:
        super().__init__(sock, map)
        self.room = room
        self.name = name
        self.set_terminator(b"\n")
        room.join(self)

    def collect_incoming_data(self, data: bytes) -> None:
        if not self.leaving:
            self.incoming.append(data)

    def found_terminator(self) -> None:
        text = self._get_data().rstrip(b"\r")
        if text and not self.leaving:
            self.room.broadcast(self, b"%s: %s\n" % (self.name, text))

    def send_line(self, line: bytes) -> None:
        if self.backlog() > MAX_BACKLOG:
            self.log_info("%s reads too slowly; letting it go" % self.name.decode(), "warning")
            self.handle_close()
            return
        self.push(line)

    def backlog(self) -> int:
        """Bytes queued for this client (push() queues only what the kernel did not take)."""
        return sum(memoryview(x).nbytes for x in self.producer_fifo if x is not None)

    def handle_overflow(self) -> None:
        # Answer, ignore the rest of what this client sends, and leave once the answer is out.
        self.leaving = True
        del self.incoming[:]
        self.push(b"* line too long (more than %d bytes), bye\n" % MAX_LINE)
        self.close_when_done()

    def handle_close(self) -> None:
        self.room.leave(self)
        self.close()


class ChatServer(Dispatcher):
    """The listening socket: each connection becomes a ``ChatSession`` in the room."""

    def __init__(self, host: str, port: int, map: Any) -> None:
        super().__init__(map=map)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.create_socket(family, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(128)
        self.address = self.socket.getsockname()[:2]
        self.room = ChatRoom()
        self.count = 0

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        self.count += 1
        ChatSession(sock, self.room, b"client%d" % self.count, self._map)

    def handle_close(self) -> None:
        self.close()

    def shutdown(self) -> None:
        """Close the listener and every session."""
        self.close()
        for member in list(self.room.members):
            member.close()
        self.room.members.clear()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    loop = Loop()
    server = ChatServer(args.host, args.port, loop.map)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, loop.stop)
    print("listening on %s %d" % tuple(server.address), flush=True)
    try:
        loop.run()
    finally:
        server.shutdown()
        loop.close()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
