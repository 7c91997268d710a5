"""``meshgate serve -c node.toml``: one node as a service.

The TOML file holds :class:`~meshgate.GatewayConfig` fields at the top level
(``[gateways]`` maps remote cluster names to URL lists; ``[[users]]`` entries
take ``token``, ``account`` and optional ``publish``/``subscribe`` tables with
``allow``/``deny`` lists).  Once listening, the node prints one JSON line with
its bound URLs on standard output; SIGINT or SIGTERM stops it gracefully; SIGHUP
re-reads the file and applies users, permissions and limits (it logs which other
changes need a restart).
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from ._errors import MeshgateError
from ._shell import Gateway, open_gateway
from .config import ConfigError, GatewayConfig, check_mapping


def _line_of(text: str, field: str) -> int | None:
    """The line where a top-level key or table is set, for error messages."""
    key = field.split(".")[0].split("[")[0]
    pattern = re.compile(rf"^\s*(\[\[?\s*{re.escape(key)}\s*\]\]?|{re.escape(key)}\s*=)")
    for n, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return n
    return None


def check_file(path: str | Path) -> list[str]:
    """Every error in a configuration file, each naming its field (and line)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        return [f"{path}: {exc}"]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"{path}: TOML syntax: {exc}"]
    out = []
    for err in check_mapping(data):
        line = _line_of(text, err.field)
        where = f"{path}:{line}" if line else str(path)
        out.append(f"{where}: {err.field}: {err.problem}")
    return out


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> GatewayConfig:
    """Read a node configuration from a TOML file; errors name the field.
    ``overrides`` replace top-level keys of the file (a worker's own ports and name)."""
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("toml", str(exc)) from None
    if overrides:
        data.update(overrides)
    return GatewayConfig.from_mapping(data)


def _reload(gw: Gateway, path: str | Path, overrides: Mapping[str, Any] | None = None) -> None:
    """SIGHUP: re-read the file and apply what can change while running."""
    log = logging.getLogger("meshgate")
    errors = check_file(path)
    if errors:
        for e in errors:
            log.error("reload refused, the running configuration stays: %s", e)
        return
    try:
        restart = gw.reconfigure(load_config(path, overrides))
    except (ConfigError, OSError) as exc:
        log.error("reload refused, the running configuration stays: %s", exc)
        return
    log.warning(
        "configuration reloaded%s",
        f"; these need a restart and were not applied: {', '.join(restart)}" if restart else "",
    )


async def _run(
    config: GatewayConfig,
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> None:
    signals_wanted = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    with trio.open_signal_receiver(*signals_wanted) as signals:
        async with open_gateway(config) as gw:
            ready = {
                "name": config.name,
                "cluster": config.cluster,
                "client_url": gw.client_url,
                "cluster_url": gw.cluster_url,
                "gateway_url": gw.gateway_url,
                "nats_urls": list(gw.nats_urls),
            }
            print(json.dumps(ready), flush=True)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if path is not None:
                        _reload(gw, path, overrides)
                    continue
                logging.getLogger("meshgate").info("signal %d: lame duck, then drain", signum)
                # new connections are refused, clients are asked to move to other nodes
                # a few at a time, then every connection is told and closed; a second
                # signal stops at once
                with trio.CancelScope() as moving:

                    async def second_signal() -> None:
                        async for again in signals:
                            if again != signal.SIGHUP:
                                moving.cancel()
                                return

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(second_signal)
                        await gw.lame_duck()
                        nursery.cancel_scope.cancel()
                break


def serve_main(
    path: str,
    *,
    verbose: int = 0,
    check: bool = False,
    workers: int = 1,
    overrides: Mapping[str, Any] | None = None,
) -> int:
    """Run a node until SIGINT/SIGTERM; exit status 2 for a bad configuration.

    With ``check``, only validate: print every error (or "ok") and exit 2 or 0.  With
    ``workers`` > 1, run that many node processes sharing the client port
    (:func:`meshgate.workers.open_workers`).  ``overrides`` replace keys of the file
    (how a pool configures each worker).
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if check:
        errors = check_file(path)
        for e in errors:
            print(e, file=sys.stderr)
        if not errors:
            print(f"{path}: ok")
        return 2 if errors else 0
    errors = check_file(path)
    if errors:
        for e in errors:
            print(f"meshgate serve: {e}", file=sys.stderr)
        return 2
    try:
        config = load_config(path, overrides)
    except (ConfigError, OSError) as exc:
        print(f"meshgate serve: {path}: {exc}", file=sys.stderr)
        return 2
    if workers > 1:
        try:
            trio.run(_run_workers, path, workers, verbose)
        except MeshgateError as exc:
            print(f"meshgate serve: {exc}", file=sys.stderr)
            return 2
        return 0
    trio.run(_run, config, path, overrides)
    return 0


async def _run_workers(path: str, workers: int, verbose: int) -> None:
    """``serve --workers N``: the pool's ready line, then signals until SIGINT/SIGTERM
    (SIGHUP goes to every worker)."""
    from .workers import open_workers

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with open_workers(path, workers, verbose=verbose) as pool:
            print(json.dumps(pool.ready_line()), flush=True)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    pool.signal_all(signal.SIGHUP)
                    continue
                break
