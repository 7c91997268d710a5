"""All cores of one machine: N node processes behind one client port.

A node is one trio thread in one process, so it uses one core.  :func:`open_workers`
(and ``meshgate serve --workers N``) runs N node processes from one configuration
file.  They share the client, NATS and gateway ports (``SO_REUSEPORT``: the kernel
spreads new connections over them) and form a cluster of routes among themselves, so
a client on any worker reaches subscribers on every other, exactly as across the nodes
of any cluster.  Each worker gets its own route port (loopback and a secret only the
workers know, unless the file configures ``cluster_listen``), its own name
(``<name>-<i>``) and, if the file sets ``monitor_listen`` with a port, that port plus
its index.

The pool restarts a worker that dies (its clients reconnect to the shared port and
land on the others meanwhile); SIGHUP reaches every worker (each re-reads the file);
leaving the pool stops them gracefully (lame duck, as SIGTERM does to one node).
"""

from __future__ import annotations

__all__ = ["WorkerInfo", "WorkerPool", "open_workers"]

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ._compiled import CORE
from ._errors import MeshgateError
from ._nursery import open_unwrapping_nursery
from .config import GatewayConfig
from .transports import split_url

log = logging.getLogger("meshgate.workers")

#: how long a worker may take to start listening
START_TIMEOUT = 30.0
#: first and longest wait before restarting a worker that died
RESTART_BACKOFF = (0.5, 30.0)


@attrs.define
class WorkerInfo:
    """One worker process as the pool last saw it."""

    #: 0 .. N-1
    index: int
    #: the node's name, ``<name>-<index>``
    name: str
    #: the process id (changes when the worker is restarted)
    pid: int
    #: the URLs the worker reported when it started (``client_url``, ``cluster_url``, ...)
    urls: dict[str, Any]
    #: how often this worker has been restarted
    restarts: int = 0


