"""Example: three clusters joined into a super-cluster, in one process, over loopback TCP.

Only one URL is configured per cluster (each knows cluster A); gossip and dial-back
form the full mesh.  A publisher in cluster B reaches a subscriber in cluster C, a
queue group is served by one cluster only, and a request crosses clusters.

Run: ``python examples/supercluster.py``
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio

import meshgate


async def main() -> None:
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            nodes: dict[str, meshgate.Gateway] = {}
            for cluster in ("A", "B", "C"):
                seed = {"A": [nodes["A"].gateway_url]} if nodes else {}
                cfg = meshgate.GatewayConfig(
                    name=f"{cluster.lower()}1",
                    cluster=cluster,
                    listen="127.0.0.1:0",
                    gateway_listen="127.0.0.1:0",
                    gateways=seed,  # type: ignore[arg-type]
                    reconnect_wait=0.1,
                )
                nodes[cluster] = await stack.enter_async_context(meshgate.open_gateway(cfg))
            for gw in nodes.values():
                await gw.wait_gateways(outbound=2)
            for gw in nodes.values():
                await gw.flush_gateways()  # every peer has registered our outbound
            for cluster, gw in nodes.items():
                st = gw.statistics()
                print(f"{cluster}: outbound={st.outbound_gateways} inbound={st.inbound_gateways}")

            b = await stack.enter_async_context(meshgate.connect(nodes["B"].client_url))  # type: ignore[arg-type]
            c = await stack.enter_async_context(meshgate.connect(nodes["C"].client_url))  # type: ignore[arg-type]
            ships = await stack.enter_async_context(c.subscribe("ship.*.pos"))
            await c.flush()
            # optimistic mode: B forwards until C says it does not want a subject
            await b.publish("ship.7.pos", b"x=1,y=2")
            msg = await ships.receive()
            print(f"C received {msg.subject} {msg.payload!r} from B")

            echo = await stack.enter_async_context(c.subscribe("svc.echo", queue="workers"))

            async def serve() -> None:
                async for m in echo:
                    assert m.reply
                    await c.publish(m.reply, m.payload.upper())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                await c.flush()
                await nodes["C"].flush_gateways()
                answer = await b.request("svc.echo", b"hello from B")
                print(f"B got the reply {answer.payload!r} across the gateway")
                nursery.cancel_scope.cancel()
            print("gatewayz(A):", sorted(nodes["A"].gatewayz()["outbound_gateways"]))


if __name__ == "__main__":
    trio.run(main)
