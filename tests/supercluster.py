"""Build in-process super-clusters for tests (memory or TCP transports)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import meshgate

_ids = itertools.count()


def _listen(scheme: str, what: str) -> str:
    return "127.0.0.1:0" if scheme == "tcp" else f"memory://{what}-{next(_ids)}"


@asynccontextmanager
async def supercluster(
    sizes: dict[str, int],
    *,
    scheme: str = "memory",
    topology: str = "star",
    extra: Callable[[str, int], dict[str, Any]] | None = None,
) -> AsyncIterator[dict[str, list[meshgate.Gateway]]]:
    """Clusters named by ``sizes`` (in order), nodes ``<cluster><i>``.

    Minimal configuration: the second and later nodes of a cluster know one route seed;
    only the first node of each non-first cluster knows one gateway URL — of the first
    cluster (``star``) or of the previous cluster (``chain``).  Gossip does the rest.
    Returns once every node has an outbound to every other cluster and every peer has
    registered it.
    """
    names = list(sizes)
    async with AsyncExitStack() as stack:
        out: dict[str, list[meshgate.Gateway]] = {}
        for ci, cluster in enumerate(names):
            out[cluster] = []
            for i in range(sizes[cluster]):
                gateways: dict[str, list[str]] = {}
                if i == 0 and ci > 0:
                    target = names[0] if topology == "star" else names[ci - 1]
                    url = out[target][0].gateway_url
                    assert url
                    gateways[target] = [url]
                seeds = (out[cluster][0].cluster_url,) if i else ()
                kw: dict[str, Any] = {
                    "name": f"{cluster.lower()}{i}",
                    "cluster": cluster,
                    "listen": _listen(scheme, "client"),
                    "cluster_listen": _listen(scheme, "route"),
                    "routes": seeds,
                    "gateway_listen": _listen(scheme, "gw"),
                    "gateways": gateways,
                    "reconnect_wait": 0.05,
                }
                if extra is not None:
                    kw.update(extra(cluster, i))
                gw = await stack.enter_async_context(
                    meshgate.open_gateway(meshgate.GatewayConfig(**kw))
                )
                out[cluster].append(gw)
        everyone = [g for gs in out.values() for g in gs]
        for gs in out.values():
            for g in gs:
                await g.wait_routes(len(gs) - 1)
                await g.wait_gateways(len(names) - 1)
        await settle(everyone)
        yield out


async def settle(gateways: list[meshgate.Gateway], clients: list[meshgate.Client] = ()) -> None:  # type: ignore[assignment]
    """Everything sent so far has been processed everywhere and reached client buffers.

    Round trips on client connections, routes and gateways, twice over (a message may
    cross a gateway and then a route).
    """
    for _ in range(2):
        for c in clients:
            await c.flush()
        for g in gateways:
            await g.flush_gateways()
        for g in gateways:
            await g.flush_routes()
    for c in clients:
        await c.flush()
