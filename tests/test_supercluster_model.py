"""A hypothesis state machine over whole simulated super-clusters of sans-IO node cores.

Rules subscribe, unsubscribe, queue-subscribe and publish on random nodes and
accounts, deliver some in-flight bytes on a random link, drop a link and reconnect,
and run to quiescence.  The oracle, checked at every quiescence:

* no subscription ever receives a message twice, or from another account;
* a message published while the network was settled (no interest in flight and no
  link dropped before it was delivered) reached every matching plain subscription
  exactly once, and every matching queue group exactly once;
* a subscription removed before the network settled receives nothing published after;
* interest views converged: each outbound gateway forwards a probe subject exactly when
  the remote cluster has plain interest in interest-only mode, and never withholds a
  subject the remote cluster wants in any mode.
"""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from meshgate import User
from meshgate.interest import InterestMode
from meshgate.subjects import match
from meshgate.testing import SimClient, SimulatedSuperCluster

TOKENS = ("a", "b")
subjects = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map(".".join)
patterns = st.lists(st.sampled_from((*TOKENS, "*")), min_size=1, max_size=3).map(
    lambda toks: ".".join(toks)
) | st.lists(st.sampled_from((*TOKENS, "*")), min_size=0, max_size=2).map(
    lambda toks: ".".join([*toks, ">"])
)
ACCOUNTS = {"tok-account-one": "ONE", "tok-account-two": "TWO"}
USERS = tuple(User(token=t, account=a) for t, a in ACCOUNTS.items())
PROBES = ("a", "b", "a.b", "b.a", "a.a.b")


class SuperClusterModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net: SimulatedSuperCluster
        self.clients: dict[tuple[str, str], SimClient] = {}
        # sub key -> (account, pattern, queue, node); key = (node, token, sid)
        self.subs: dict[tuple[str, str, int], tuple[str, str, str | None]] = {}
        self.ever: dict[tuple[str, str, int], tuple[str, str, str | None]] = {}
        self.settled: set[tuple[str, str, int]] = set()
        self.removed_settled: set[tuple[str, str, int]] = set()
        self.removed_unsettled: set[tuple[str, str, int]] = set()
        self.pending: list[tuple[bytes, str, str, bool, frozenset[tuple[str, str, int]]]] = []
        self.ids = itertools.count()
        self.history: list[tuple[bytes, str, str, bool, frozenset[tuple[str, str, int]]]] = []

    @initialize(
        sizes=st.lists(st.integers(1, 3), min_size=2, max_size=3),
        mode=st.sampled_from(["optimistic", "interest-only"]),
        threshold=st.integers(1, 3),
    )
    def build(self, sizes: list[int], mode: str, threshold: int) -> None:
        clusters = dict(zip("ABC", sizes, strict=False))
        self.net = SimulatedSuperCluster(
            clusters, interest_mode=mode, interest_only_threshold=threshold, users=USERS
        )
        self.net.quiesce()

    def client(self, node: str, token: str) -> SimClient:
        c = self.clients.get((node, token))
        if c is None:
            c = self.clients[(node, token)] = self.net.client(node, token)
        return c

    @rule(
        data=st.data(),
        token=st.sampled_from(sorted(ACCOUNTS)),
        pattern=patterns,
        queue=st.sampled_from([None, None, "q1", "q2"]),
    )
    def subscribe(self, data: st.DataObject, token: str, pattern: str, queue: str | None) -> None:
        node = data.draw(st.sampled_from(sorted(self.net.nodes)))
        sid = self.client(node, token).subscribe(pattern, queue)
        self.subs[(node, token, sid)] = (ACCOUNTS[token], pattern, queue)
        self.ever[(node, token, sid)] = (ACCOUNTS[token], pattern, queue)

    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        if not self.subs:
            return
        key = data.draw(st.sampled_from(sorted(self.subs)))
        node, token, sid = key
        self.clients[(node, token)].unsubscribe(sid)
        del self.subs[key]
        if key in self.settled:
            self.settled.discard(key)
        self.removed_unsettled.add(key)

    @rule(
        data=st.data(),
        token=st.sampled_from(sorted(ACCOUNTS)),
        subject=subjects,
        settle_first=st.booleans(),
    )
    def publish(self, data: st.DataObject, token: str, subject: str, settle_first: bool) -> None:
        if settle_first:
            self.quiesce_and_check()
        node = data.draw(st.sampled_from(sorted(self.net.nodes)))
        payload = str(next(self.ids)).encode()
        certain = (
            not self.removed_unsettled
            and set(self.subs) == self.settled
            and not any(link.in_flight for link in self.net.open_links())
        )
        self.client(node, token).publish(subject, payload)
        self.pending.append((payload, ACCOUNTS[token], subject, certain, frozenset(self.settled)))

    @rule(data=st.data(), n=st.integers(1, 4))
    def deliver_some(self, data: st.DataObject, n: int) -> None:
        busy = [link for link in self.net.open_links() if link.in_flight]
        if not busy:
            return
        link = data.draw(st.sampled_from(busy))
        for _ in range(n):
            self.net.step(link)

    @rule(data=st.data())
    def drop_and_reconnect(self, data: st.DataObject) -> None:
        links = list(self.net.open_links())
        if not links:
            return
        link = data.draw(st.sampled_from(links))
        self.net.drop(link)
        # whatever was in flight is lost: earlier publishes are at-most-once now
        self.pending = [(p, a, s, False, subs) for p, a, s, _, subs in self.pending]
        self.settled.clear()
        self.net.heal()

    @rule()
    def quiesce_and_check(self) -> None:
        self.net.quiesce()
        received: dict[tuple[str, str, int], Counter[bytes]] = {}
        for (node, token), c in self.clients.items():
            for sid, msgs in c.received.items():
                received[(node, token, sid)] = Counter(m[1] for m in msgs)
        origin_account = {p: a for p, a, _, _, _ in self.history + self.pending}
        for key, counts in received.items():
            account = ACCOUNTS[key[1]]
            for payload, n in counts.items():
                assert n == 1, f"{key} got {payload!r} {n} times"
                assert origin_account[payload] == account, "crossed accounts"
        for payload, account, subject, certain, settled in self.pending:
            got = {k for k, c in received.items() if payload in c}
            for key in got:
                assert key not in self.removed_settled, f"{key} removed but got {payload!r}"
            if not certain:
                event("publish checked at-most-once")
                continue
            event("publish checked exactly-once")
            if got:
                event("publish delivered")
            groups: dict[str, set[tuple[str, str, int]]] = {}
            for key in settled:
                info = self.subs.get(key)
                if info is None:
                    continue  # removed before delivery: may or may not have received it
                acct, pattern, queue = info
                if acct != account or not match(pattern, subject):
                    continue
                if queue is None:
                    assert key in got, f"{key} missed {payload!r} on {subject}"
                else:
                    groups.setdefault(queue, set()).add(key)
            # a queue group is served exactly once: by any member present when the message
            # arrived (one that joined in the meantime is a legitimate choice) ...
            members_now = {key: info for key, info in self.subs.items() if info[2] is not None}
            for queue, settled_members in groups.items():
                everyone = {
                    key
                    for key, (acct, pattern, q) in members_now.items()
                    if q == queue and acct == account and match(pattern, subject)
                }
                served = [k for k in everyone | settled_members if k in got]
                # ... unless members left before it arrived (then it may be dropped)
                if not any(k[2] for k in self.removed_unsettled):
                    assert len(served) == 1, f"group {queue} served {len(served)} times"
                assert len(served) <= 1, f"group {queue} served {len(served)} times"
                if len({self.net.cluster_of(k[0]) for k in everyone}) > 1:
                    event("queue group spanning clusters checked")
        self.history += self.pending
        self.pending = []
        self.settled = set(self.subs)
        self.removed_settled |= self.removed_unsettled
        self.removed_unsettled = set()
        self.check_interest_views()

    def check_interest_views(self) -> None:
        for core in self.net.nodes.values():
            for cluster, conn in core.gateways.outbound.items():
                oi = conn.out_interest
                assert oi is not None
                for account in ACCOUNTS.values():
                    for probe in PROBES:
                        wanted = any(
                            acct == account
                            and queue is None
                            and self.net.cluster_of(node) == cluster
                            and match(pattern, probe)
                            for (node, _, _), (acct, pattern, queue) in self.subs.items()
                        )
                        fwd = oi.should_forward(account, probe)
                        event(f"outbound mode {oi.mode(account).value}")
                        if wanted:
                            assert fwd, (core.config.name, cluster, account, probe)
                        if oi.mode(account) is InterestMode.INTEREST_ONLY:
                            assert fwd == wanted, (core.config.name, cluster, account, probe)

    @invariant()
    def memory_stays_bounded(self) -> None:
        for core in self.net.nodes.values():
            for conn in core.conns.values():
                assert len(conn.out) < 1 << 20


TestSuperClusterModel = SuperClusterModel.TestCase
TestSuperClusterModel.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
