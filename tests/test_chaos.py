"""The chaos suite: super-clusters of OS processes under kill, stop/continue, SIGTERM,
SIGHUP and link faults (stall, cut, reset) injected by a TCP proxy.

Every scenario streams numbered messages at a steady rate and counts, per subscriber,
what was lost, duplicated and reordered and the longest silence.  Subscribers whose
traffic does not cross the failure must lose nothing; those whose traffic does must
see no duplicate and no reordering and must recover within a bounded time.

``python tools/chaos_table.py`` runs this file with ``CHAOS_REPORT`` set and prints the
table of figures that ``docs/operations.md`` shows.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import meshgate
from meshgate.replicant import InMemoryReplicant, connect_replicant
from meshgate.spatial import Grid
from meshgate.testing.chaos import (
    Ledger,
    NodeProcess,
    StreamReport,
    open_fault_proxy,
    open_node_process,
)
from meshgate.topology import fetch_json

RATE = 200.0  # messages per second on every stream
#: a game edge's keepalive, scaled down so that a hung peer is found in about a second
FAST: dict[str, Any] = {
    "ping_interval": 0.5,
    "max_pings_out": 2,
    "write_deadline": 1.0,
    "reconnect_wait": 0.05,
    "lame_duck_duration": 1.0,
    "max_pending_bytes": 256 * 1024,
    "max_payload": 65536,
}
#: an unaffected stream's longest silence may not exceed this (scheduling noise only)
UNAFFECTED_GAP = 0.5
#: how long a stalled link stays stalled (a partition that heals)
STALL = 1.5
#: the bulk floods' pace: 8 messages of 32 KiB every 12.5 ms (about 20 MB/s)
FLOOD_BATCH, FLOOD_TICK, FLOOD_SIZE = 8, 0.0125, 32 * 1024


def record(scenario: str, who: str, report: StreamReport, **extra: object) -> None:
    """Append one row of figures to the file named by ``CHAOS_REPORT``, if set."""
    path = os.environ.get("CHAOS_REPORT")
    if path:
        row = {"scenario": scenario, "who": who, **extra}
        row.update(
            sent=report.sent,
            lost=report.lost,
            duplicated=report.duplicated,
            reordered=report.reordered,
            longest_gap=round(report.longest_gap, 3),
        )
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def load_slack() -> float:
    """How much longer than on an idle machine a silence may be because the node
    processes wait for a CPU: the run queue per core (1-minute load average), at least 1.
    On an idle machine (CI) the bounds are exactly the constants; on a shared machine
    with three runnable tasks per core they are three times as long."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on Linux
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


def assert_unaffected(report: StreamReport) -> None:
    assert (report.lost, report.duplicated, report.reordered) == (0, 0, 0), report
    assert report.longest_gap < UNAFFECTED_GAP * load_slack(), report


def assert_recovered(report: StreamReport, *, within: float) -> None:
    assert (report.duplicated, report.reordered) == (0, 0), report
    assert report.received > 0, report
    assert report.longest_gap < within * load_slack(), report
    assert report.lost <= RATE * report.longest_gap + 5, report  # only the silent window


@asynccontextmanager
async def process_supercluster(
    tmp: Path,
    sizes: dict[str, int],
    *,
    per_node: dict[str, dict[str, Any]] | None = None,
    **extra: Any,
) -> AsyncIterator[dict[str, NodeProcess]]:
    """Nodes ``<cluster lowercase><i>`` as processes, all on port 0: later nodes of a
    cluster name the first one as their route seed; the first node of each later
    cluster names the first cluster's first node as its gateway.  ``per_node`` adds
    fields to one node's configuration."""
    async with AsyncExitStack() as stack:
        nodes: dict[str, NodeProcess] = {}
        first = next(iter(sizes))
        for cluster, n in sizes.items():
            for i in range(n):
                name = f"{cluster.lower()}{i}"
                fields: dict[str, Any] = {
                    "name": name,
                    "cluster": cluster,
                    "listen": "127.0.0.1:0",
                    "cluster_listen": "127.0.0.1:0",
                    "gateway_listen": "127.0.0.1:0",
                    **FAST,
                    **extra,
                    **(per_node or {}).get(name, {}),
                }
                if i:
                    fields["routes"] = [nodes[f"{cluster.lower()}0"].cluster_url]
                elif cluster != first:
                    fields["gateways"] = {first: [nodes[f"{first.lower()}0"].gateway_url]}
                nodes[name] = await stack.enter_async_context(open_node_process(fields, tmp))
        yield nodes


