"""The dialers: after a failed or hung node, another node of the cluster is tried first."""

from __future__ import annotations

import itertools

import trio

import meshgate


async def test_the_gateway_dialer_tries_another_node_after_a_hung_one() -> None:
    """Both nodes of cluster B accept TCP and never answer (hung).  Each attempt times
    out (``auth_timeout``); the next one must go to the other node, never to the one
    that just failed while another is untried: A, B, A, B, ... in some order."""
    attempts: list[str] = []
    enough = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            urls = []
            for label in ("b0", "b1"):
                listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                port = listeners[0].socket.getsockname()[1]
                urls.append(f"tcp://127.0.0.1:{port}")

                async def hang(stream: trio.SocketStream, label: str = label) -> None:
                    attempts.append(label)
                    if len(attempts) >= 8:
                        enough.set()
                    async with stream:
                        while await stream.receive_some():  # reads, never answers
                            pass

                nursery.start_soon(trio.serve_listeners, hang, listeners)
            cfg = meshgate.GatewayConfig(
                name="a0",
                cluster="A",
                listen="127.0.0.1:0",
                gateway_listen="127.0.0.1:0",
                gateways={"B": tuple(urls)},
                auth_timeout=0.2,
                reconnect_wait=0.01,
            )
            async with meshgate.open_gateway(cfg):
                await enough.wait()
            nursery.cancel_scope.cancel()
    pairs = list(itertools.pairwise(attempts))
    assert all(a != b for a, b in pairs), attempts


async def test_wait_dial_failure_wakes_on_the_next_failed_dial() -> None:
    """A gateway to a port nobody serves: each attempt fails, and
    ``wait_dial_failure`` returns after the next one, with the error in dial_states."""
    dead = trio.socket.socket()
    await dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = dead.getsockname()[1]
    cfg = meshgate.GatewayConfig(
        name="a0",
        cluster="A",
        listen="127.0.0.1:0",
        gateway_listen="127.0.0.1:0",
        gateways={"Z": [f"127.0.0.1:{port}"]},
        reconnect_wait=0.05,
    )
    with trio.fail_after(10), dead:
        async with meshgate.open_gateway(cfg) as gw:
            for _ in range(2):  # two failures in a row, each waited for
                await gw.wait_dial_failure()
            (z,) = [d for d in gw.dial_states() if d.target == "Z"]
            assert z.last_error is not None
