"""Nodes as separate OS processes started from TOML files (``meshgate serve -c``)."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import meshgate

from ._nats import free_port


def write_config(path: Path, **fields: object) -> Path:
    lines = []
    tables = []
    for key, value in fields.items():
        if isinstance(value, dict):
            tables.append(f"[{key}]")
            tables += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines + tables) + "\n")
    return path


@asynccontextmanager
async def node_process(config: Path, *, crash: bool = False) -> AsyncIterator[dict[str, str]]:
    """Start ``meshgate serve -c config``; yield its ready line; stop it with SIGTERM
    (or SIGKILL with ``crash``: no goodbye to its peers)."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "meshgate", "serve", "-c", str(config)],
        stdout=-1,  # subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        buf = b""
        while b"\n" not in buf:
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, f"node exited early with {proc.poll()}"
            buf += chunk
        yield json.loads(buf.split(b"\n", 1)[0])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
            with trio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def receive_eventually(
    pub: meshgate.Client, sub: meshgate.Subscription, subject: str
) -> meshgate.Message:
    """Publish until the subscriber gets one: interest crosses processes asynchronously,
    so the proof of convergence is the delivery itself."""
    while True:
        await pub.publish(subject, b"probe")
        with trio.move_on_after(0.2):
            return await sub.receive()


async def test_two_clusters_of_processes_survive_a_node_restart(tmp_path: Path) -> None:
    ports = {n: (free_port(), free_port(), free_port()) for n in ("a0", "a1", "b0", "b1")}

    def cfg(name: str, cluster: str, **extra: object) -> Path:
        c, r, g = ports[name]
        return write_config(
            tmp_path / f"{name}.toml",
            name=name,
            cluster=cluster,
            listen=f"127.0.0.1:{c}",
            cluster_listen=f"127.0.0.1:{r}",
            gateway_listen=f"127.0.0.1:{g}",
            reconnect_wait=0.1,
            **extra,
        )

    a0 = cfg("a0", "A")
    a1 = cfg("a1", "A", routes=[f"tcp://127.0.0.1:{ports['a0'][1]}"])
    b0 = cfg("b0", "B", gateways={"A": [f"tcp://127.0.0.1:{ports['a0'][2]}"]})
    b1 = cfg("b1", "B", routes=[f"tcp://127.0.0.1:{ports['b0'][1]}"])
    with trio.fail_after(90):
        async with (
            node_process(a0) as ra0,
            node_process(a1),
            node_process(b0),
            meshgate.connect(ra0["client_url"]) as pub,
        ):
            assert ra0["cluster"] == "A"
            for generation in range(2):
                async with node_process(b1, crash=generation == 0) as rb1:
                    assert rb1["gateway_url"] == f"tcp://127.0.0.1:{ports['b1'][2]}"
                    async with (
                        meshgate.connect(rb1["client_url"]) as c,
                        c.subscribe("p.>") as sub,
                    ):
                        msg = await receive_eventually(pub, sub, f"p.{generation}")
                        assert msg.subject == f"p.{generation}"
                # b1 crashed (then, the second time, stopped cleanly); its peers noticed,
                # and the next round it comes back on the same ports and interest re-syncs
