"""``meshgate serve -c node.toml``: one node as a service.

The TOML file holds :class:`~meshgate.GatewayConfig` fields at the top level
(``[gateways]`` maps remote cluster names to URL lists; ``[[users]]`` entries
take ``token``, ``account`` and optional ``publish``/``subscribe`` tables with
``allow``/``deny`` lists).  Once listening, the node prints one JSON line with
its bound URLs on standard output (a listener that cannot start is one line on
standard error naming its field and address); SIGINT or SIGTERM stops it
gracefully; SIGHUP re-reads the file and applies users, permissions and limits (it
logs which other changes need a restart).
"""

from __future__ import annotations

import errno
import json
import logging
import re
import signal
import socket
import ssl
import sys
import tomllib
from collections.abc import AsyncIterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ._compiled import CORE
from ._errors import MeshgateError
from ._nursery import sole_exception
from ._shell import Gateway, open_gateway
from .config import ConfigError, GatewayConfig, check_mapping
from .logs import configure_logging
from .transports import get_transport, split_url


def _line_of(text: str, field: str) -> int | None:
    """The line where a top-level key or table is set, for error messages; for the
    i-th entry of an array of tables (``users[2]``), its ``[[users]]`` header."""
    head = field.split(".")[0]
    key, _, index = head.partition("[")
    pattern = re.compile(rf"^\s*(\[\[?\s*{re.escape(key)}\s*\]\]?|{re.escape(key)}\s*=)")
    entry = re.compile(rf"^\s*\[\[\s*{re.escape(key)}\s*\]\]")
    lines = text.splitlines()
    i = int(index[:-1]) if index[:-1].isdigit() else None
    if i is not None:
        headers = [n for n, line in enumerate(lines, 1) if entry.match(line)]
        if i < len(headers):
            return headers[i]
    for n, line in enumerate(lines, 1):
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
        gw.reconfigure(load_config(path, overrides))  # logs what changed (and what did not)
    except (ConfigError, OSError) as exc:
        log.error("reload refused, the running configuration stays: %s", exc)


class _StartFailed(Exception):
    """The node could not start; the message is the one line to print."""


#: how a listener's start-up failure reads, by errno
_REASONS = {
    errno.EADDRINUSE: "address in use",
    errno.EACCES: "permission denied",
    errno.EADDRNOTAVAIL: "address not available on this host",
}


def _reason(url: str, exc: BaseException) -> str:
    """A listener's start-up failure in a few words."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno in _REASONS:
        reason = _REASONS[exc.errno]
        if exc.errno == errno.EACCES:
            try:
                if 0 < split_url(url)[2] < 1024:
                    reason += " (ports below 1024 need privileges)"
            except MeshgateError:
                pass
        return reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _listener_setup(config: GatewayConfig, field: str) -> tuple[ssl.SSLContext | None, bool]:
    """The TLS context and port sharing a node listens on ``field`` with (as the shell
    does: client, gateway and NATS listeners are shared with ``reuse_port``)."""
    if field == "cluster_listen":
        return config.cluster_tls, False
    if field == "gateway_listen":
        return config.gateway_tls, config.reuse_port
    if field == "monitor_listen":
        return None, False
    return config.tls, config.reuse_port  # listen, nats_listen


async def _no_connections(stream: trio.abc.Stream) -> None:
    await trio.aclose_forcefully(stream)


async def _try_listen(
    url: str,
    ssl_context: ssl.SSLContext | None,
    reuse_port: bool,
    cert_files: tuple[str, str] | None = None,
) -> BaseException | None:
    """Listen at ``url`` and stop at once: why that fails, or None."""
    try:
        transport = get_transport(url)
        serve = partial(transport.serve, url, _no_connections, ssl_context=ssl_context)
        if getattr(transport, "needs_cert_files", False):  # QUIC: the [tls] files
            serve = partial(serve, cert_files=cert_files)
        elif reuse_port:
            serve = partial(serve, reuse_port=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            nursery.cancel_scope.cancel()
    except (OSError, MeshgateError) as exc:
        return exc
    except BaseExceptionGroup as group:
        sole = sole_exception(group)
        if isinstance(sole, OSError | MeshgateError):
            return sole
        raise
    return None


async def _start_failure(config: GatewayConfig, exc: OSError | MeshgateError) -> str:
    """The one line saying why the node did not start, naming the listener.

    The exception does not say which listener failed (``[Errno 98] Address already in
    use``), so each configured listener is tried again, alone, in the order the node
    binds them; the first that fails is named, with its own error.  If none fails now
    (the port was freed meanwhile), the line gives the node's error as it was."""
    for field, url in config.listeners:
        ssl_context, reuse_port = _listener_setup(config, field)
        files = None
        if config.tls_cert_file is not None and config.tls_key_file is not None:
            files = (config.tls_cert_file, config.tls_key_file)
        failure = await _try_listen(url, ssl_context, reuse_port, files)
        if failure is not None:
            return f"{field} {url}: {_reason(url, failure)}"
    return f"cannot start: {exc}"


