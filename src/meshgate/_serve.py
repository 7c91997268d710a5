"""``meshgate serve -c node.toml``: one node as a service.

The TOML file holds :class:`~meshgate.GatewayConfig` fields at the top level
(``[gateways]`` maps remote cluster names to URL lists; ``[[users]]`` entries
take ``token``, ``account`` and optional ``publish``/``subscribe`` tables with
``allow``/``deny`` lists).  Once listening, the node prints one JSON line with
its bound URLs on standard output; SIGINT or SIGTERM stops it gracefully.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import tomllib
from pathlib import Path

import trio

from ._gateway import open_gateway
from .config import ConfigError, GatewayConfig


def load_config(path: str | Path) -> GatewayConfig:
    """Read a node configuration from a TOML file; errors name the field."""
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("toml", str(exc)) from None
    return GatewayConfig.from_mapping(data)


async def _run(config: GatewayConfig) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_gateway(config) as gw:
            ready = {
                "name": config.name,
                "cluster": config.cluster,
                "client_url": gw.client_url,
                "cluster_url": gw.cluster_url,
                "gateway_url": gw.gateway_url,
            }
            print(json.dumps(ready), flush=True)
            async for signum in signals:
                logging.getLogger("meshgate").info("signal %d: stopping", signum)
                break


def serve_main(path: str, *, verbose: int = 0) -> int:
    """Run a node until SIGINT/SIGTERM; exit status 2 for a bad configuration."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(path)
    except (ConfigError, OSError) as exc:
        print(f"meshgate serve: {path}: {exc}", file=sys.stderr)
        return 2
    trio.run(_run, config)
    return 0
