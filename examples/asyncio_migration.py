"""A legacy asynchat server, a socketserver server and an asyncio server in ONE thread.

The first step of a migration off asyncore: the program keeps its ``async_chat`` channels and
its socketserver server unchanged, and its last line ``asyncore.loop()`` becomes
``netloop.aio.run(main())``. From then on asyncio runs the thread, and new code is asyncio:

- port "chat": a legacy chat room (``async_chat``). Every line is sent to everyone in the room,
  and the handler schedules a coroutine (``asyncio.create_task``) that tells the watchers.
- port "watch": an ``asyncio.start_server`` server. Watchers see the chat's lines, and what a
  watcher writes is pushed into the chat room by a coroutine, through the legacy channels.
- port "http": a ``netloop.socketserver`` HTTP server (threaded handlers) answering
  ``GET /stats`` with counters from both sides.

Prints the three ports as one JSON line, then serves until SIGTERM or Ctrl-C.
"""

import asyncio
import http.server
import json
import signal
import socket

import netloop.aio
import netloop.asynchat as asynchat
import netloop.asyncore as asyncore
import netloop.socketserver as socketserver

stats = {"chat_lines": 0, "watch_lines": 0, "chat_clients": 0, "watchers": 0}
watchers = set()  # asyncio StreamWriters


# ------------------------------------------------------------------ legacy code, unchanged
class ChatHandler(asynchat.async_chat):
    def __init__(self, sock, room):
        asynchat.async_chat.__init__(self, sock)
        self.room = room
        self.set_terminator(b"\n")
        self.buffer = []
        room.add(self)
        stats["chat_clients"] += 1

    def collect_incoming_data(self, data):
        self.buffer.append(data)

    def found_terminator(self):
        line = b"".join(self.buffer)
        self.buffer = []
        stats["chat_lines"] += 1
        for member in list(self.room):
            member.push(b"<chat> " + line + b"\n")
        # New code beside the old: the legacy handler schedules a coroutine.
        asyncio.get_running_loop().create_task(tell_watchers(b"chat: " + line + b"\n"))

    def handle_close(self):
        self.room.discard(self)
        stats["chat_clients"] -= 1
        self.close()


class ChatServer(asyncore.dispatcher):
    def __init__(self):
        asyncore.dispatcher.__init__(self)
        self.room = set()
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(16)

    def handle_accepted(self, sock, addr):
        ChatHandler(sock, self.room)


class StatsHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(stats).encode()
        self.send_response(200 if self.path == "/stats" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# ------------------------------------------------------------------ new asyncio code
# A watcher that stops reading is let go once this much waits for it: awaiting its drain()
# held every later line, and the memory of each waiting task, for as long as it did not read.
MAX_WATCHER_BACKLOG = 1 << 20


async def tell_watchers(line):
    for writer in list(watchers):
        if writer.transport.get_write_buffer_size() > MAX_WATCHER_BACKLOG:
            writer.transport.abort()  # its watcher() coroutine sees the end and cleans up
        else:
            writer.write(line)


async def watcher(reader, writer, room):
    watchers.add(writer)
    stats["watchers"] += 1
    writer.write(b"watching\n")
    try:
        async for line in reader:
            stats["watch_lines"] += 1
            for member in list(room):  # a coroutine sends through the legacy channels
                member.push(b"<asyncio> " + line)
    finally:
        watchers.discard(writer)
        stats["watchers"] -= 1
        writer.close()


async def main():
    chat = ChatServer()  # on asyncore's socket_map, which netloop.aio.run() attached
    web = socketserver.ThreadingTCPServer(("127.0.0.1", 0), StatsHandler,
                                          map=asyncore.socket_map)
    watch = await asyncio.start_server(lambda r, w: watcher(r, w, chat.room), "127.0.0.1", 0)
    print(json.dumps({"chat": chat.socket.getsockname()[1],
                      "watch": watch.sockets[0].getsockname()[1],
                      "http": web.server_address[1]}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        watch.close()
        for writer in list(watchers):
            # close() waits until what is queued has been sent, which a watcher that stopped
            # reading never lets happen: wait_closed() (Python 3.12+) then never returned,
            # and SIGTERM did not stop the program.
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()
            else:
                writer.close()
        await watch.wait_closed()
        web.server_close()
        asyncore.close_all()


if __name__ == "__main__":
    # Was: asyncore.loop()
    netloop.aio.run(main())
