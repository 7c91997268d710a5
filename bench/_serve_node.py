"""Run one meshgate node for the benchmarks; prints its client URL, serves until killed.

``_serve_node.py PORT [NATS_PORT]``: the client port, and optionally a NATS port."""

from __future__ import annotations

import sys

import trio

import meshgate


async def main(port: int, nats_port: int | None) -> None:
    cfg = meshgate.GatewayConfig(
        listen=f"127.0.0.1:{port}",
        nats_listen=() if nats_port is None else (f"127.0.0.1:{nats_port}",),
        max_pending_bytes=512 * 1024 * 1024,
        max_connections=100_000,
        ping_interval=600.0,
    )
    async with meshgate.open_gateway(cfg) as gw:
        print(gw.client_url, flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(
        main,
        int(sys.argv[1]) if len(sys.argv) > 1 else 0,
        int(sys.argv[2]) if len(sys.argv) > 2 else None,
    )