async def until_delivered(
    pub: meshgate.Client, subs: list[meshgate.Subscription], subject: str
) -> None:
    """Probe ``subject`` until every subscription has one: interest crosses processes
    asynchronously, so delivery itself is the proof of convergence."""
    waiting = list(subs)
    while waiting:
        await pub.publish(subject, b"probe")
        with trio.move_on_after(0.2):
            for s in list(waiting):
                await s.receive()
                waiting.remove(s)


async def run_streams(
    ledger: Ledger,
    publishers: list[tuple[meshgate.Client, str]],
    followers: list[tuple[str, meshgate.Subscription, str]],
    fault: Callable[[], Any],
    *,
    before: float = 1.0,
    after: float = 2.5,
) -> None:
    """Stream for ``before`` seconds, inject ``fault`` (sync or async), stream for
    ``after`` more, then let the followers settle."""
    async with trio.open_nursery() as followers_nursery:
        for name, sub, subject in followers:
            followers_nursery.start_soon(ledger.follow, name, sub, subject)
        async with trio.open_nursery() as pubs:
            for client, subject in publishers:
                pubs.start_soon(lambda c=client, s=subject: ledger.publish(c, s, rate=RATE))
            await trio.sleep(before)  # the stream's schedule, not synchronisation
            result = fault()
            if hasattr(result, "__await__"):
                await result
            await trio.sleep(after)
            pubs.cancel_scope.cancel()
        await ledger.settle([name for name, _, _ in followers])
        followers_nursery.cancel_scope.cancel()


async def test_a_killed_node_costs_only_its_own_clients_a_window(tmp_path: Path) -> None:
    """SIGKILL b1: subscribers elsewhere lose nothing; b1's client reconnects to b0,
    resubscribes and resumes its stream with no duplicate and no reordering."""
    ledger = Ledger()
    with trio.fail_after(60):
        async with (
            process_supercluster(tmp_path, {"A": 2, "B": 2}) as n,
            meshgate.connect(n["b0"].client_url) as pub,
            meshgate.connect(n["a0"].client_url) as far,
            meshgate.connect(n["b0"].client_url) as near,
            meshgate.connect(
                [n["b1"].client_url, n["b0"].client_url], reconnect_wait=0.05
            ) as mover,
        ):
            subs = [await c.add_subscription("s.k") for c in (far, near, mover)]
            await until_delivered(pub, subs, "s.k")
            followers = [(w, s, "s.k") for w, s in zip(("far", "near", "mover"), subs, strict=True)]
            await run_streams(ledger, [(pub, "s.k")], followers, n["b1"].kill)
            assert mover.url == n["b0"].client_url
    for who in ("far", "near"):
        record("SIGKILL a node", f"subscriber on another node ({who})", ledger.report(who))
        assert_unaffected(ledger.report(who))
    record("SIGKILL a node", "its client (moves to another node)", ledger.report("mover"))
    assert_recovered(ledger.report("mover"), within=2.0)


async def test_a_hung_node_costs_only_its_own_clients_a_window(tmp_path: Path) -> None:
    """SIGSTOP b1 for 2 s, then SIGCONT: its peers find it stale and drop it; everyone
    else loses nothing and no publisher is slowed; once continued, b1 rejoins and its
    client's stream resumes."""
    ledger = Ledger()
    with trio.fail_after(60):
        async with (
            process_supercluster(tmp_path, {"A": 2, "B": 2}) as n,
            meshgate.connect(n["b0"].client_url) as pub,
            meshgate.connect(n["a0"].client_url) as far,
            meshgate.connect(n["b0"].client_url) as near,
            meshgate.connect(n["b1"].client_url) as stuck,
        ):
            subs = [await c.add_subscription("s.h") for c in (far, near, stuck)]
            await until_delivered(pub, subs, "s.h")

            async def hang() -> None:
                n["b1"].stop()
                await trio.sleep(2.0)  # how long the node stays hung
                n["b1"].resume()

            followers = [(w, s, "s.h") for w, s in zip(("far", "near", "stuck"), subs, strict=True)]
            await run_streams(ledger, [(pub, "s.h")], followers, hang, after=2.0)
    for who in ("far", "near"):
        record("SIGSTOP a node 2 s", f"subscriber on another node ({who})", ledger.report(who))
        assert_unaffected(ledger.report(who))
    record("SIGSTOP a node 2 s", "its client (stays)", ledger.report("stuck"))
    assert_recovered(ledger.report("stuck"), within=4.0)


