"""All cores of a machine: worker processes behind one shared port, routed together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import meshgate
from meshgate.workers import WorkerPool

pytestmark = pytest.mark.skipif(
    not hasattr(__import__("socket"), "SO_REUSEPORT"), reason="needs SO_REUSEPORT"
)


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "node.toml"
    path.write_text(
        'name = "edge"\nlisten = "127.0.0.1:0"\nnats_listen = "127.0.0.1:0"\n'
        "lame_duck_duration = 0.0\n" + extra
    )
    return path


async def clients_by_worker(url: str, n: int, stack: trio.Nursery) -> dict[str, list[object]]:
    """Open ``n`` clients on the shared port (kept open in ``stack``), by the worker
    each landed on."""
    out: dict[str, list[object]] = {}
    ready: trio.MemorySendChannel[meshgate.Client]
    ready, got = trio.open_memory_channel[meshgate.Client](n)

    async def one() -> None:
        async with meshgate.connect(url) as c:
            await ready.send(c)
            await trio.sleep_forever()

    for _ in range(n):
        stack.start_soon(one)
    for _ in range(n):
        c = await got.receive()
        out.setdefault(c.server_name, []).append(c)
    return out


async def exchange(pub: meshgate.Client, sub: meshgate.Client, subject: str) -> None:
    """A message from ``pub`` reaches ``sub`` (retried while the subscription's interest
    travels over the route between the two workers)."""
    s = await sub.add_subscription(subject)
    await sub.flush()
    while True:
        await pub.publish(subject, b"hi")
        with trio.move_on_after(0.2):
            msg = await s.receive()
            assert msg.payload == b"hi"
            return


async def test_workers_share_the_port_and_route_to_each_other(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    with trio.fail_after(90):
        async with meshgate.open_workers(path, 2) as pool, trio.open_nursery() as stack:
            assert isinstance(pool, WorkerPool)
            workers = pool.workers
            assert [w.name for w in workers] == ["edge-0", "edge-1"]
            assert {w.urls["client_url"] for w in workers} == {pool.client_url}
            assert {tuple(w.urls["nats_urls"]) for w in workers} == {pool.nats_urls}
            assert len({w.urls["cluster_url"] for w in workers}) == 2
            assert pool.client_url is not None
            # the kernel spreads connections over both workers
            by_worker = await clients_by_worker(pool.client_url, 24, stack)
            assert set(by_worker) == {"edge-0", "edge-1"}
            a = by_worker["edge-0"][0]
            b = by_worker["edge-1"][0]
            assert isinstance(a, meshgate.Client)
            assert isinstance(b, meshgate.Client)
            await exchange(a, b, "zero.to.one")
            await exchange(b, a, "one.to.zero")

            # a worker that dies is restarted on the same port and rejoins the cluster
            old_pid = workers[1].pid
            os.kill(old_pid, signal.SIGKILL)
            await pool.wait_restarts(1)
            assert pool.workers[1].pid != old_pid
            assert pool.workers[1].urls["client_url"] == pool.client_url
            stack.cancel_scope.cancel()
        # leaving the pool stopped every worker
        for w in pool.workers:
            with pytest.raises(ProcessLookupError):
                os.kill(w.pid, 0)


async def test_a_restarted_worker_serves_and_routes(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    with trio.fail_after(90):
        async with meshgate.open_workers(path, 2) as pool, trio.open_nursery() as stack:
            os.kill(pool.workers[0].pid, signal.SIGKILL)
            await pool.wait_restarts(1)
            assert pool.client_url is not None
            by_worker = await clients_by_worker(pool.client_url, 24, stack)
            assert set(by_worker) == {"edge-0", "edge-1"}
            a, b = by_worker["edge-0"][0], by_worker["edge-1"][0]
            assert isinstance(a, meshgate.Client)
            assert isinstance(b, meshgate.Client)
            await exchange(b, a, "to.the.new.one")
            stack.cancel_scope.cancel()


async def test_serve_workers_command(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    with trio.fail_after(60):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "meshgate", "serve", "-c", str(path), "--workers", "2"],
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(65536)
                assert chunk, "serve --workers exited before its ready line"
                line += chunk
            ready = json.loads(line)
            assert len(ready["workers"]) == 2
            assert {w["client_url"] for w in ready["workers"]} == {ready["client_url"]}
            # the workers' route secret is not on any command line
            for w in ready["workers"]:
                cmdline = await trio.Path(f"/proc/{w['pid']}/cmdline").read_bytes()
                assert b"secret" not in cmdline
            async with meshgate.connect(ready["client_url"]) as c:
                await c.flush()
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            for w in ready["workers"]:
                with pytest.raises(ProcessLookupError):
                    os.kill(w["pid"], 0)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_reuse_port_lets_two_nodes_share_a_port() -> None:
    with trio.fail_after(20):
        first = meshgate.GatewayConfig(name="a", reuse_port=True)
        async with meshgate.open_gateway(first) as a:
            assert a.client_url is not None
            second = meshgate.GatewayConfig(name="b", listen=a.client_url, reuse_port=True)
            async with meshgate.open_gateway(second) as b:
                assert b.client_url == a.client_url
            # without reuse_port the port is taken
            with pytest.raises(OSError, match="in use"):
                async with meshgate.open_gateway(meshgate.GatewayConfig(listen=a.client_url)):
                    pass


async def test_workers_need_a_shareable_port(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('listen = "memory://x"\n')
    with pytest.raises(meshgate.MeshgateError, match="cannot be shared"):
        async with meshgate.open_workers(path, 2):
            pass
    with pytest.raises(meshgate.MeshgateError, match="cannot be shared between processes"):
        async with meshgate.open_gateway(
            meshgate.GatewayConfig(listen="memory://", reuse_port=True)
        ):
            pass
