"""The dialers of a node: routes to the seeds and gossiped URLs of its cluster, one
outbound gateway per remote cluster, the backbone; jittered backoff, never a hot loop.

They are given a ``serve(stream, kind, ...)`` callable (the node runs what they open)
and a :class:`TopologyView` (what is connected, what is known, a wake-up when that
changes); they know neither the node nor its core, and decide nothing about routing.
"""

from __future__ import annotations

__all__ = ["DialState", "Dialers", "LinkOutcome", "Serve", "TopologyView"]

import itertools
import logging
import random
import ssl
import time
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs
import trio

from ..protocol import ConnectionKind
from ..transports import connect_stream

if TYPE_CHECKING:
    from ..config import GatewayConfig

log = logging.getLogger("meshgate.gateway")


#: a dialer logs each of its first failures in a row, then every LOG_EVERY_NTH-th (a
#: configured seed that stays down is retried forever)
LOG_EVERY_FAILURE = 5
LOG_EVERY_NTH = 10


#: How a link ended, for its dialer's backoff: ``"up"`` (its handshake completed; it
#: ended some other way than as a slow consumer), ``"never-up"`` (it ended before its
#: handshake completed: a hung or refusing peer), ``"stuck"`` (closed as a slow consumer).
LinkOutcome = Literal["up", "never-up", "stuck"]


def _stuck_streak(outcome: LinkOutcome | None, streak: int) -> int:
    """Links closed as slow consumers in a row, counting the attempts after one that
    never came up (the peer still hangs): the dialer's backoff grows with it; a link
    that comes up ends the streak.  ``outcome`` None: nothing connected."""
    if outcome == "stuck" or (outcome == "never-up" and streak):
        return streak + 1
    return 0 if outcome == "up" else streak


@attrs.define
class DialState:
    """What one dialer is doing (a route URL, a remote cluster, or the backbone), for
    monitoring (``/gatewayz``, ``/routez``, ``/healthz?ready=1``) and the logs."""

    #: ``"route"``, ``"gateway"`` or ``"backbone"``
    kind: str
    #: the route URL, the remote cluster's name, or ``"backbone"``
    target: str
    #: configured (retried forever) rather than learned by gossip
    configured: bool
    #: ``"dialing"`` (an attempt is under way), ``"connected"`` (a link it opened is
    #: being served, or one exists the other way) or ``"backoff"`` (waiting to retry)
    state: str = "dialing"
    #: failed attempts (passes, for a gateway or the backbone) in a row
    failures: int = 0
    #: why the last attempt failed, or None
    last_error: str | None = None
    #: when it failed (wall clock, ``time.time()``), or None
    last_error_at: float | None = None
    #: the wait before the next attempt, in seconds (during ``"backoff"``)
    retry_in: float | None = None


class Serve(Protocol):
    """Runs one connection the dialers opened, until it ends."""

    async def __call__(
        self,
        stream: trio.abc.Stream,
        kind: ConnectionKind,
        *,
        dialed: bool = False,
        expected_cluster: str | None = None,
        backbone: bool = False,
        connect_time: float | None = None,
    ) -> LinkOutcome:
        """Serve ``stream`` as a connection of ``kind`` until it ends; how it ended
        (``connect_time``: how long connecting took, an estimate of the round trip)."""


class TopologyView(Protocol):
    """What the dialers ask about the node's links, and the changes they wait for."""

    def has_outbound_gateway(self, cluster: str) -> bool:
        """An outbound gateway connection to ``cluster`` is up."""

    def gateway_urls(self, cluster: str) -> tuple[str, ...]:
        """The gateway URLs known for ``cluster``'s nodes."""

    def is_own_route_url(self, url: str) -> bool:
        """``url`` leads to this node itself."""

    def has_route_to(self, url: str) -> bool:
        """A route to the node at ``url`` is up (either direction)."""

    def backbone_urls(self) -> tuple[str, ...]:
        """Backbone URLs the hub told this node about."""

    def backbone_error(self) -> str | None:
        """The last error the backbone hub sent, or None."""

    async def next_routes_change(self) -> None:
        """Wait for the next change of the routes."""

    async def next_gateways_change(self) -> None:
        """Wait for the next change of the gateway connections."""