@asynccontextmanager
async def proxied_pair(
    tmp: Path, link: str, **second_extra: Any
) -> AsyncIterator[tuple[NodeProcess, NodeProcess, meshgate.testing.chaos.FaultProxy]]:
    """Two nodes whose one ``link`` ("route" or "gateway") from the second to the first
    goes through a fault proxy.  For a gateway that is x1's outbound to cluster X;
    x0's outbound to cluster Y does not cross the proxy.  ``second_extra`` adds fields
    to the second node's configuration."""
    listener = "cluster_listen" if link == "route" else "gateway_listen"
    async with AsyncExitStack() as stack:
        base = {"listen": "127.0.0.1:0", listener: "127.0.0.1:0", **FAST}
        first = await stack.enter_async_context(
            open_node_process({"name": "x0", "cluster": "X", **base}, tmp)
        )
        target = first.cluster_url if link == "route" else first.gateway_url
        assert target
        proxy = await stack.enter_async_context(open_fault_proxy(target))
        second_fields: dict[str, Any] = (
            {"name": "x1", "cluster": "X", "routes": [proxy.url]}
            if link == "route"
            else {"name": "y0", "cluster": "Y", "gateways": {"X": [proxy.url]}}
        )
        second = await stack.enter_async_context(
            open_node_process({**second_fields, **base, **second_extra}, tmp)
        )
        yield first, second, proxy


@pytest.mark.parametrize("fault", ["stall", "cut", "reset"])
@pytest.mark.parametrize("link", ["route", "gateway"])
async def test_a_failed_link_costs_only_the_traffic_crossing_it(
    tmp_path: Path, link: str, fault: str
) -> None:
    """One link between two nodes stalls (hung peer, black-holed flow), is cut, or is
    reset.  Traffic that crosses it has a bounded gap and nothing duplicated or out of
    order; traffic that does not (local, or the other direction's gateway) loses
    nothing.  When it stalls, a bulk publisher floods it too: its pending output passes
    ``max_pending_bytes``; nobody waits for a link that takes nothing, and once it holds
    ``peer_max_pending_bytes`` it is closed as a slow consumer (and counted)."""
    from ._nats import free_port

    monitor = f"127.0.0.1:{free_port()}"
    ledger = Ledger()
    with trio.fail_after(60):
        async with (
            proxied_pair(tmp_path, link, monitor_listen=monitor) as (first, second, proxy),
            meshgate.connect(second.client_url) as pub,
            meshgate.connect(first.client_url) as across,
            meshgate.connect(second.client_url) as local_pub,
            meshgate.connect(second.client_url) as local,
            meshgate.connect(first.client_url) as back_pub,
            meshgate.connect(second.client_url) as back,
            meshgate.connect(second.client_url) as bulk_pub,
            meshgate.connect(first.client_url) as bulk,
            trio.open_nursery() as flooding,
        ):
            sub_across = await across.add_subscription("s.f")
            sub_local = await local.add_subscription("s.l")
            sub_back = await back.add_subscription("s.b")
            sub_bulk = await bulk.add_subscription("bulk")
            await until_delivered(pub, [sub_across], "s.f")
            await until_delivered(local_pub, [sub_local], "s.l")
            await until_delivered(back_pub, [sub_back], "s.b")
            await until_delivered(bulk_pub, [sub_bulk], "bulk")

            async def flood() -> None:
                payload = b"x" * FLOOD_SIZE
                start = trio.current_time()
                for tick in itertools.count():
                    await trio.sleep_until(start + tick * FLOOD_TICK)  # the flood's pace
                    for _ in range(FLOOD_BATCH):
                        await bulk_pub.publish("bulk", payload)

            async def drain_bulk() -> None:
                async for _ in sub_bulk:
                    pass

            async def partition() -> None:
                async with trio.open_nursery() as bulk_traffic:
                    bulk_traffic.start_soon(flood)
                    bulk_traffic.start_soon(drain_bulk)
                    await trio.sleep(STALL)  # how long the partition lasts
                    bulk_traffic.cancel_scope.cancel()
                proxy.heal()

            def inject() -> None:
                getattr(proxy, fault)()
                if fault == "stall":
                    flooding.start_soon(partition)

            followers = [
                ("across", sub_across, "s.f"),
                ("local", sub_local, "s.l"),
                ("back", sub_back, "s.b"),
            ]
            publishers = [(pub, "s.f"), (local_pub, "s.l"), (back_pub, "s.b")]
            await run_streams(ledger, publishers, followers, inject, after=3.5)
            varz = await fetch_json(f"http://{monitor}", "/varz")
            flooding.cancel_scope.cancel()
    if fault == "stall":  # the flood filled the link to its bound: closed, not buffered
        assert varz["stalled_links"] >= 1, varz
    scenario = f"stall a {link} {STALL:g} s" if fault == "stall" else f"{fault} a {link}"
    # a stalled route has no other path until the partition heals; a stalled gateway
    # is found stale and redialed at another of the cluster's URLs (not the proxy)
    within = STALL + 1.0 if fault == "stall" else 1.0
    record(scenario, "traffic crossing the link", ledger.report("across"))
    record(scenario, "local traffic", ledger.report("local"))
    assert_recovered(ledger.report("across"), within=within)
    assert_unaffected(ledger.report("local"))
    if link == "gateway":  # the other direction has its own outbound gateway
        record(scenario, "the other direction's gateway", ledger.report("back"))
        assert_unaffected(ledger.report("back"))
    else:  # one route carries both directions
        assert_recovered(ledger.report("back"), within=within)


