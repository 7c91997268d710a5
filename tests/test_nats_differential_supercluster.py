"""The same scenario on a nats-server super-cluster and on meshgate gives the same results.

Three clusters of one node.  Subscriptions (plain and queue groups) and publishes are
spread over the clusters from a seeded script.  Convergence is proven the same way on
both systems: each subscriber's last subscription is a probe subject that publishers
ping until it answers (interest frames travel in order on one connection), and every
publisher ends with a marker every subscriber waits for (each path is FIFO).

Compared: every plain subscription's multiset of messages, and each queue group's
total deliveries (which member, and which cluster, serves a group may differ).
"""

from __future__ import annotations

import random
import subprocess
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path

import trio

import meshgate

from ._nats import NatsTextClient, free_port, nats_server_binary, wait_for_port

CLUSTERS = ("A", "B", "C")
PATTERNS = ("ev.>", "ev.*", "ev.x", "ev.*.y", "other.>")
SUBJECTS = ("ev.x", "ev.z", "ev.x.y", "ev.q.y", "other.t", "nobody")


def script(seed: int = 7) -> tuple[list[tuple[int, str, str | None]], list[tuple[int, str]]]:
    """Subscriptions (client, pattern, queue) and publishes (client, subject); client i
    lives in cluster CLUSTERS[i % 3]."""
    rng = random.Random(seed)
    subs = [(rng.randrange(6), rng.choice(PATTERNS), None) for _ in range(12)]
    subs += [(rng.randrange(6), rng.choice(PATTERNS), rng.choice(("g1", "g2"))) for _ in range(8)]
    pubs = [(rng.randrange(6), rng.choice(SUBJECTS)) for _ in range(150)]
    return subs, pubs


Result = tuple[dict[int, Counter[tuple[str, bytes]]], Counter[str]]


def summarise(
    subs: list[tuple[int, str, str | None]], got: dict[int, list[tuple[str, bytes]]]
) -> Result:
    plain = {i: Counter(got[i]) for i, (_, _, q) in enumerate(subs) if q is None}
    groups: Counter[str] = Counter()
    for i, (_, _, q) in enumerate(subs):
        if q is not None:
            groups[q] += len(got[i])
    return plain, groups


# -- nats-server ----------------------------------------------------------------------------------


