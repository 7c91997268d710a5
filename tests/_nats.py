"""Find, or install, a real nats-server for differential tests; skip with the reason if impossible."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@functools.cache
def _locate() -> tuple[str | None, str]:
    for cand in (shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if cand and os.access(cand, os.X_OK):
            return cand, ""
    if shutil.which("apt-get") is None:
        return None, "nats-server is not installed and apt-get is not available"
    if os.geteuid() != 0:
        return None, "nats-server is not installed and installing it needs root"
    try:
        proc = subprocess.run(
            ["apt-get", "install", "-y", "-q", "nats-server"],
            capture_output=True,
            timeout=300,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"installing nats-server failed: {exc}"
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return None, f"apt-get install nats-server failed: {tail}"
    path = shutil.which("nats-server") or "/usr/sbin/nats-server"
    return (path, "") if os.access(path, os.X_OK) else (None, "nats-server missing after install")


def nats_server_binary() -> str:
    """Path of a nats-server binary, installing the Debian package if needed; else skip."""
    path, reason = _locate()
    if path is None:
        pytest.skip(f"differential test needs nats-server: {reason}")
    return path


def free_port() -> int:
    """A loopback port that is free now, chosen *below* the kernel's ephemeral range:
    a port handed out by ``bind(0)`` can be taken, while a test restarts a server on
    it, by some outgoing connection's source port (nodes keep redialing a dead peer)."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(10000, max(10001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)  # polling a child process's port, not test synchronisation
    raise RuntimeError(f"nats-server did not listen on {port}")


@contextlib.contextmanager
def run_nats(config: str = "", *, port: int | None = None) -> Iterator[int]:
    """Run nats-server on 127.0.0.1 with extra config text; yield its client port."""
    binary = nats_server_binary()
    port = port or free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nats.conf"
        conf.write_text(f"listen: 127.0.0.1:{port}\n{config}\n")
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(port, proc)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class NatsTextClient:
    """A tiny blocking client of the NATS text protocol, enough for differential tests."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        info = self._line()
        assert info.startswith(b"INFO "), info
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("nats-server closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ping_collect(self) -> list[tuple[str, int, bytes]]:
        """Send PING; return every MSG (subject, sid, payload) received before the PONG."""
        self.sock.sendall(b"PING\r\n")
        msgs: list[tuple[str, int, bytes]] = []
        while True:
            line = self._line()
            if line == b"PONG":
                return msgs
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())
            if line.startswith(b"MSG "):
                parts = line.split()
                size = int(parts[-1])
                while len(self.buf) < size + 2:
                    self._fill()
                payload, self.buf = self.buf[:size], self.buf[size + 2 :]
                msgs.append((parts[1].decode(), int(parts[2]), payload))