GRID = Grid(100.0)
TOKEN = "chaos-replicant-token-0123456789"


async def test_a_game_session_survives_a_killed_node(tmp_path: Path) -> None:
    """A pilot sends inputs at a steady rate through g1; g1 is killed; the pilot moves
    to g0 and goes on.  The owner (a replicant on g0) applies every input exactly once,
    in order: the session key keeps the pilot's identity and retries are deduplicated."""
    count = 300
    with trio.fail_after(60):
        async with (
            process_supercluster(tmp_path, {"G": 2}, replicants=True, replicant_token=TOKEN) as n,
            connect_replicant(n["g0"].client_url, "owner", token=TOKEN) as link,
            trio.open_nursery() as nursery,
        ):
            owner = InMemoryReplicant("owner", GRID, {"ship": (5.0, 5.0)})
            nursery.start_soon(owner.run, link)
            await owner.wait_ready()
            async with meshgate.connect(
                [n["g1"].client_url, n["g0"].client_url], reconnect_wait=0.05
            ) as pilot:
                start = trio.current_time()
                for seq in range(count):
                    await trio.sleep_until(start + seq / RATE)  # the input schedule
                    if seq == count // 3:
                        n["g1"].kill()
                        killed = trio.current_time()
                    await pilot.send_input("ship", seq, b"+")
                await pilot.flush()
                assert pilot.url == n["g0"].client_url
                with trio.fail_after(10):
                    while len(owner.log.get("ship", [])) < count:
                        await pilot.flush()
                        await link.client.flush()
                done = trio.current_time()
            nursery.cancel_scope.cancel()
    applied = [seq for _, seq in owner.log["ship"]]
    assert applied == list(range(count))  # nothing lost, nothing twice, in order
    assert len({client for client, _ in owner.log["ship"]}) == 1  # one session throughout
    gap = max(0.0, done - killed - (count - count // 3) / RATE)  # beyond the schedule
    record(
        "SIGKILL a game client's node",
        "its inputs (owner on another node): delay past the schedule",
        StreamReport(
            sent=count, received=count, lost=0, duplicated=0, reordered=0, longest_gap=gap
        ),
    )


async def test_sigterm_moves_clients_away_and_sighup_costs_nothing(tmp_path: Path) -> None:
    """SIGHUP n0 mid-stream: nobody loses anything.  SIGTERM n1: its clients are moved
    to n0 over the lame-duck window and resume their streams, nothing duplicated or out
    of order; the process exits 0."""
    ledger = Ledger()
    with trio.fail_after(60):
        async with process_supercluster(tmp_path, {"N": 2}) as n, AsyncExitStack() as stack:
            pub = await stack.enter_async_context(meshgate.connect(n["n0"].client_url))
            stay = await stack.enter_async_context(meshgate.connect(n["n0"].client_url))
            movers = [
                await stack.enter_async_context(
                    meshgate.connect([n["n1"].client_url, n["n0"].client_url], reconnect_wait=0.05)
                )
                for _ in range(5)
            ]
            subs = [await c.add_subscription("s.t") for c in (stay, *movers)]
            await until_delivered(pub, subs, "s.t")
            names = ["stay", *(f"mover{i}" for i in range(len(movers)))]
            followers = [(w, s, "s.t") for w, s in zip(names, subs, strict=True)]

            async def hup_then_term() -> None:
                n["n0"].hangup()
                await trio.sleep(0.5)  # the scenario: SIGTERM half a second after SIGHUP
                n["n1"].terminate()

            await run_streams(ledger, [(pub, "s.t")], followers, hup_then_term, after=3.0)
            assert all(m.url == n["n0"].client_url for m in movers)
            with trio.fail_after(5):
                assert await n["n1"].wait() == 0
    record("SIGHUP a node", "its clients", ledger.report("stay"))
    assert_unaffected(ledger.report("stay"))
    worst = max((ledger.report(f"mover{i}") for i in range(len(movers))), key=lambda r: r.lost)
    record("SIGTERM a node (lame duck 1 s)", "its clients (moved, worst of 5)", worst)
    for i in range(len(movers)):
        assert_recovered(ledger.report(f"mover{i}"), within=1.0)


@contextlib.contextmanager
def nats_server_process(tmp: Path, name: str, config: str) -> Iterator[subprocess.Popen[bytes]]:
    """A nats-server OS process (skipped, saying why, if it cannot be had)."""
    from ._nats import nats_server_binary

    conf = tmp / f"{name}.conf"
    conf.write_text(config)
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_a_killed_backbone_server_is_replaced_by_another_of_its_cluster(
    tmp_path: Path,
) -> None:
    """Nodes on a nats-server backbone (cluster A: a1 and a2; cluster B: b1; joined by
    gateways).  Node mA knows only a1; a1 is SIGKILLed.  mA's local clients lose
    nothing; mA fails over to a2 (learned from the hub) and re-declares its interest;
    the stream to mB resumes, nothing duplicated or out of order."""
    from ._nats import free_port, wait_for_port

    ports = {s: (free_port(), free_port(), free_port(), free_port()) for s in ("a1", "a2", "b1")}

    def hub(server: str, cluster: str, peers: list[str]) -> str:
        client, route, gw, leaf = ports[server]
        others = [f"nats://127.0.0.1:{ports[p][1]}" for p in peers]
        gateway = ports["b1" if cluster == "A" else "a1"][2]
        return (
            "accounts { SYS: { users: [{user: sys, password: sys-secret}] }, "
            "APP: { users: [{user: app, password: app-secret}] } }\n"
            "system_account: SYS\nno_auth_user: app\n"
            f"server_name: {server}\nlisten: 127.0.0.1:{client}\n"
            f"cluster {{ name: {cluster}, listen: 127.0.0.1:{route}, routes: {json.dumps(others)} }}\n"
            f"gateway {{ name: {cluster}, listen: 127.0.0.1:{gw}, "
            f"gateways: [{{name: {'B' if cluster == 'A' else 'A'}, url: nats://127.0.0.1:{gateway}}}] }}\n"
            f"leafnodes {{ listen: 127.0.0.1:{leaf} }}\n"
        )

    ledger = Ledger()
    with (
        nats_server_process(tmp_path, "a1", hub("a1", "A", ["a2"])) as a1,
        nats_server_process(tmp_path, "a2", hub("a2", "A", ["a1"])) as a2,
        nats_server_process(tmp_path, "b1", hub("b1", "B", [])) as b1,
    ):
        for server, proc in (("a1", a1), ("a2", a2), ("b1", b1)):
            wait_for_port(ports[server][3], proc)

        def node(name: str, server: str) -> dict[str, Any]:
            return {
                "name": name,
                "listen": "127.0.0.1:0",
                "backbone": [f"nats://127.0.0.1:{ports[server][3]}"],
                **FAST,
            }

        with trio.fail_after(60):
            async with (
                open_node_process(node("mA", "a1"), tmp_path) as m_a,
                open_node_process(node("mB", "b1"), tmp_path) as m_b,
                meshgate.connect(m_a.client_url) as pub,
                meshgate.connect(m_a.client_url) as local,
                meshgate.connect(m_b.client_url) as far,
            ):
                subs = [await c.add_subscription("s.bb") for c in (local, far)]
                await until_delivered(pub, subs, "s.bb")
                followers = [("local", subs[0], "s.bb"), ("across", subs[1], "s.bb")]
                await run_streams(ledger, [(pub, "s.bb")], followers, a1.kill, after=3.0)
    record("SIGKILL the backbone nats-server", "the node's local traffic", ledger.report("local"))
    record(
        "SIGKILL the backbone nats-server",
        "traffic to another cluster (fails over)",
        ledger.report("across"),
    )
    assert_unaffected(ledger.report("local"))
    assert_recovered(ledger.report("across"), within=2.5)


#: how long the hung-peer scenarios keep a node stopped
HUNG = float(os.environ.get("CHAOS_HUNG", "3.0"))


@pytest.mark.parametrize("stopped", ["route peer", "gateway carrier"])
async def test_a_hung_peer_under_a_flood_costs_only_the_traffic_behind_it(
    tmp_path: Path, stopped: str
) -> None:
    """Clusters A (a0, a1), B (b0) and C (c0).  A publisher on a0 streams to a
    subscriber on every node while a bulk publisher on a0 floods a subscriber on the
    node about to hang: a1 (a route peer) or b0 (the node that carries a0's gateway to
    B).  That node is SIGSTOPped for ``HUNG`` seconds.  The link to it fills up and is
    closed as a slow consumer; no publisher is held by it meanwhile, so every
    subscriber not behind the stopped node loses nothing and sees no silence over
    0.5 s."""
    from ._nats import free_port

    victim = "a1" if stopped == "route peer" else "b0"
    monitor = f"127.0.0.1:{free_port()}"
    ledger = Ledger()
    with trio.fail_after(90):
        async with (
            process_supercluster(
                tmp_path,
                {"A": 2, "B": 1, "C": 1},
                # a0's keepalive is slowed so that what finds the stuck link is its
                # bound or deadline (the scenario counts it), not a missing PONG
                per_node={"a0": {"monitor_listen": monitor, "ping_interval": 5.0}},
            ) as n,
            AsyncExitStack() as stack,
        ):
            clients = {}
            for who in ("pub", "bulk_pub", "a0", "a1", "b0", "c0", "bulk"):
                node = (
                    n["a0"] if who in ("pub", "bulk_pub") else n[victim if who == "bulk" else who]
                )
                clients[who] = await stack.enter_async_context(meshgate.connect(node.client_url))
            subs = {w: await clients[w].add_subscription("s.i") for w in ("a0", "a1", "b0", "c0")}
            sub_bulk = await clients["bulk"].add_subscription("bulk")
            await until_delivered(clients["pub"], list(subs.values()), "s.i")
            await until_delivered(clients["bulk_pub"], [sub_bulk], "bulk")
            await until_delivered(clients["pub"], list(subs.values()), "s.i")

            async def flood() -> None:
                payload = b"x" * FLOOD_SIZE
                start = trio.current_time()
                for tick in itertools.count():
                    await trio.sleep_until(start + tick * FLOOD_TICK)  # the flood's pace
                    for _ in range(FLOOD_BATCH):
                        await clients["bulk_pub"].publish("bulk", payload)

            async def drain_bulk() -> None:
                async for _ in sub_bulk:
                    pass

            async def hang() -> None:
                flooding.start_soon(flood)
                flooding.start_soon(drain_bulk)
                await trio.sleep(0.5)  # the scenario: the flood runs, then the node hangs
                n[victim].stop()
                await trio.sleep(HUNG)  # how long it stays hung
                n[victim].resume()

            followers = [(w, s, "s.i") for w, s in subs.items()]
            async with trio.open_nursery() as flooding:
                await run_streams(ledger, [(clients["pub"], "s.i")], followers, hang, after=2.0)
                flooding.cancel_scope.cancel()
            varz = await fetch_json(f"http://{monitor}", "/varz")
    scenario = f"SIGSTOP a {stopped} {HUNG:g} s under a flood"
    for who in subs:
        if who != victim:
            record(scenario, f"subscriber on {who} (not behind it)", ledger.report(who))
    record(scenario, f"subscriber on {victim} (behind it)", ledger.report(victim))
    for who in subs:
        if who != victim:
            assert_unaffected(ledger.report(who))
    assert ledger.report(victim).received > 0
    # a0 closed its link to the stopped node as a slow consumer, and counted it
    kind = "routes" if stopped == "route peer" else "gateways"
    assert varz["slow_consumer_stats"][kind] >= 1, varz
    assert varz["stalled_links"] >= 1, varz
