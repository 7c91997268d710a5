"""The null server: a raw TCP relay with no routing, the floor of ``bench_fair.py``.

``_null_server.py PORT`` listens on 127.0.0.1:PORT and prints ``ready`` once it does.
A connection opens with one line, ``N <group> <mode> <frame length>\\n``, answered by
``OK\\n``.  From then on the bytes it sends, cut into whole frames of its declared
length (so two senders' frames never interleave), are copied to the connections of its
group: mode 0 receives nothing, mode 1 receives the other members' frames, mode 2 the
other members' and its own (the echo a NATS wildcard subscriber gets).  The generator
sends the frames the subscribers expect (the NATS ``MSG`` form), so the receive side
runs the same code as against a real server.  A connection whose output backlog passes
256 MiB is closed.  Single-threaded, one selector loop: what a server costs with no
parsing, matching or encoding at all.
"""

from __future__ import annotations

import selectors
import socket
import sys

MAX_BACKLOG = 256 * 1024 * 1024


class Conn:
    __slots__ = ("frame", "group", "inbuf", "mode", "outbuf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.group = -1
        self.mode = 0
        self.frame = 0
        self.inbuf = bytearray()
        self.outbuf = bytearray()


def main(port: int) -> None:
    sel = selectors.DefaultSelector()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(4096)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, None)
    groups: dict[int, list[Conn]] = {}
    print("ready", flush=True)

    def close(c: Conn) -> None:
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        members = groups.get(c.group)
        if members is not None and c in members:
            members.remove(c)

    def write(c: Conn, data: bytes | bytearray | memoryview) -> None:
        if c.outbuf:
            c.outbuf += data
            if len(c.outbuf) > MAX_BACKLOG:
                close(c)
            return
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            close(c)
            return
        if n < len(data):
            c.outbuf += data[n:]
            sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    while True:
        for key, events in sel.select():
            c = key.data
            if c is None:
                try:
                    s, _ = lsock.accept()
                except BlockingIOError:
                    continue
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(s, selectors.EVENT_READ, Conn(s))
                continue
            if events & selectors.EVENT_WRITE and c.outbuf:
                try:
                    n = c.sock.send(c.outbuf)
                except BlockingIOError:
                    n = 0
                except OSError:
                    close(c)
                    continue
                del c.outbuf[:n]
                if not c.outbuf:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
            if not events & selectors.EVENT_READ:
                continue
            try:
                data = c.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                close(c)
                continue
            if c.group < 0:
                c.inbuf += data
                if b"\n" not in c.inbuf:
                    continue
                line, _, rest = bytes(c.inbuf).partition(b"\n")
                _, group, mode, frame = line.split()
                c.group, c.mode, c.frame = int(group), int(mode), max(1, int(frame))
                c.inbuf = bytearray(rest)
                groups.setdefault(c.group, []).append(c)
                write(c, b"OK\n")
                if not c.inbuf:
                    continue
                data = b""
            buf = c.inbuf
            buf += data
            whole = len(buf) // c.frame * c.frame
            if not whole:
                continue
            chunk = bytes(buf[:whole])
            del buf[:whole]
            for m in list(groups.get(c.group, ())):
                if m.mode == 2 or (m.mode == 1 and m is not c):
                    write(m, chunk)


if __name__ == "__main__":
    main(int(sys.argv[1]))