async def _run(
    config: GatewayConfig,
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> None:
    signals_wanted = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    with trio.open_signal_receiver(*signals_wanted) as signals:
        started = False
        try:
            async with open_gateway(config) as gw:
                started = True
                await _serve_until_signalled(gw, config, signals, path, overrides)
        except (OSError, MeshgateError) as exc:
            if started:
                raise
            raise _StartFailed(await _start_failure(config, exc)) from exc


async def _serve_until_signalled(
    gw: Gateway,
    config: GatewayConfig,
    signals: AsyncIterator[int],
    path: str | Path | None,
    overrides: Mapping[str, Any] | None,
) -> None:
    """Print the ready line, then handle signals until SIGINT/SIGTERM has drained the node."""
    ready = {
        "name": config.name,
        "cluster": config.cluster,
        "client_url": gw.client_url,
        "client_urls": list(gw.client_urls),
        "cluster_url": gw.cluster_url,
        "gateway_url": gw.gateway_url,
        "nats_urls": list(gw.nats_urls),
        "monitor_url": gw.monitor_url,
        # which node core runs: "compiled" (mypyc) or "pure" (Python)
        "core": CORE,
    }
    print(json.dumps(ready), flush=True)
    logging.getLogger("meshgate").info(
        "ready: %s", ", ".join(f"{what} {url}" for what, url in gw.urls().items())
    )
    async for signum in signals:
        if signum == signal.SIGHUP:
            if path is not None:
                _reload(gw, path, overrides)
            continue
        logging.getLogger("meshgate").info(
            "signal %s: lame duck, then drain", signal.Signals(signum).name
        )
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
    log_format: str = "text",
) -> int:
    """Run a node until SIGINT/SIGTERM; exit status 2 for a bad configuration, 1 when a
    listener cannot start (one line names its field and address, no traceback).

    With ``check``, only validate: print every error (or "ok") and exit 2 or 0.  With
    ``workers`` > 1, run that many node processes sharing the client port
    (:func:`meshgate.workers.open_workers`).  ``overrides`` replace keys of the file
    (how a pool configures each worker).  Logs go to standard error at INFO (``verbose``
    1: DEBUG, -1: WARNING only), as text or, with ``log_format="json"``, one JSON object
    per line.
    """
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    configure_logging(level, log_format)
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
            trio.run(_run_workers, path, workers, verbose, log_format)
        except MeshgateError as exc:
            print(f"meshgate serve: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        trio.run(_run, config, path, overrides)
    except _StartFailed as exc:
        print(f"meshgate serve: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run_workers(path: str, workers: int, verbose: int, log_format: str) -> None:
    """``serve --workers N``: the pool's ready line, then signals until SIGINT/SIGTERM
    (SIGHUP goes to every worker)."""
    from .workers import open_workers

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with open_workers(path, workers, verbose=verbose, log_format=log_format) as pool:
            print(json.dumps(pool.ready_line()), flush=True)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    pool.signal_all(signal.SIGHUP)
                    continue
                break
