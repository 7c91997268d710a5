"""Run one meshgate node for the benchmarks; prints its client URL, serves until killed."""

from __future__ import annotations

import sys

import trio

import meshgate


async def main(port: int) -> None:
    cfg = meshgate.GatewayConfig(
        listen=f"127.0.0.1:{port}",
        max_pending_bytes=512 * 1024 * 1024,
        max_connections=100_000,
        ping_interval=600.0,
    )
    async with meshgate.open_gateway(cfg) as gw:
        print(gw.client_url, flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