def run_nats() -> Result:
    binary = nats_server_binary()
    subs, pubs = script()
    ports = {c: (free_port(), free_port()) for c in CLUSTERS}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        procs = []
        for c in CLUSTERS:
            client_port, gw_port = ports[c]
            remotes = ", ".join(
                f'{{name: "{o}", urls: ["nats://127.0.0.1:{ports[o][1]}"]}}'
                for o in CLUSTERS
                if o != c
            )
            conf = Path(tmp) / f"{c}.conf"
            conf.write_text(
                f'server_name: "{c.lower()}0"\nlisten: "127.0.0.1:{client_port}"\n'
                f'gateway {{ name: "{c}", listen: "127.0.0.1:{gw_port}", gateways: [{remotes}] }}\n'
            )
            proc = subprocess.Popen(
                [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            procs.append(proc)
            stack.callback(lambda p=proc: (p.terminate(), p.wait(5)))
        for c, proc in zip(CLUSTERS, procs, strict=True):
            wait_for_port(ports[c][0], proc)
        clients = [NatsTextClient(ports[CLUSTERS[i % 3]][0]) for i in range(6)]
        for c in clients:
            stack.callback(c.close)
        sid_of: dict[tuple[int, int], int] = {}
        for i, (ci, pattern, queue) in enumerate(subs):
            q = f" {queue}" if queue else ""
            clients[ci].send(f"SUB {pattern}{q} {i + 1}\r\n".encode())
            sid_of[(ci, i + 1)] = i
        for ci, c in enumerate(clients):
            c.send(f"SUB probe.{ci} 1000\r\nSUB done.> 1001\r\n".encode())
            c.ping_collect()
        got: dict[int, list[tuple[str, bytes]]] = {i: [] for i in range(len(subs))}

        def take(ci: int, msgs: list[tuple[str, int, bytes]]) -> tuple[int, int]:
            probes = dones = 0
            for subject, sid, payload in msgs:
                if sid == 1000:
                    probes += 1
                elif sid == 1001:
                    dones += 1
                else:
                    got[sid_of[(ci, sid)]].append((subject, payload))
            return probes, dones

        # convergence: every publisher reaches every subscriber's probe
        for pi, p in enumerate(clients):
            for si, s in enumerate(clients):
                deadline = time.monotonic() + 20
                while True:
                    p.send(f"PUB probe.{si} 1\r\n{pi}\r\n".encode())
                    own = take(pi, p.ping_collect())[0]
                    if si == pi and own:
                        break
                    time.sleep(0.05)  # polling a foreign server's asynchronous gossip
                    if take(si, s.ping_collect())[0]:
                        break
                    assert time.monotonic() < deadline, "nats-server never converged"
        for n, (ci, subject) in enumerate(pubs):
            clients[ci].send(f"PUB {subject} {len(str(n))}\r\n{n}\r\n".encode())
        for ci, c in enumerate(clients):
            c.send(f"PUB done.{ci} 1\r\nx\r\n".encode())
        for si, s in enumerate(clients):
            dones = 0
            deadline = time.monotonic() + 20
            while dones < len(clients):
                dones += take(si, s.ping_collect())[1]
                assert time.monotonic() < deadline, "markers never arrived"
    return summarise(subs, got)


# -- meshgate -------------------------------------------------------------------------------------


async def run_meshgate_async() -> Result:
    subs, pubs = script()
    got: dict[int, list[tuple[str, bytes]]] = {i: [] for i in range(len(subs))}
    async with AsyncExitStack() as stack:
        gws: dict[str, meshgate.Gateway] = {}
        for c in CLUSTERS:
            others = {o: [gws[o].gateway_url] for o in gws}
            gws[c] = await stack.enter_async_context(
                meshgate.open_gateway(
                    meshgate.GatewayConfig(
                        name=f"{c.lower()}0",
                        cluster=c,
                        listen="127.0.0.1:0",
                        gateway_listen="127.0.0.1:0",
                        gateways=others,  # type: ignore[arg-type]
                        reconnect_wait=0.05,
                    )
                )
            )
        for gw in gws.values():
            await gw.wait_gateways(2)
        clients = [
            await stack.enter_async_context(meshgate.connect(gws[CLUSTERS[i % 3]].client_url))  # type: ignore[arg-type]
            for i in range(6)
        ]
        handles = []
        for i, (ci, pattern, queue) in enumerate(subs):
            handles.append(
                (i, await stack.enter_async_context(clients[ci].subscribe(pattern, queue=queue)))
            )
        probes = [
            await stack.enter_async_context(c.subscribe(f"probe.{ci}"))
            for ci, c in enumerate(clients)
        ]
        dones = [await stack.enter_async_context(c.subscribe("done.>")) for c in clients]
        for pi, p in enumerate(clients):
            for si in range(len(clients)):
                while True:
                    await p.publish(f"probe.{si}", str(pi).encode())
                    with trio.move_on_after(0.2):
                        await probes[si].receive()
                        break
        for n, (ci, subject) in enumerate(pubs):
            await clients[ci].publish(subject, str(n).encode())
        for ci, c in enumerate(clients):
            await c.publish(f"done.{ci}", b"x")
        for d in dones:
            for _ in clients:
                await d.receive()
        for i, sub in handles:
            while True:
                try:
                    m = sub.receive_nowait()
                except trio.WouldBlock:
                    break
                got[i].append((m.subject, m.payload))
    return summarise(subs, got)


def test_same_results_as_nats_server() -> None:
    nats_plain, nats_groups = run_nats()
    ours_plain, ours_groups = trio.run(run_meshgate_async)
    assert sum(len(c) for c in nats_plain.values()) > 50  # the script really delivers
    assert ours_plain == nats_plain
    assert ours_groups == nats_groups
    assert sum(nats_groups.values()) > 10