class Dialers:
    """Keeps the node's routes, outbound gateways and backbone dialed."""

    def __init__(self, config: GatewayConfig, serve: Serve, topology: TopologyView) -> None:
        #: the node's configuration (replaced by the node on reconfigure)
        self.config = config
        self._serve = serve
        self._topology = topology
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._gateway_dialers: set[str] = set()
        self._dialing: set[str] = set()
        #: orders dial attempts across dialers (see ``_serve_first_of``)
        self._attempts = itertools.count()
        #: set (and replaced) when a dial fails
        self._failure = trio.Event()
        #: each running dialer's state, by (kind, target)
        self._states: dict[tuple[str, str], DialState] = {}

    def states(self) -> list[DialState]:
        """A copy of every running dialer's state, by kind and target."""
        return [attrs.evolve(s) for _, s in sorted(self._states.items())]

    def start(self, nursery: trio.Nursery) -> None:
        """The node serves: dial the configured routes, gateways and backbone (in
        ``nursery``), and from now on whatever :meth:`dial_route` and
        :meth:`dial_gateway` ask for."""
        self._nursery = nursery
        cfg = self.config
        if cfg.gateway_listen is not None:
            for cluster in cfg.gateways:
                if cluster != cfg.cluster:
                    self._start_gateway_dialer(cluster, explicit=True)
        if cfg.cluster_listen is not None:
            for url in cfg.routes:
                self._start_dialer(url, explicit=True)
        if cfg.backbone:
            nursery.start_soon(self._dial_backbone)

    def stop(self) -> None:
        """The node is stopping: start no more dialers; the backbone dialer gives up."""
        self._stopping = True

    def dial_route(self, url: str) -> None:
        """Keep a route to ``url``, learned by gossip (``connect_retries`` failed attempts)."""
        self._start_dialer(url, explicit=False)

    def dial_gateway(self, cluster: str) -> None:
        """Keep an outbound gateway connection to ``cluster`` (forever if configured,
        ``connect_retries`` failed passes if discovered)."""
        self._start_gateway_dialer(cluster, explicit=cluster in self.config.gateways)

    async def _backoff(self, failures: int, state: DialState, failed: bool) -> None:
        """Wait before the next dial: jittered, growing with failures (and links closed
        as slow consumers in a row) by 1.5x each, to 10x ``reconnect_wait``, and never
        zero (no hot loop).  A failed attempt is logged with its error and the wait."""
        delay = self.config.reconnect_wait * min(10.0, 1.5 ** min(failures, 8))
        delay *= random.uniform(0.5, 1.0)
        state.state, state.retry_in = "backoff", round(delay, 3)
        n = state.failures
        if failed and (n <= LOG_EVERY_FAILURE or n % LOG_EVERY_NTH == 0):
            log.info(
                "%s %s: dial failed (%d in a row): %s; next attempt in %.2fs%s",
                state.kind,
                state.target,
                n,
                state.last_error,
                delay,
                f" (from now on every {LOG_EVERY_NTH}th failure is logged)"
                if n == LOG_EVERY_FAILURE
                else "",
            )
        await trio.sleep(delay)
        state.state, state.retry_in = "dialing", None

    def _state(self, kind: str, target: str, configured: bool) -> DialState:
        state = self._states[kind, target] = DialState(kind, target, configured)
        return state

    def _failed(self, state: DialState, error: str) -> None:
        state.last_error, state.last_error_at = error, time.time()
        self._failure.set()
        self._failure = trio.Event()

    async def next_failure(self) -> None:
        """Wait until a dial fails (its :class:`DialState` has the error)."""
        await self._failure.wait()

    async def _serve_first_of(
        self,
        urls: list[str],
        lost_at: dict[str, int],
        ssl_context: ssl.SSLContext | None,
        kind: ConnectionKind,
        state: DialState,
        **serve: Any,
    ) -> tuple[str | None, LinkOutcome | None]:
        """One pass over ``urls``: serve the first that connects until its connection
        ends; the URL served and how its link ended, or None, None if none connected.
        ``lost_at`` remembers when each URL last failed or lost its connection: those
        are tried last, the longest ago first, so a hung or dead node is not picked
        again while another is untried."""
        cfg = self.config
        random.shuffle(urls)
        for gone in [u for u in lost_at if u not in urls]:  # forget departed URLs
            del lost_at[gone]
        urls.sort(key=lambda u: lost_at.get(u, -1))
        if not urls:
            self._failed(state, "no URL known")
        for url in urls:
            lost_at[url] = next(self._attempts)  # kept if this attempt fails or ends
            try:
                started = trio.current_time()
                with trio.move_on_after(max(2.0, cfg.reconnect_wait)) as scope:
                    cm = connect_stream(url, ssl_context=ssl_context)
                    stream = await cm.__aenter__()
                if scope.cancelled_caught:
                    self._failed(state, f"{url}: connect timed out")
                    continue
                serve["connect_time"] = trio.current_time() - started
            except OSError as exc:
                log.debug("%s via %s failed: %s", kind.value, url, exc)
                self._failed(state, f"{url}: {exc.strerror or exc}")
                continue
            state.state, state.failures = "connected", 0
            try:
                outcome = await self._serve(stream, kind, dialed=True, **serve)
            finally:
                with trio.CancelScope(shield=True):
                    await cm.__aexit__(None, None, None)
            return url, outcome
        return None, None

    def _start_gateway_dialer(self, cluster: str, *, explicit: bool) -> None:
        if (
            cluster in self._gateway_dialers
            or cluster == self.config.cluster
            or self._nursery is None
            or self._stopping
            or self.config.gateway_listen is None
        ):
            return
        self._gateway_dialers.add(cluster)
        self._nursery.start_soon(self._dial_gateway, cluster, explicit)

    async def _dial_gateway(self, cluster: str, explicit: bool) -> None:
        """Keep exactly one outbound connection to ``cluster``, landing on any of its nodes.

        Configured clusters are retried forever, discovered ones for ``connect_retries``
        failed passes.  Every pass is followed by a jittered wait: never a hot loop.
        """
        topology = self._topology
        cfg = self.config
        failures = stuck = 0
        lost_at: dict[str, int] = {}
        state = self._state("gateway", cluster, explicit)
        try:
            while True:
                if topology.has_outbound_gateway(cluster):
                    state.state = "connected"
                    await topology.next_gateways_change()
                    continue
                state.state = "dialing"
                served, outcome = await self._serve_first_of(
                    list(topology.gateway_urls(cluster)),
                    lost_at,
                    cfg.gateway_tls_dial,
                    ConnectionKind.GATEWAY_OUTBOUND,
                    state,
                    expected_cluster=cluster,
                )
                connected = served is not None
                failures = 0 if connected else failures + 1
                state.failures = failures
                stuck = _stuck_streak(outcome, stuck)
                if not explicit and failures > cfg.connect_retries:
                    log.info(
                        "gateway %s: giving up on this discovered cluster after %d failed "
                        "passes (last error: %s)",
                        cluster,
                        failures,
                        state.last_error,
                    )
                    return
                await self._backoff(failures + stuck, state, not connected)
        finally:
            self._gateway_dialers.discard(cluster)
            self._states.pop(("gateway", cluster), None)

    def _start_dialer(self, url: str, *, explicit: bool) -> None:
        if url in self._dialing or self._nursery is None or self._stopping:
            return
        self._dialing.add(url)
        self._nursery.start_soon(self._dial_route, url, explicit)

    async def _dial_route(self, url: str, explicit: bool) -> None:
        """Keep a route to ``url``: forever for a configured seed, ``connect_retries``
        failed attempts for a URL learned by gossip.  Always waits between attempts."""
        topology = self._topology
        cfg = self.config
        failures = stuck = 0
        state = self._state("route", url, explicit)
        try:
            while True:
                if topology.is_own_route_url(url):
                    return
                if topology.has_route_to(url):
                    state.state = "connected"
                    await topology.next_routes_change()  # a route to it exists (either way)
                    continue
                state.state = "dialing"
                failed = False
                try:
                    started = trio.current_time()
                    async with connect_stream(url, ssl_context=cfg.cluster_tls_dial) as stream:
                        failures = state.failures = 0
                        state.state = "connected"
                        outcome = await self._serve(
                            stream,
                            ConnectionKind.ROUTE,
                            dialed=True,
                            connect_time=trio.current_time() - started,
                        )
                        stuck = _stuck_streak(outcome, stuck)
                except OSError as exc:
                    failures = state.failures = failures + 1
                    failed = True
                    self._failed(state, exc.strerror or str(exc))
                    if not explicit and failures > cfg.connect_retries:
                        log.info(
                            "route %s: giving up on this gossiped URL after %d failed "
                            "attempts (last error: %s)",
                            url,
                            failures,
                            state.last_error,
                        )
                        return
                if topology.is_own_route_url(url):
                    return
                await self._backoff(failures + stuck, state, failed)
        finally:
            self._dialing.discard(url)
            self._states.pop(("route", url), None)

    async def _dial_backbone(self) -> None:
        """Keep one leafnode connection to the nats-server backbone: every configured
        URL and every URL the hub told us about, the ones that failed or were lost
        last tried last; jittered backoff between passes, forever."""
        topology = self._topology
        cfg = self.config
        failures = stuck = 0
        lost_at: dict[str, int] = {}
        state = self._state("backbone", "backbone", True)
        scheme = "tls" if cfg.backbone[0].startswith("tls://") else "tcp"
        tls = cfg.backbone_tls if scheme == "tls" else None
        while not self._stopping:
            urls = list(dict.fromkeys(_dial_url(u, scheme) for u in cfg.backbone))
            learned = (_dial_url(u, scheme) for u in topology.backbone_urls())
            urls += [u for u in learned if u not in urls]
            state.state = "dialing"
            served, outcome = await self._serve_first_of(
                urls, lost_at, tls, ConnectionKind.ROUTE, state, backbone=True
            )
            error = topology.backbone_error()
            if served is not None and error:
                log.warning("backbone %s: %s", served, error)
                self._failed(state, error)
            connected = served is not None
            failures = state.failures = 0 if connected else failures + 1
            stuck = _stuck_streak(outcome, stuck)
            await self._backoff(failures + stuck, state, not connected)


def _dial_url(url: str, scheme: str) -> str:
    """A backbone URL as the transports dial it: ``nats://`` is TCP, credentials are
    sent in CONNECT (not part of the address)."""
    rest = url.split("://", 1)[1] if "://" in url else url
    given = url.split("://", 1)[0] if "://" in url else None
    host = rest.rpartition("@")[2].rstrip("/")
    return f"{'tls' if given == 'tls' or (given is None and scheme == 'tls') else 'tcp'}://{host}"