class WorkerPool:
    """The running workers of :func:`open_workers`."""

    def __init__(
        self, config_file: Path, config: GatewayConfig, verbose: int, log_format: str = "text"
    ) -> None:
        self._file = config_file
        #: the file's configuration, which each worker's is derived from
        self._config = config
        #: the secret of the workers' own routes, when the file configures none
        self._secret = (
            secrets.token_urlsafe(32)
            if config.cluster_secret is None and config.cluster_listen is None
            else None
        )
        self._verbose = verbose
        self._log_format = log_format
        self._procs: dict[int, trio.Process] = {}
        self._stopping = False
        self._changed = trio.Event()
        self._infos: dict[int, WorkerInfo] = {}
        #: the shared client URL (None if the file disables the client port)
        self.client_url: str | None = None
        #: the shared NATS port URLs
        self.nats_urls: tuple[str, ...] = ()
        #: the shared gateway URL, if the file configures a gateway listener
        self.gateway_url: str | None = None

    @property
    def stopping(self) -> bool:
        """The pool is stopping its workers (they are not restarted any more)."""
        return self._stopping

    @property
    def workers(self) -> list[WorkerInfo]:
        """Every worker, by index."""
        return [self._infos[i] for i in sorted(self._infos)]

    def ready_line(self) -> dict[str, Any]:
        """What ``meshgate serve --workers`` prints once every worker listens."""
        first = self.workers[0].urls
        return {
            "name": first.get("name"),
            "cluster": first.get("cluster"),
            "client_url": self.client_url,
            "cluster_url": first.get("cluster_url"),
            "gateway_url": self.gateway_url,
            "nats_urls": list(self.nats_urls),
            "core": CORE,
            "workers": [{"index": w.index, "pid": w.pid, **w.urls} for w in self.workers],
        }

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every running worker (SIGHUP: each re-reads the file)."""
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(signum)

    async def wait_restarts(self, total: int) -> None:
        """Wait until the workers have been restarted ``total`` times in all."""
        while sum(w.restarts for w in self._infos.values()) < total:
            await self._changed.wait()

    # -- internals ----------------------------------------------------------------------------

    def _overrides(self, index: int) -> dict[str, Any]:
        cfg = self._config
        out: dict[str, Any] = {"name": f"{cfg.name}-{index}", "reuse_port": True}
        if cfg.cluster_listen is None:
            out["cluster_listen"] = "127.0.0.1:0"
        else:
            scheme, host, _ = split_url(cfg.cluster_listen)
            out["cluster_listen"] = f"{scheme}://{host}:0"
        if self._secret is not None:
            out["cluster_secret"] = self._secret
        own = [w.urls.get("cluster_url") for w in self._infos.values() if w.index != index]
        out["routes"] = [*cfg.routes, *(u for u in own if u)]
        if self.client_url is not None:
            out["listen"] = self.client_url
        if self.nats_urls:
            out["nats_listen"] = list(self.nats_urls)
        if self.gateway_url is not None:
            out["gateway_listen"] = self.gateway_url
        monitor = cfg.monitor_listen
        if monitor is not None:
            _, host, port = split_url(monitor)
            out["monitor_listen"] = f"{host}:{port + index if port else 0}"
        return out

    async def _start(self, index: int) -> None:
        """Start worker ``index`` and wait for its ready line."""
        cmd = [sys.executable, "-m", "meshgate", "serve", "-c", str(self._file)]
        cmd += ["-v"] * self._verbose if self._verbose >= 0 else ["-q"]
        cmd += ["--log-format", self._log_format]
        # on standard input, not the command line: other users can read command lines,
        # and the overrides may hold the workers' route secret
        cmd += ["--worker-overrides", "-"]
        proc = await trio.lowlevel.open_process(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin is not None
        assert proc.stdout is not None
        async with proc.stdin:
            await proc.stdin.send_all(json.dumps(self._overrides(index)).encode() + b"\n")
        line = b""
        try:
            with trio.fail_after(START_TIMEOUT):
                while not line.endswith(b"\n"):
                    chunk = await proc.stdout.receive_some(4096)
                    if not chunk:
                        raise MeshgateError(
                            f"worker {index} exited before listening (status {await proc.wait()})"
                        )
                    line += chunk
        except BaseException:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
            raise
        urls = json.loads(line.split(b"\n", 1)[0])
        self._procs[index] = proc
        old = self._infos.get(index)
        self._infos[index] = WorkerInfo(
            index, urls["name"], proc.pid, urls, old.restarts if old else 0
        )
        if index == 0:
            self.client_url = urls.get("client_url")
            self.nats_urls = tuple(urls.get("nats_urls") or ())
            self.gateway_url = urls.get("gateway_url")
        if self._stopping:  # started while the pool stops: stop it too
            proc.send_signal(signal.SIGTERM)

    async def _watch(self, index: int) -> None:
        """Restart worker ``index`` whenever it dies, with a growing back-off while it
        keeps dying young."""
        wait = RESTART_BACKOFF[0]
        while True:
            proc = self._procs[index]
            started = trio.current_time()
            assert proc.stdout is not None
            async with proc.stdout:
                while await proc.stdout.receive_some(4096):
                    pass  # nothing more is printed; never let the pipe fill
            status = await proc.wait()
            if self._stopping:
                return
            log.warning("worker %d (pid %d) exited with %s; restarting", index, proc.pid, status)
            if trio.current_time() - started > 60:
                wait = RESTART_BACKOFF[0]
            while True:
                await trio.sleep(wait)
                wait = min(wait * 2, RESTART_BACKOFF[1])
                if self.stopping:
                    return
                try:
                    await self._start(index)
                    break
                except (MeshgateError, OSError, ValueError, trio.TooSlowError) as exc:
                    log.error("worker %d did not restart: %s", index, exc)
            self._infos[index].restarts += 1
            self._changed.set()
            self._changed = trio.Event()

    async def _stop(self) -> None:
        self._stopping = True
        self.signal_all(signal.SIGTERM)
        with trio.move_on_after(RESTART_BACKOFF[1]) as slow:
            for proc in self._procs.values():
                await proc.wait()
        if slow.cancelled_caught:
            for proc in self._procs.values():
                if proc.returncode is None:
                    proc.kill()
            for proc in self._procs.values():
                await proc.wait()


def _read_config(config_file: Path) -> GatewayConfig:
    """The file's configuration, validated whole, with ports that workers can share."""
    with open(config_file, "rb") as f:
        data = tomllib.load(f)
    config = GatewayConfig.from_mapping(data)  # raises ConfigError naming the field
    for url in (*(u for _, u in config.client_listeners), *config.nats_listen):
        if split_url(url)[0] not in ("tcp", "tls", "ws"):
            raise MeshgateError(f"workers share ports over TCP; {url!r} cannot be shared")
    return config


@asynccontextmanager
async def open_workers(
    config_file: str | os.PathLike[str],
    workers: int,
    *,
    verbose: int = 0,
    log_format: str = "text",
) -> AsyncIterator[WorkerPool]:
    """Run ``workers`` node processes from one TOML configuration file for the duration
    of the block (see the module's description); the pool's URLs are the shared ones.

    The workers are processes (``python -m meshgate serve``), so they take a file, not
    a :class:`GatewayConfig` (which may hold TLS contexts that cannot cross a process
    boundary).  On exit they are stopped gracefully, then killed after 30 s.  Each
    worker logs to the pool's standard error (``verbose`` and ``log_format`` as
    ``meshgate serve`` takes them); each reports its own ``monitor_url``."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    path = Path(config_file)
    pool = WorkerPool(path, _read_config(path), verbose, log_format)
    async with open_unwrapping_nursery() as nursery:
        try:
            await pool._start(0)  # first: it binds the shared ports (port 0 picks them)
            async with trio.open_nursery() as starting:
                for i in range(1, workers):
                    starting.start_soon(pool._start, i)
            for i in range(workers):
                nursery.start_soon(pool._watch, i)
            yield pool
        finally:
            with trio.CancelScope(shield=True):
                await pool._stop()
            nursery.cancel_scope.cancel()
