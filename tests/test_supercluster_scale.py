"""The seed's largest super-cluster row in the simulator: 3 clusters x 30 nodes form from
minimal configuration with exactly the connections the formulas give, and deliver
exactly once (plain subscriptions and a queue group spread over all clusters)."""

from __future__ import annotations

from meshgate.testing import SimulatedSuperCluster


def test_three_clusters_of_thirty_nodes() -> None:
    m, n = 3, 30
    net = SimulatedSuperCluster({"A": n, "B": n, "C": n})
    net.quiesce()
    stats = [core.statistics() for core in net.nodes.values()]
    assert sum(s.routes for s in stats) // 2 == m * n * (n - 1) // 2 == 1305
    assert sum(s.outbound_gateways for s in stats) == m * n * (m - 1) == 180
    assert sum(s.inbound_gateways for s in stats) == 180
    assert all(s.routes == n - 1 and s.outbound_gateways == m - 1 for s in stats)

    # subscribers on a few nodes of every cluster, a queue group with members everywhere
    watchers = {name: net.client(name) for name in ("a7", "b0", "b29", "c15")}
    sids = {name: c.subscribe("world.>") for name, c in watchers.items()}
    workers = {name: net.client(name) for name in ("a3", "b12", "c28")}
    worker_sids = {name: c.subscribe("jobs", queue="w") for name, c in workers.items()}
    net.quiesce()
    publisher = net.client("c2")
    for i in range(20):
        publisher.publish(f"world.{i}", b"%d" % i)
        publisher.publish("jobs", b"j%d" % i)
    net.quiesce()
    for name, client in watchers.items():
        got = [payload for _, payload, _ in client.received[sids[name]]]
        assert got == [b"%d" % i for i in range(20)], name  # once each, in order
    served = sorted(
        payload for name, c in workers.items() for _, payload, _ in c.received[worker_sids[name]]
    )
    assert served == sorted(b"j%d" % i for i in range(20))  # once each across 90 nodes
    # the member in the publisher's own cluster is preferred
    assert len(workers["c28"].received[worker_sids["c28"]]) == 20
